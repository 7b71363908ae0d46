// Shared by CPU (.cpp) and CUDA (.cu) kernels: no torch, no CUDA headers required.
#pragma once

#if defined(__CUDACC__)
#define P6D_HD __host__ __device__ __forceinline__
#else
#define P6D_HD inline
#endif
