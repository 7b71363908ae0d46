// Stand-in for ATen's CUDA context in the emulated build of the torch glue (test/test_cuda_emulation.py):
// the glue asks for the current stream and checks the launch; under the emulator the kernels have already
// run, serially, when the launcher returns, so there is no stream and nothing asynchronous to check.
#pragma once

namespace at::cuda {

struct EmulatedStream {
  void* stream() const { return nullptr; }
};

inline EmulatedStream getCurrentCUDAStream() { return {}; }

}  // namespace at::cuda

#define C10_CUDA_KERNEL_LAUNCH_CHECK() ((void)0)
