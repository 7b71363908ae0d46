// CPU rasteriser: faces are set up in parallel, binned into screen tiles per image, then every
// (image, tile) is rasterised in parallel with faces in ascending order.
#include <ATen/Parallel.h>

#include <algorithm>

#include "common/checks.h"
#include "rasterize/rasterize.h"
#include "rasterize/rasterize_common.h"

namespace p6d {

void rasterize_check(const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& face_offsets,
                     const at::Tensor& K, int64_t height, int64_t width, double znear) {
  check_dim(verts, 2, "verts", "(V, 3)");
  check_dim(faces, 2, "faces", "(F, 3)");
  check_dim(face_offsets, 1, "face_offsets", "(B + 1,)");
  check_dim(K, 3, "K", "(B, 3, 3)");
  TORCH_CHECK_VALUE(verts.size(1) == 3, "verts must be (V, 3), got ", verts.sizes());
  TORCH_CHECK_VALUE(faces.size(1) == 3, "faces must be (F, 3), got ", faces.sizes());
  TORCH_CHECK_VALUE(K.size(1) == 3 && K.size(2) == 3, "K must be (B, 3, 3), got ", K.sizes());
  check_float(verts, "verts");
  check_dtype(K, verts.scalar_type(), "K");
  check_dtype(faces, at::kLong, "faces");
  check_dtype(face_offsets, at::kLong, "face_offsets");
  for (const auto* t : {&faces, &face_offsets, &K}) check_same_device(verts, *t, "verts", "another input");
  for (const auto* t : {&verts, &faces, &face_offsets, &K}) check_contiguous(*t, "every rasterize input");
  TORCH_CHECK_VALUE(height > 0 && width > 0, "image size must be positive, got ", height, "x", width);
  TORCH_CHECK_VALUE(height * width <= (int64_t(1) << 31), "image ", height, "x", width, " is too large");
  TORCH_CHECK_VALUE(znear > 0, "znear must be positive, got ", znear);
  const int64_t B = K.size(0), F = faces.size(0), V = verts.size(0);
  TORCH_CHECK_VALUE(face_offsets.size(0) == B + 1, "face_offsets has ", face_offsets.size(0),
                    " entries, expected B + 1 = ", B + 1, " for ", B, " cameras");
  TORCH_CHECK_VALUE(F < (int64_t(1) << 32), "too many faces (", F, ")");
  const auto off = face_offsets.cpu();
  const int64_t* o = off.data_ptr<int64_t>();
  TORCH_CHECK_VALUE(o[0] == 0 && o[B] == F, "face_offsets must start at 0 and end at F = ", F, ", got ", o[0],
                    " .. ", o[B]);
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK_VALUE(o[b] <= o[b + 1], "face_offsets must be non-decreasing (image ", b, ")");
  if (F > 0) {
    const int64_t lo = faces.min().item<int64_t>(), hi = faces.max().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < V, "face indices must lie in [0, ", V, "), got [", lo, ", ", hi, "]");
  }
  check_finite(verts, "verts");
  check_finite(K, "K");
  if (B > 0) {
    const auto last = K.select(1, 2).cpu().to(at::kDouble);
    const auto expect = at::tensor({0.0, 0.0, 1.0}, last.options()).expand_as(last);
    TORCH_CHECK_VALUE(at::equal(last, expect), "K's last row must be (0, 0, 1) for every camera");
  }
}

namespace {

constexpr int64_t kTile = 16;

template <typename T>
void rasterize_impl(const T* verts, const int64_t* faces, const int64_t* off, const T* K, int64_t B,
                    int64_t F, int64_t H, int64_t W, T znear, bool cull, int64_t* face_id, T* depth) {
  std::vector<FaceSetup<T>> setups(F);
  std::vector<char> valid(F, 0);
  std::vector<int64_t> face_image(F);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t f = off[b]; f < off[b + 1]; ++f) face_image[f] = b;
  at::parallel_for(0, F, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f)
      valid[f] = setup_face(verts, faces + 3 * f, K + 9 * face_image[f], H, W, znear, cull, setups[f]);
  });

  const int64_t tx = (W + kTile - 1) / kTile, ty = (H + kTile - 1) / kTile, tiles = tx * ty;
  std::vector<std::vector<int64_t>> bins(B * tiles);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t f = off[b]; f < off[b + 1]; ++f) {
        if (!valid[f]) continue;
        const FaceSetup<T>& s = setups[f];
        for (int64_t j = s.ymin / kTile; j <= s.ymax / kTile; ++j)
          for (int64_t i = s.xmin / kTile; i <= s.xmax / kTile; ++i) bins[b * tiles + j * tx + i].push_back(f);
      }
    }
  });

  at::parallel_for(0, B * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> keys(kTile * kTile);
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / tiles, t = bt % tiles;
      const int64_t u0 = (t % tx) * kTile, v0 = (t / tx) * kTile;
      const int64_t u1 = std::min(u0 + kTile, W), v1 = std::min(v0 + kTile, H);
      std::fill(keys.begin(), keys.end(), kEmptyKey);
      for (const int64_t f : bins[bt]) {
        const FaceSetup<T>& s = setups[f];
        const int64_t ya = std::max(s.ymin, v0), yb = std::min(s.ymax, v1 - 1);
        const int64_t xa = std::max(s.xmin, u0), xb = std::min(s.xmax, u1 - 1);
        for (int64_t v = ya; v <= yb; ++v) {
          for (int64_t u = xa; u <= xb; ++u) {
            T z;
            if (!face_depth_at(s, static_cast<T>(u), static_cast<T>(v), z)) continue;
            const uint64_t key = zbuffer_key(z, f);
            uint64_t& slot = keys[(v - v0) * kTile + (u - u0)];
            if (key < slot) slot = key;
          }
        }
      }
      for (int64_t v = v0; v < v1; ++v) {
        for (int64_t u = u0; u < u1; ++u) {
          const uint64_t key = keys[(v - v0) * kTile + (u - u0)];
          const int64_t i = (b * H + v) * W + u;
          if (key == kEmptyKey) {
            face_id[i] = -1;
            depth[i] = 0;
            continue;
          }
          const int64_t f = static_cast<int64_t>(key & 0xffffffffull);
          T z = 0;
          face_depth_at(setups[f], static_cast<T>(u), static_cast<T>(v), z);
          face_id[i] = f;
          depth[i] = z;
        }
      }
    }
  });
}

}  // namespace

std::vector<at::Tensor> rasterize_cpu(const at::Tensor& verts, const at::Tensor& faces,
                                      const at::Tensor& face_offsets, const at::Tensor& K, int64_t height,
                                      int64_t width, double znear, bool cull_backfaces) {
  const int64_t B = K.size(0), F = faces.size(0);
  auto face_id = at::empty({B, height, width}, faces.options());
  auto depth = at::empty({B, height, width}, verts.options());
  if (B == 0) return {face_id, depth};
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "rasterize_cpu", [&] {
    rasterize_impl<scalar_t>(verts.data_ptr<scalar_t>(), faces.data_ptr<int64_t>(),
                             face_offsets.data_ptr<int64_t>(), K.data_ptr<scalar_t>(), B, F, height, width,
                             static_cast<scalar_t>(znear), cull_backfaces, face_id.data_ptr<int64_t>(),
                             depth.data_ptr<scalar_t>());
  });
  return {face_id, depth};
}

}  // namespace p6d
