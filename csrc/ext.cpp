// The one extension module ros2_pose6d._C: every op's dispatcher, bound once.
#include <torch/extension.h>

#include "ms_deform_attn/ms_deform_attn.h"
#include "rasterize/rasterize.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ros2_pose6d kernels: mesh rasteriser and multi-scale deformable attention (CPU and CUDA)";
  m.def("rasterize", &p6d::rasterize, "Hard z-buffer rasteriser: face id and depth per pixel",
        py::arg("verts"), py::arg("faces"), py::arg("face_offsets"), py::arg("K"), py::arg("height"),
        py::arg("width"), py::arg("znear"), py::arg("cull_backfaces"));
  m.def("ms_deform_attn_forward", &p6d::ms_deform_attn_forward, "Multi-scale deformable attention forward",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"),
        py::arg("sampling_locations"), py::arg("attention_weights"), py::arg("im2col_step"));
  m.def("ms_deform_attn_backward", &p6d::ms_deform_attn_backward, "Multi-scale deformable attention backward",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"),
        py::arg("sampling_locations"), py::arg("attention_weights"), py::arg("grad_output"),
        py::arg("im2col_step"));
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
