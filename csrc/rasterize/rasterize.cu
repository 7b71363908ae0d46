// CUDA rasteriser: one thread per face writes packed (depth, face) keys with atomicMin; a second pass
// turns keys into face ids and recomputes depth in full precision.
#include <cuda_runtime.h>

#include "rasterize/rasterize_common.h"
#include "rasterize/rasterize_kernels.h"

namespace p6d {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void zbuffer_kernel(const T* __restrict__ verts, const int64_t* __restrict__ faces,
                               const int64_t* __restrict__ face_image, const T* __restrict__ K, int64_t F,
                               int64_t H, int64_t W, T znear, bool cull, unsigned long long* keys) {
  for (int64_t f = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; f < F;
       f += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = face_image[f];
    FaceSetup<T> s;
    if (!setup_face(verts, faces + 3 * f, K + 9 * b, H, W, znear, cull, s)) continue;
    unsigned long long* img = keys + b * H * W;
    for (int64_t v = s.ymin; v <= s.ymax; ++v) {
      for (int64_t u = s.xmin; u <= s.xmax; ++u) {
        T z;
        if (!face_depth_at(s, static_cast<T>(u), static_cast<T>(v), z)) continue;
        atomicMin(img + v * W + u, static_cast<unsigned long long>(zbuffer_key(z, f)));
      }
    }
  }
}

template <typename T>
__global__ void resolve_kernel(const T* __restrict__ verts, const int64_t* __restrict__ faces,
                               const int64_t* __restrict__ face_image, const T* __restrict__ K,
                               const unsigned long long* __restrict__ keys, int64_t B, int64_t H, int64_t W,
                               T znear, bool cull, int64_t* face_id, T* depth) {
  const int64_t total = B * H * W;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const unsigned long long key = keys[i];
    if (key == kEmptyKey) {
      face_id[i] = -1;
      depth[i] = 0;
      continue;
    }
    const int64_t f = static_cast<int64_t>(key & 0xffffffffull);
    const int64_t u = i % W, v = (i / W) % H;
    FaceSetup<T> s;
    T z = 0;
    setup_face(verts, faces + 3 * f, K + 9 * face_image[f], H, W, znear, cull, s);
    face_depth_at(s, static_cast<T>(u), static_cast<T>(v), z);
    face_id[i] = f;
    depth[i] = z;
  }
}

inline int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 * 32 ? b : 65535 * 32);
}

}  // namespace

template <typename T>
void rasterize_cuda_launch(const T* verts, const int64_t* faces, const int64_t* face_image, const T* K,
                           int64_t F, int64_t B, int64_t H, int64_t W, T znear, bool cull_backfaces,
                           unsigned long long* keys, int64_t* face_id, T* depth, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (F > 0)
    zbuffer_kernel<T><<<blocks_for(F), kThreads, 0, s>>>(verts, faces, face_image, K, F, H, W, znear,
                                                         cull_backfaces, keys);
  const int64_t total = B * H * W;
  if (total > 0)
    resolve_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(verts, faces, face_image, K, keys, B, H, W, znear,
                                                             cull_backfaces, face_id, depth);
}

template void rasterize_cuda_launch<float>(const float*, const int64_t*, const int64_t*, const float*, int64_t,
                                           int64_t, int64_t, int64_t, float, bool, unsigned long long*,
                                           int64_t*, float*, void*);
template void rasterize_cuda_launch<double>(const double*, const int64_t*, const int64_t*, const double*,
                                            int64_t, int64_t, int64_t, int64_t, double, bool,
                                            unsigned long long*, int64_t*, double*, void*);

}  // namespace p6d
