// Hard z-buffer mesh rasteriser: CPU and CUDA variants and the validating dispatcher.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace p6d {

// verts (V, 3) camera frame [m]; faces (F, 3) int64 into verts; face_offsets (B + 1) int64, the faces
// of image b are faces[face_offsets[b]:face_offsets[b + 1]]; K (B, 3, 3). Returns
// {face_id (B, H, W) int64, -1 background; depth (B, H, W), 0 background}.
std::vector<at::Tensor> rasterize_cpu(const at::Tensor& verts, const at::Tensor& faces,
                                      const at::Tensor& face_offsets, const at::Tensor& K, int64_t height,
                                      int64_t width, double znear, bool cull_backfaces);
#ifdef WITH_CUDA
std::vector<at::Tensor> rasterize_cuda(const at::Tensor& verts, const at::Tensor& faces,
                                       const at::Tensor& face_offsets, const at::Tensor& K, int64_t height,
                                       int64_t width, double znear, bool cull_backfaces);
#endif

void rasterize_check(const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& face_offsets,
                     const at::Tensor& K, int64_t height, int64_t width, double znear);

inline std::vector<at::Tensor> rasterize(const at::Tensor& verts, const at::Tensor& faces,
                                         const at::Tensor& face_offsets, const at::Tensor& K, int64_t height,
                                         int64_t width, double znear, bool cull_backfaces) {
  rasterize_check(verts, faces, face_offsets, K, height, width, znear);
  if (verts.is_cuda()) {
#ifdef WITH_CUDA
    return rasterize_cuda(verts, faces, face_offsets, K, height, width, znear, cull_backfaces);
#else
    TORCH_CHECK(false, "ros2_pose6d._C was built without CUDA; rebuild with nvcc and a CUDA torch");
#endif
  }
  return rasterize_cpu(verts, faces, face_offsets, K, height, width, znear, cull_backfaces);
}

}  // namespace p6d
