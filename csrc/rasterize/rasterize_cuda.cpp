// Torch glue of the CUDA rasteriser: device guard, current stream, buffers, dtype dispatch.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "rasterize/rasterize.h"
#include "rasterize/rasterize_kernels.h"

namespace p6d {

std::vector<at::Tensor> rasterize_cuda(const at::Tensor& verts, const at::Tensor& faces,
                                       const at::Tensor& face_offsets, const at::Tensor& K, int64_t height,
                                       int64_t width, double znear, bool cull_backfaces) {
  const c10::cuda::CUDAGuard guard(verts.device());
  const int64_t B = K.size(0), F = faces.size(0);
  auto face_id = at::empty({B, height, width}, faces.options());
  auto depth = at::empty({B, height, width}, verts.options());
  if (B == 0) return {face_id, depth};
  // face -> image index, from the offsets.
  const auto counts = face_offsets.slice(0, 1) - face_offsets.slice(0, 0, B);
  // (self, repeats, dim, output_size): F is the output size, not the dim (passing it third was the bug the
  // first real-GPU run found; test_cuda_emulation's glue tests now run this file on the CPU)
  const auto face_image = at::repeat_interleave(at::arange(B, face_offsets.options()), counts, /*dim=*/0,
                                                /*output_size=*/F);
  auto keys = at::full({B, height, width}, -1, faces.options());  // all bits set = empty
  void* stream = at::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "rasterize_cuda", [&] {
    rasterize_cuda_launch<scalar_t>(verts.data_ptr<scalar_t>(), faces.data_ptr<int64_t>(),
                                    face_image.data_ptr<int64_t>(), K.data_ptr<scalar_t>(), F, B, height, width,
                                    static_cast<scalar_t>(znear), cull_backfaces,
                                    reinterpret_cast<unsigned long long*>(keys.data_ptr<int64_t>()),
                                    face_id.data_ptr<int64_t>(), depth.data_ptr<scalar_t>(), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {face_id, depth};
}

}  // namespace p6d
