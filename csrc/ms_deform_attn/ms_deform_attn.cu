// CUDA kernels of multi-scale deformable attention; semantics shared with the CPU twin through
// ms_deform_attn_sampling.h.
#include <cuda_runtime.h>

#include "ms_deform_attn/ms_deform_attn_kernels.h"
#include "ms_deform_attn/ms_deform_attn_sampling.h"

namespace p6d {
namespace {

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

// One thread per (n, q, m, d): reads along d are coalesced.
template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts, const scalar_t* __restrict__ loc,
                               const scalar_t* __restrict__ attn, int64_t N, int64_t S, int64_t M,
                               int64_t D, int64_t L, int64_t Lq, int64_t P, scalar_t* __restrict__ out) {
  const int64_t total = N * Lq * M * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = i % D;
    const int64_t m = (i / D) % M;
    const int64_t q = (i / (D * M)) % Lq;
    const int64_t n = i / (D * M * Lq);
    const int64_t base_qm = (n * Lq + q) * M + m;  // index of (n, q, m) in the attention layout
    scalar_t acc = 0;
    for (int64_t l = 0; l < L; ++l) {
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const scalar_t* v = value + ((n * S + starts[l]) * M + m) * D + d;
      for (int64_t p = 0; p < P; ++p) {
        const int64_t a = (base_qm * L + l) * P + p;
        BilinearCorners<scalar_t> c;
        if (!bilinear_corners(loc[2 * a], loc[2 * a + 1], H, W, c)) continue;
        scalar_t s = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k)
          if (c.idx[k] >= 0) s += c.w[k] * v[c.idx[k] * M * D];
        acc += attn[a] * s;
      }
    }
    out[i] = acc;
  }
}

// One thread per (n, q, m, l, p): sums over d locally, so no reduction is needed for the gradients
// of the location and weight; value gradients are scattered with atomicAdd.
template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts, const scalar_t* __restrict__ loc,
                                const scalar_t* __restrict__ attn, const scalar_t* __restrict__ gout,
                                int64_t N, int64_t S, int64_t M, int64_t D, int64_t L, int64_t Lq, int64_t P,
                                scalar_t* __restrict__ gvalue, scalar_t* __restrict__ gloc,
                                scalar_t* __restrict__ gattn) {
  const int64_t total = N * Lq * M * L * P;
  for (int64_t a = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; a < total;
       a += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t l = (a / P) % L;
    const int64_t m = (a / (P * L)) % M;
    const int64_t q = (a / (P * L * M)) % Lq;
    const int64_t n = a / (P * L * M * Lq);
    const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
    BilinearCorners<scalar_t> c;
    if (!bilinear_corners(loc[2 * a], loc[2 * a + 1], H, W, c)) continue;
    const int64_t vbase = ((n * S + starts[l]) * M + m) * D;
    const scalar_t* go = gout + ((n * Lq + q) * M + m) * D;
    const scalar_t w = attn[a];
    scalar_t g_attn = 0, g_x = 0, g_y = 0;
    for (int64_t d = 0; d < D; ++d) {
      const scalar_t g = go[d];
      scalar_t s = 0, sx = 0, sy = 0;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (c.idx[k] < 0) continue;
        const int64_t vi = vbase + c.idx[k] * M * D + d;
        const scalar_t v = value[vi];
        s += c.w[k] * v;
        sx += c.dw_dx[k] * v;
        sy += c.dw_dy[k] * v;
        atomicAdd(gvalue + vi, w * c.w[k] * g);
      }
      g_attn += g * s;
      g_x += g * sx;
      g_y += g * sy;
    }
    gattn[a] = g_attn;
    gloc[2 * a] = w * g_x * static_cast<scalar_t>(W);
    gloc[2 * a + 1] = w * g_y * static_cast<scalar_t>(H);
  }
}

}  // namespace

template <typename scalar_t>
void ms_deform_attn_forward_cuda_launch(const scalar_t* value, const int64_t* spatial_shapes,
                                        const int64_t* level_start_index, const scalar_t* sampling_loc,
                                        const scalar_t* attn_weight, int64_t N, int64_t S, int64_t M,
                                        int64_t D, int64_t L, int64_t Lq, int64_t P, scalar_t* output,
                                        void* stream) {
  const int64_t total = N * Lq * M * D;
  if (total == 0) return;
  forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      value, spatial_shapes, level_start_index, sampling_loc, attn_weight, N, S, M, D, L, Lq, P, output);
}

template <typename scalar_t>
void ms_deform_attn_backward_cuda_launch(const scalar_t* value, const int64_t* spatial_shapes,
                                         const int64_t* level_start_index, const scalar_t* sampling_loc,
                                         const scalar_t* attn_weight, const scalar_t* grad_output,
                                         int64_t N, int64_t S, int64_t M, int64_t D, int64_t L, int64_t Lq,
                                         int64_t P, scalar_t* grad_value, scalar_t* grad_loc,
                                         scalar_t* grad_attn, void* stream) {
  const int64_t total = N * Lq * M * L * P;
  if (total == 0) return;
  backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output, N, S, M, D, L, Lq, P,
      grad_value, grad_loc, grad_attn);
}

#define P6D_INSTANTIATE(T)                                                                              \
  template void ms_deform_attn_forward_cuda_launch<T>(const T*, const int64_t*, const int64_t*, const T*, \
                                                      const T*, int64_t, int64_t, int64_t, int64_t,       \
                                                      int64_t, int64_t, int64_t, T*, void*);              \
  template void ms_deform_attn_backward_cuda_launch<T>(const T*, const int64_t*, const int64_t*,          \
                                                       const T*, const T*, const T*, int64_t, int64_t,    \
                                                       int64_t, int64_t, int64_t, int64_t, int64_t, T*,   \
                                                       T*, T*, void*);
P6D_INSTANTIATE(float)
P6D_INSTANTIATE(double)
#undef P6D_INSTANTIATE

}  // namespace p6d
