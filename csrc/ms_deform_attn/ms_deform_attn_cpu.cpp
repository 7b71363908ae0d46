// CPU kernels of multi-scale deformable attention (parallel over queries for the forward pass and
// over (batch, head) for the backward pass, so value gradients never race).
#include <ATen/Parallel.h>

#include "common/checks.h"
#include "ms_deform_attn/ms_deform_attn.h"
#include "ms_deform_attn/ms_deform_attn_sampling.h"

namespace p6d {

void ms_deform_attn_check(const at::Tensor& value, const at::Tensor& spatial_shapes,
                          const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                          const at::Tensor& attn_weight, int64_t im2col_step) {
  check_dim(value, 4, "value", "(N, S, M, D)");
  check_dim(spatial_shapes, 2, "spatial_shapes", "(L, 2)");
  check_dim(level_start_index, 1, "level_start_index", "(L,)");
  check_dim(sampling_loc, 6, "sampling_locations", "(N, Lq, M, L, P, 2)");
  check_dim(attn_weight, 5, "attention_weights", "(N, Lq, M, L, P)");
  check_float(value, "value");
  check_dtype(sampling_loc, value.scalar_type(), "sampling_locations");
  check_dtype(attn_weight, value.scalar_type(), "attention_weights");
  check_dtype(spatial_shapes, at::kLong, "spatial_shapes");
  check_dtype(level_start_index, at::kLong, "level_start_index");
  for (const auto* t : {&value, &spatial_shapes, &level_start_index, &sampling_loc, &attn_weight}) {
    check_same_device(value, *t, "value", "another input");
    check_contiguous(*t, "every input of ms_deform_attn");
  }
  const int64_t N = value.size(0), S = value.size(1), M = value.size(2);
  const int64_t L = spatial_shapes.size(0);
  TORCH_CHECK_VALUE(spatial_shapes.size(1) == 2, "spatial_shapes must be (L, 2), got ", spatial_shapes.sizes());
  TORCH_CHECK_VALUE(level_start_index.size(0) == L, "level_start_index has ", level_start_index.size(0),
                    " entries for ", L, " levels");
  TORCH_CHECK_VALUE(sampling_loc.size(0) == N && sampling_loc.size(2) == M && sampling_loc.size(3) == L &&
                        sampling_loc.size(5) == 2,
                    "sampling_locations ", sampling_loc.sizes(), " does not match value ", value.sizes(),
                    " and ", L, " levels");
  TORCH_CHECK_VALUE(attn_weight.sizes() == sampling_loc.sizes().slice(0, 5), "attention_weights ",
                    attn_weight.sizes(), " must be sampling_locations.shape[:5] = ",
                    sampling_loc.sizes().slice(0, 5));
  TORCH_CHECK_VALUE(im2col_step > 0, "im2col_step must be positive, got ", im2col_step);
  const auto shapes = spatial_shapes.cpu();
  const auto starts = level_start_index.cpu();
  const int64_t* hw = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t l = 0; l < L; ++l) {
    TORCH_CHECK_VALUE(hw[2 * l] > 0 && hw[2 * l + 1] > 0, "spatial_shapes level ", l, " is empty: (",
                      hw[2 * l], ", ", hw[2 * l + 1], ")");
    TORCH_CHECK_VALUE(st[l] == total, "level_start_index[", l, "] = ", st[l],
                      " but the levels before it hold ", total, " positions");
    total += hw[2 * l] * hw[2 * l + 1];
  }
  TORCH_CHECK_VALUE(total == S, "spatial_shapes sum to ", total, " positions but value has S = ", S);
}

namespace {

template <typename scalar_t>
void forward_impl(const scalar_t* value, const int64_t* shapes, const int64_t* starts, const scalar_t* loc,
                  const scalar_t* attn, int64_t N, int64_t S, int64_t M, int64_t D, int64_t L, int64_t Lq,
                  int64_t P, scalar_t* out) {
  at::parallel_for(0, N * Lq, 16, [&](int64_t begin, int64_t end) {
    for (int64_t nq = begin; nq < end; ++nq) {
      const int64_t n = nq / Lq;
      for (int64_t m = 0; m < M; ++m) {
        scalar_t* o = out + (nq * M + m) * D;
        for (int64_t d = 0; d < D; ++d) o[d] = 0;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
          const scalar_t* v = value + ((n * S + starts[l]) * M + m) * D;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t a = ((nq * M + m) * L + l) * P + p;
            BilinearCorners<scalar_t> c;
            if (!bilinear_corners(loc[2 * a], loc[2 * a + 1], H, W, c)) continue;
            for (int k = 0; k < 4; ++k) {
              if (c.idx[k] < 0) continue;
              const scalar_t wk = attn[a] * c.w[k];
              const scalar_t* vk = v + c.idx[k] * M * D;
              for (int64_t d = 0; d < D; ++d) o[d] += wk * vk[d];
            }
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_impl(const scalar_t* value, const int64_t* shapes, const int64_t* starts, const scalar_t* loc,
                   const scalar_t* attn, const scalar_t* gout, int64_t N, int64_t S, int64_t M, int64_t D,
                   int64_t L, int64_t Lq, int64_t P, scalar_t* gvalue, scalar_t* gloc, scalar_t* gattn) {
  // Each task owns one (n, m): it alone writes grad_value[n, :, m, :].
  at::parallel_for(0, N * M, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nm = begin; nm < end; ++nm) {
      const int64_t n = nm / M, m = nm % M;
      for (int64_t q = 0; q < Lq; ++q) {
        const scalar_t* go = gout + ((n * Lq + q) * M + m) * D;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
          const int64_t vbase = ((n * S + starts[l]) * M + m) * D;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t a = (((n * Lq + q) * M + m) * L + l) * P + p;
            BilinearCorners<scalar_t> c;
            if (!bilinear_corners(loc[2 * a], loc[2 * a + 1], H, W, c)) continue;
            const scalar_t w = attn[a];
            scalar_t g_attn = 0, g_x = 0, g_y = 0;
            for (int k = 0; k < 4; ++k) {
              if (c.idx[k] < 0) continue;
              const scalar_t* vk = value + vbase + c.idx[k] * M * D;
              scalar_t* gvk = gvalue + vbase + c.idx[k] * M * D;
              const scalar_t ww = w * c.w[k];
              scalar_t dot = 0;
              for (int64_t d = 0; d < D; ++d) {
                dot += go[d] * vk[d];
                gvk[d] += ww * go[d];
              }
              g_attn += c.w[k] * dot;
              g_x += c.dw_dx[k] * dot;
              g_y += c.dw_dy[k] * dot;
            }
            gattn[a] = g_attn;
            gloc[2 * a] = w * g_x * static_cast<scalar_t>(W);
            gloc[2 * a + 1] = w * g_y * static_cast<scalar_t>(H);
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight) {
  const int64_t N = value.size(0), S = value.size(1), M = value.size(2), D = value.size(3);
  const int64_t Lq = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  auto out = at::empty({N, Lq, M * D}, value.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    forward_impl<scalar_t>(value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
                           level_start_index.data_ptr<int64_t>(), sampling_loc.data_ptr<scalar_t>(),
                           attn_weight.data_ptr<scalar_t>(), N, S, M, D, L, Lq, P, out.data_ptr<scalar_t>());
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_loc,
                                                    const at::Tensor& attn_weight,
                                                    const at::Tensor& grad_output) {
  const int64_t N = value.size(0), S = value.size(1), M = value.size(2), D = value.size(3);
  const int64_t Lq = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  auto gvalue = at::zeros_like(value);
  auto gloc = at::zeros_like(sampling_loc);
  auto gattn = at::zeros_like(attn_weight);
  if (sampling_loc.numel() == 0 || value.numel() == 0) return {gvalue, gloc, gattn};
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    backward_impl<scalar_t>(value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
                            level_start_index.data_ptr<int64_t>(), sampling_loc.data_ptr<scalar_t>(),
                            attn_weight.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(), N, S, M, D, L,
                            Lq, P, gvalue.data_ptr<scalar_t>(), gloc.data_ptr<scalar_t>(),
                            gattn.data_ptr<scalar_t>());
  });
  return {gvalue, gloc, gattn};
}

}  // namespace p6d
