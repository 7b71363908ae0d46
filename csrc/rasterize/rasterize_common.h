// Triangle setup and per-pixel coverage shared by the CPU and CUDA rasterisers.
//
// Semantics (documented in ros2_pose6d/render/rasterize.py too):
// - Pixel centres at integer coordinates (OpenCV/BOP convention): pixel (u, v) samples x = u, y = v.
// - A vertex (X, Y, Z) in the camera frame projects to x = (K00 X + K01 Y + K02 Z) / Z,
//   y = (K11 Y + K12 Z) / Z; K's last row must be (0, 0, 1).
// - Near plane: a face with any vertex at Z < znear is dropped whole (no clipping).
// - Back faces: with faces wound counter-clockwise seen from outside, a face whose outward normal
//   points away from the camera has a positive screen-space signed area and is dropped when
//   cull_backfaces is set; degenerate (zero-area) faces are always dropped.
// - Coverage: a pixel centre on an edge belongs to every face sharing that edge; the z-test keeps
//   the smallest float32 depth and breaks ties by the lowest face index.
// - Depth is perspective-correct: 1/z interpolated with screen-space barycentrics.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/host_device.h"

namespace p6d {

template <typename T>
struct FaceSetup {
  T x[3], y[3], inv_z[3];
  T area;
  int64_t xmin, xmax, ymin, ymax;  // inclusive pixel bounds, clipped to the image
};

// Returns false when the face is culled (near plane, back face, degenerate, outside the image).
template <typename T>
P6D_HD bool setup_face(const T* verts, const int64_t* face, const T* K, int64_t H, int64_t W, T znear,
                       bool cull_backfaces, FaceSetup<T>& s) {
  T minx = 0, maxx = 0, miny = 0, maxy = 0;
  for (int i = 0; i < 3; ++i) {
    const T* v = verts + 3 * face[i];
    const T z = v[2];
    if (!(z >= znear)) return false;
    s.x[i] = (K[0] * v[0] + K[1] * v[1] + K[2] * z) / z;
    s.y[i] = (K[4] * v[1] + K[5] * z) / z;
    s.inv_z[i] = 1 / z;
    if (i == 0) {
      minx = maxx = s.x[0];
      miny = maxy = s.y[0];
    } else {
      minx = s.x[i] < minx ? s.x[i] : minx;
      maxx = s.x[i] > maxx ? s.x[i] : maxx;
      miny = s.y[i] < miny ? s.y[i] : miny;
      maxy = s.y[i] > maxy ? s.y[i] : maxy;
    }
  }
  s.area = (s.x[1] - s.x[0]) * (s.y[2] - s.y[0]) - (s.x[2] - s.x[0]) * (s.y[1] - s.y[0]);
  if (s.area == 0 || (cull_backfaces && s.area > 0)) return false;
  if (maxx < 0 || maxy < 0 || minx > W - 1 || miny > H - 1) return false;
  const double cx0 = ceil(static_cast<double>(minx)), cx1 = floor(static_cast<double>(maxx));
  const double cy0 = ceil(static_cast<double>(miny)), cy1 = floor(static_cast<double>(maxy));
  s.xmin = cx0 < 0 ? 0 : static_cast<int64_t>(cx0);
  s.ymin = cy0 < 0 ? 0 : static_cast<int64_t>(cy0);
  s.xmax = cx1 > W - 1 ? W - 1 : static_cast<int64_t>(cx1);
  s.ymax = cy1 > H - 1 ? H - 1 : static_cast<int64_t>(cy1);
  return s.xmin <= s.xmax && s.ymin <= s.ymax;
}

// Coverage test at pixel centre (px, py); on success writes the perspective-correct depth.
template <typename T>
P6D_HD bool face_depth_at(const FaceSetup<T>& s, T px, T py, T& depth) {
  const T e0 = (s.x[2] - s.x[1]) * (py - s.y[1]) - (s.y[2] - s.y[1]) * (px - s.x[1]);
  const T e1 = (s.x[0] - s.x[2]) * (py - s.y[2]) - (s.y[0] - s.y[2]) * (px - s.x[2]);
  const T e2 = (s.x[1] - s.x[0]) * (py - s.y[0]) - (s.y[1] - s.y[0]) * (px - s.x[0]);
  const T w0 = e0 / s.area, w1 = e1 / s.area, w2 = e2 / s.area;
  if (w0 < 0 || w1 < 0 || w2 < 0) return false;
  depth = 1 / (w0 * s.inv_z[0] + w1 * s.inv_z[1] + w2 * s.inv_z[2]);
  return true;
}

// z-buffer key: float32 depth bits (monotonic for positive depth) above the face index, so the
// minimum key is the nearest face, ties broken by the lowest index. UINT64_MAX is empty.
template <typename T>
P6D_HD uint64_t zbuffer_key(T depth, int64_t face) {
  const float zf = static_cast<float>(depth);
  uint32_t bits;
#if defined(__CUDA_ARCH__)
  bits = __float_as_uint(zf);
#else
  std::memcpy(&bits, &zf, sizeof(bits));
#endif
  return (static_cast<uint64_t>(bits) << 32) | static_cast<uint64_t>(static_cast<uint32_t>(face));
}

constexpr uint64_t kEmptyKey = ~static_cast<uint64_t>(0);

}  // namespace p6d
