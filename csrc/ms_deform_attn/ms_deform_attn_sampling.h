// Bilinear sampling of multi-scale deformable attention, shared by the CPU and CUDA kernels.
// Conventions (Deformable-DETR): a sampling location (x, y) in [0, 1] maps to the pixel coordinate
// (x * W - 0.5, y * H - 0.5) with pixel centres at integers; corners outside the map read zero.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace p6d {

// Corner indices and weights of one bilinear sample; index -1 means outside (contributes zero).
template <typename scalar_t>
struct BilinearCorners {
  int64_t idx[4];  // flat index h * W + w within the level, or -1
  scalar_t w[4];   // bilinear weights
  scalar_t dw_dx[4];  // d weight / d x_pixel
  scalar_t dw_dy[4];  // d weight / d y_pixel
};

template <typename scalar_t>
P6D_HD bool bilinear_corners(scalar_t x, scalar_t y, int64_t H, int64_t W, BilinearCorners<scalar_t>& c) {
  const scalar_t h_im = y * static_cast<scalar_t>(H) - static_cast<scalar_t>(0.5);
  const scalar_t w_im = x * static_cast<scalar_t>(W) - static_cast<scalar_t>(0.5);
  if (!(h_im > -1 && w_im > -1 && h_im < H && w_im < W)) return false;
  // floor without <cmath> on device: casts truncate toward zero, correct for values > -1.
  const int64_t h_low = h_im >= 0 ? static_cast<int64_t>(h_im) : -1;
  const int64_t w_low = w_im >= 0 ? static_cast<int64_t>(w_im) : -1;
  const int64_t h_high = h_low + 1, w_high = w_low + 1;
  const scalar_t lh = h_im - h_low, lw = w_im - w_low;
  const scalar_t hh = 1 - lh, hw = 1 - lw;
  const bool in_hl = h_low >= 0, in_hh = h_high <= H - 1, in_wl = w_low >= 0, in_wh = w_high <= W - 1;
  c.idx[0] = (in_hl && in_wl) ? h_low * W + w_low : -1;
  c.idx[1] = (in_hl && in_wh) ? h_low * W + w_high : -1;
  c.idx[2] = (in_hh && in_wl) ? h_high * W + w_low : -1;
  c.idx[3] = (in_hh && in_wh) ? h_high * W + w_high : -1;
  c.w[0] = hh * hw; c.w[1] = hh * lw; c.w[2] = lh * hw; c.w[3] = lh * lw;
  c.dw_dx[0] = -hh; c.dw_dx[1] = hh; c.dw_dx[2] = -lh; c.dw_dx[3] = lh;
  c.dw_dy[0] = -hw; c.dw_dy[1] = -lw; c.dw_dy[2] = hw; c.dw_dy[3] = lw;
  return true;
}

}  // namespace p6d
