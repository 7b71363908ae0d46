// Torch glue of the CUDA kernels: device guard, current stream, allocation, dtype dispatch.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "ms_deform_attn/ms_deform_attn.h"
#include "ms_deform_attn/ms_deform_attn_kernels.h"

namespace p6d {

at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight) {
  const c10::cuda::CUDAGuard guard(value.device());
  const int64_t N = value.size(0), S = value.size(1), M = value.size(2), D = value.size(3);
  const int64_t Lq = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  auto out = at::empty({N, Lq, M * D}, value.options());
  if (out.numel() == 0) return out;
  void* stream = at::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    ms_deform_attn_forward_cuda_launch<scalar_t>(
        value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
        sampling_loc.data_ptr<scalar_t>(), attn_weight.data_ptr<scalar_t>(), N, S, M, D, L, Lq, P,
        out.data_ptr<scalar_t>(), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> ms_deform_attn_backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_loc,
                                                     const at::Tensor& attn_weight,
                                                     const at::Tensor& grad_output) {
  const c10::cuda::CUDAGuard guard(value.device());
  const int64_t N = value.size(0), S = value.size(1), M = value.size(2), D = value.size(3);
  const int64_t Lq = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  auto gvalue = at::zeros_like(value);
  auto gloc = at::zeros_like(sampling_loc);
  auto gattn = at::zeros_like(attn_weight);
  if (sampling_loc.numel() == 0 || value.numel() == 0) return {gvalue, gloc, gattn};
  void* stream = at::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
    ms_deform_attn_backward_cuda_launch<scalar_t>(
        value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
        sampling_loc.data_ptr<scalar_t>(), attn_weight.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
        N, S, M, D, L, Lq, P, gvalue.data_ptr<scalar_t>(), gloc.data_ptr<scalar_t>(),
        gattn.data_ptr<scalar_t>(), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {gvalue, gloc, gattn};
}

}  // namespace p6d
