// Plain launchers of the CUDA rasteriser (raw pointers, sizes, a stream as void*): no torch headers.
#pragma once
#include <cstdint>

namespace p6d {

// verts (V, 3) camera frame; faces (F, 3); face_image (F) image index of each face; K (B, 3, 3);
// keys (B, H, W) filled with ~0 by the caller. Writes face_id (B, H, W) (-1 background) and
// depth (B, H, W) (0 background).
template <typename T>
void rasterize_cuda_launch(const T* verts, const int64_t* faces, const int64_t* face_image, const T* K,
                           int64_t F, int64_t B, int64_t H, int64_t W, T znear, bool cull_backfaces,
                           unsigned long long* keys, int64_t* face_id, T* depth, void* stream);

}  // namespace p6d
