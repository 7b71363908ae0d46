// Serial CPU emulation of the CUDA runtime subset our kernels use, so that the real kernel bodies of
// csrc/*/*.cu run and are compared with the CPU kernels on a machine without a GPU. It stands in for
// <cuda_runtime.h>: every launch runs each (block, thread) of the grid once, in an order shuffled by
// `p6d_emu::order_seed`, so a kernel whose result depends on thread order shows up as a mismatch
// between two seeds. What it cannot check: real concurrency (our kernels use only atomics, no shared
// memory or barriers, which a serial schedule models exactly), launch limits, and device intrinsics.
#pragma once
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

using cudaStream_t = void*;

struct p6d_emu_uint3 {
  unsigned int x = 0, y = 0, z = 0;
};

inline p6d_emu_uint3 threadIdx, blockIdx, blockDim, gridDim;

namespace p6d_emu {

inline unsigned int order_seed = 0;
inline int64_t launches = 0;

template <typename Kernel, typename... Args>
void launch(int64_t grid, int64_t block, Kernel kernel, Args... args) {
  ++launches;
  gridDim = {static_cast<unsigned int>(grid), 1, 1};
  blockDim = {static_cast<unsigned int>(block), 1, 1};
  std::vector<int64_t> order(static_cast<size_t>(grid * block));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(order_seed);
  std::shuffle(order.begin(), order.end(), rng);
  for (const int64_t i : order) {
    blockIdx = {static_cast<unsigned int>(i / block), 0, 0};
    threadIdx = {static_cast<unsigned int>(i % block), 0, 0};
    kernel(args...);
  }
}

}  // namespace p6d_emu

inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
  const unsigned long long old = *address;
  if (value < old) *address = value;
  return old;
}

template <typename T>
inline T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
