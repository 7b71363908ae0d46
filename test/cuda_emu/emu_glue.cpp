// Python entry of the emulated CUDA build: the project's real torch glue (csrc/*/*_cuda.cpp: buffers,
// index tensors, dtype dispatch, launcher arguments) over the emulated kernels, called with CPU tensors.
// The glue is the part the kernel-only emulation (emu_entry.cpp) cannot see; the first real-GPU run
// found a bug there.
#include <torch/extension.h>

#include "ms_deform_attn/ms_deform_attn.h"
#include "rasterize/rasterize.h"
// after the torch headers: it defines CUDA keywords away
#include "cuda_emu.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_order_seed", [](unsigned int seed) { p6d_emu::order_seed = seed; });
  m.def("launches", [] { return p6d_emu::launches; });
  m.def("rasterize", &p6d::rasterize_cuda);
  m.def("ms_deform_attn_forward", &p6d::ms_deform_attn_forward_cuda);
  m.def("ms_deform_attn_backward", &p6d::ms_deform_attn_backward_cuda);
}
