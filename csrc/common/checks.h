// Boundary checks for the torch glue: user input raises ValueError with a clear message.
#pragma once
#include <torch/extension.h>

#include <string>

namespace p6d {

inline void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                    " must be float32 or float64, got ", t.scalar_type());
}

inline void check_dtype(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
}

inline void check_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous (call .contiguous())");
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name, const char* shape) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must have shape ", shape, ", got ", t.sizes());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* na, const char* nb) {
  TORCH_CHECK_VALUE(a.device() == b.device(), na, " is on ", a.device(), " but ", nb, " is on ", b.device());
}

inline void check_finite(const at::Tensor& t, const char* name) {
  if (t.numel() == 0) return;
  TORCH_CHECK_VALUE(at::isfinite(t).all().item<bool>(), name, " contains NaN or Inf");
}

}  // namespace p6d
