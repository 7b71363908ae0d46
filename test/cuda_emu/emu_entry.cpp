// C entry points over the CUDA launchers (compiled against cuda_emu.h), for ctypes.
#include <cstdint>

#include "cuda_emu.h"
#include "ms_deform_attn/ms_deform_attn_kernels.h"
#include "rasterize/rasterize_kernels.h"

namespace {

template <typename T>
void rasterize(const T* verts, const int64_t* faces, const int64_t* face_image, const T* K, int64_t F, int64_t B,
               int64_t H, int64_t W, T znear, int cull, unsigned long long* keys, int64_t* face_id, T* depth,
               unsigned int seed) {
  p6d_emu::order_seed = seed;
  p6d::rasterize_cuda_launch<T>(verts, faces, face_image, K, F, B, H, W, znear, cull != 0, keys, face_id, depth,
                                nullptr);
}

}  // namespace

extern "C" {

int64_t emu_launches() { return p6d_emu::launches; }

void emu_rasterize_f32(const float* verts, const int64_t* faces, const int64_t* face_image, const float* K,
                       int64_t F, int64_t B, int64_t H, int64_t W, double znear, int cull,
                       unsigned long long* keys, int64_t* face_id, float* depth, unsigned int seed) {
  rasterize<float>(verts, faces, face_image, K, F, B, H, W, static_cast<float>(znear), cull, keys, face_id, depth,
                   seed);
}

void emu_rasterize_f64(const double* verts, const int64_t* faces, const int64_t* face_image, const double* K,
                       int64_t F, int64_t B, int64_t H, int64_t W, double znear, int cull,
                       unsigned long long* keys, int64_t* face_id, double* depth, unsigned int seed) {
  rasterize<double>(verts, faces, face_image, K, F, B, H, W, znear, cull, keys, face_id, depth, seed);
}

#define P6D_EMU_MSDA(T, SUFFIX)                                                                              \
  void emu_msda_forward_##SUFFIX(const T* value, const int64_t* shapes, const int64_t* starts, const T* loc,  \
                                 const T* attn, int64_t N, int64_t S, int64_t M, int64_t D, int64_t L,        \
                                 int64_t Lq, int64_t P, T* out, unsigned int seed) {                         \
    p6d_emu::order_seed = seed;                                                                              \
    p6d::ms_deform_attn_forward_cuda_launch<T>(value, shapes, starts, loc, attn, N, S, M, D, L, Lq, P, out,  \
                                               nullptr);                                                     \
  }                                                                                                          \
  void emu_msda_backward_##SUFFIX(const T* value, const int64_t* shapes, const int64_t* starts, const T* loc, \
                                  const T* attn, const T* gout, int64_t N, int64_t S, int64_t M, int64_t D,   \
                                  int64_t L, int64_t Lq, int64_t P, T* gvalue, T* gloc, T* gattn,             \
                                  unsigned int seed) {                                                       \
    p6d_emu::order_seed = seed;                                                                              \
    p6d::ms_deform_attn_backward_cuda_launch<T>(value, shapes, starts, loc, attn, gout, N, S, M, D, L, Lq, P, \
                                                gvalue, gloc, gattn, nullptr);                               \
  }

P6D_EMU_MSDA(float, f32)
P6D_EMU_MSDA(double, f64)
#undef P6D_EMU_MSDA

}  // extern "C"
