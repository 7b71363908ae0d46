// Multi-scale deformable attention: CPU and CUDA variants and the dispatcher that validates the
// inputs at the boundary and routes by device.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace p6d {

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight);
std::vector<at::Tensor> ms_deform_attn_backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_loc,
                                                    const at::Tensor& attn_weight,
                                                    const at::Tensor& grad_output);
#ifdef WITH_CUDA
at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight);
std::vector<at::Tensor> ms_deform_attn_backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_loc,
                                                     const at::Tensor& attn_weight,
                                                     const at::Tensor& grad_output);
#endif

// Raises ValueError on any shape, dtype, device or contiguity problem.
void ms_deform_attn_check(const at::Tensor& value, const at::Tensor& spatial_shapes,
                          const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                          const at::Tensor& attn_weight, int64_t im2col_step);

// value (N, S, M, D), spatial_shapes (L, 2) int64 (H, W), level_start_index (L) int64,
// sampling_loc (N, Lq, M, L, P, 2) normalised to [0, 1], attn_weight (N, Lq, M, L, P) -> (N, Lq, M * D).
inline at::Tensor ms_deform_attn_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                         const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                         const at::Tensor& attn_weight, int64_t im2col_step) {
  ms_deform_attn_check(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_forward_cuda(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
#else
    TORCH_CHECK(false, "ros2_pose6d._C was built without CUDA; rebuild with nvcc and a CUDA torch");
#endif
  }
  return ms_deform_attn_forward_cpu(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
}

// Returns {grad_value, grad_sampling_loc, grad_attn_weight}.
inline std::vector<at::Tensor> ms_deform_attn_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                       const at::Tensor& level_start_index,
                                                       const at::Tensor& sampling_loc,
                                                       const at::Tensor& attn_weight,
                                                       const at::Tensor& grad_output, int64_t im2col_step) {
  ms_deform_attn_check(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
  const auto g = grad_output.contiguous();
  TORCH_CHECK_VALUE(g.numel() == sampling_loc.size(0) * sampling_loc.size(1) * value.size(2) * value.size(3),
                    "grad_output has ", g.numel(), " elements, expected N * Lq * M * D");
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_backward_cuda(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, g);
#else
    TORCH_CHECK(false, "ros2_pose6d._C was built without CUDA; rebuild with nvcc and a CUDA torch");
#endif
  }
  return ms_deform_attn_backward_cpu(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, g);
}

}  // namespace p6d
