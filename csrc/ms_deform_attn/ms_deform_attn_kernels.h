// Plain launchers of the CUDA kernels (raw pointers, sizes, a stream as void*): no torch headers,
// so `nvcc -c ms_deform_attn.cu` checks them on any machine.
#pragma once
#include <cstdint>

namespace p6d {

// value (N, S, M, D); spatial_shapes (L, 2) as (H, W); level_start_index (L);
// sampling_loc (N, Lq, M, L, P, 2); attn_weight (N, Lq, M, L, P); output (N, Lq, M, D).
template <typename scalar_t>
void ms_deform_attn_forward_cuda_launch(const scalar_t* value, const int64_t* spatial_shapes,
                                        const int64_t* level_start_index, const scalar_t* sampling_loc,
                                        const scalar_t* attn_weight, int64_t N, int64_t S, int64_t M,
                                        int64_t D, int64_t L, int64_t Lq, int64_t P, scalar_t* output,
                                        void* stream);

// Gradients accumulate into zero-initialised grad_value / grad_loc / grad_attn of the input shapes.
template <typename scalar_t>
void ms_deform_attn_backward_cuda_launch(const scalar_t* value, const int64_t* spatial_shapes,
                                         const int64_t* level_start_index, const scalar_t* sampling_loc,
                                         const scalar_t* attn_weight, const scalar_t* grad_output,
                                         int64_t N, int64_t S, int64_t M, int64_t D, int64_t L, int64_t Lq,
                                         int64_t P, scalar_t* grad_value, scalar_t* grad_loc,
                                         scalar_t* grad_attn, void* stream);

}  // namespace p6d
