"""Rasteriser (face id + depth): our CPU kernel vs the pure-PyTorch reference vs ray casting by an
independent library (open3d RaycastingScene, else trimesh + embree), in one run, on the same threads.

Meshes are subdivided icospheres (about 1k / 10k / 100k faces, ~10 cm radius) at 0.5 m in front of a
pinhole camera whose field of view puts the object over about half of the image. On a CUDA machine
it also prints CUDA renders/s for a batch of 128x128 crops.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).parent))
from _common import fmt_mib, peak_memory_fresh, timed

from ros2_pose6d.render.rasterize import RasterSettings, rasterize, rasterize_reference

SUBDIVISIONS = {"1k": 3, "10k": 5, "100k": 7}  # 20 * 4**n faces: 1280, 20480, 327680 -> trimmed below


def make_mesh(label: str) -> tuple[np.ndarray, np.ndarray]:
    """An icosphere with about the named face count (subdivided, then faces dropped from a cap)."""
    target = {"1k": 1_000, "10k": 10_000, "100k": 100_000}[label]
    sphere = trimesh.creation.icosphere(subdivisions=SUBDIVISIONS[label], radius=0.1)
    faces = np.asarray(sphere.faces)
    if len(faces) > target:  # drop the faces farthest from the camera (back cap): count matches the label
        centroid_z = np.asarray(sphere.vertices)[faces].mean(1)[:, 2]
        faces = faces[np.argsort(centroid_z)[:target]]
    return np.asarray(sphere.vertices, np.float32), faces.astype(np.int64)


def camera(h: int, w: int) -> np.ndarray:
    f = 0.5 * w / 0.2 * 0.5  # the 20 cm sphere spans about half the image width at 0.5 m
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], np.float64)


def batch_inputs(v: np.ndarray, f: np.ndarray, K: np.ndarray, batch: int, device: str = "cpu"):
    """``batch`` images, one sphere each, shifted a little so no two renders are identical."""
    rng = np.random.default_rng(0)
    shifts = np.concatenate([rng.uniform(-0.02, 0.02, (batch, 2)), np.full((batch, 1), 0.5)], 1)
    verts = np.concatenate([v + s for s in shifts]).astype(np.float32)
    faces = np.concatenate([f + i * len(v) for i in range(batch)])
    offsets = np.arange(batch + 1) * len(f)
    Ks = np.repeat(K[None], batch, 0).astype(np.float32)
    as_t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    return as_t(verts), as_t(faces), as_t(offsets), as_t(Ks)


def ray_caster(v: np.ndarray, f: np.ndarray, K: np.ndarray, h: int, w: int, batch: int):
    """A callable casting one ray per pixel centre for ``batch`` images, and the library's name."""
    us, vs = np.meshgrid(np.arange(w), np.arange(h))
    pix = np.stack([us, vs, np.ones_like(us)], -1).reshape(-1, 3).astype(np.float64)
    dirs = pix @ np.linalg.inv(K).T
    try:
        import open3d as o3d

        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor((v + [0, 0, 0.5]).astype(np.float32)),
                            o3d.core.Tensor(f.astype(np.uint32)))
        rays = o3d.core.Tensor(np.concatenate([np.zeros_like(dirs), dirs], 1).astype(np.float32))

        def cast():
            for _ in range(batch):
                scene.cast_rays(rays)
        return cast, "open3d"
    except ImportError:
        pass
    try:
        mesh = trimesh.Trimesh(v + [0, 0, 0.5], f, process=False)
        if not mesh.ray.__class__.__module__.endswith("ray_pyembree"):
            return None, "none"

        def cast():
            for _ in range(batch):
                mesh.ray.intersects_first(np.zeros_like(dirs), dirs)
        return cast, "trimesh+embree"
    except Exception:
        return None, "none"


def case(h: int, w: int, label: str, batch: int):
    """The kernel call measured for memory in a fresh process."""
    v, f = make_mesh(label)
    a = batch_inputs(v, f, camera(h, w), batch)
    return lambda: rasterize(*a, RasterSettings(h, w))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the 100k-face mesh and the reference at 640x480")
    parser.add_argument("--cuda-only", action="store_true", help="only the CUDA table (CPU kernel as baseline)")
    args = parser.parse_args()
    if not args.cuda_only:
        cpu_table(args)
    if torch.cuda.is_available():
        cuda_table(args)
    elif args.cuda_only:
        raise SystemExit("--cuda-only: torch sees no CUDA device")


def cpu_table(args: argparse.Namespace) -> None:
    """CPU kernel vs reference vs an independent ray caster, same threads."""
    print(f"threads: {torch.get_num_threads()}")
    print(f"{'image':>8} {'faces':>6} {'batch':>5} {'kernel ms':>10} {'reference ms':>13} {'ray ms':>9} "
          f"{'vs ref':>7} {'vs ray':>7} {'kernel MiB':>11} {'ray lib':>15}")
    for h, w in ((480, 640), (128, 128)):
        K = camera(h, w)
        for label in ("1k", "10k") if args.quick else ("1k", "10k", "100k"):
            v, f = make_mesh(label)
            for batch in (1, 64):
                if h == 480 and batch == 64 and label == "100k":
                    continue  # 64 full-size images of a 100k mesh: minutes on 2 cores, says nothing new
                settings = RasterSettings(h, w)
                a = batch_inputs(v, f, K, batch)
                kernel = lambda a=a, s=settings: rasterize(*a, s)  # noqa: E731
                tk = timed(kernel, args.repeats)
                mk = peak_memory_fresh(__file__, "case", h, w, label, batch)
                small = (batch == 1 and len(f) <= 10_000) or (h == 128 and len(f) <= 1_000)
                small = small and not (args.quick and h == 480)
                tr = timed(lambda a=a, s=settings: rasterize_reference(*a, s), 1) if small else None
                cast, lib = ray_caster(v, f, K, h, w, batch)
                tray = timed(cast, 1) if cast is not None else None
                ref_s = f"{tr * 1e3:13.1f}" if tr else f"{'-':>13}"
                ray_s = f"{tray * 1e3:9.1f}" if tray else f"{'-':>9}"
                vs_ref = f"{tr / tk:6.1f}x" if tr else f"{'-':>7}"
                vs_ray = f"{tray / tk:6.1f}x" if tray else f"{'-':>7}"
                print(f"{f'{w}x{h}':>8} {len(f):>6} {batch:>5} {tk * 1e3:>10.2f} {ref_s} {ray_s} {vs_ref} {vs_ray} "
                      f"{fmt_mib(mk):>11} {lib:>15}")


def cuda_table(args: argparse.Namespace) -> None:
    """CUDA kernel vs our CPU kernel (same call, same process) and renders/s; the issue's GPU target is
    >= 20,000 renders/s of 128x128 crops of the 10k-face mesh."""
    print(f"\nCUDA: {torch.cuda.get_device_name()}; CPU baseline on {torch.get_num_threads()} threads")
    print(f"{'image':>8} {'faces':>6} {'batch':>5} {'cuda ms':>9} {'cpu ms':>9} {'speed-up':>9} {'renders/s':>10}")
    for h, w, batches in ((480, 640, (1, 64)), (128, 128, (1, 64, 1024))):
        K = camera(h, w)
        for label in ("1k", "10k") if args.quick else ("1k", "10k", "100k"):
            v, f = make_mesh(label)
            s = RasterSettings(h, w)
            for batch in batches:
                a = batch_inputs(v, f, K, batch, device="cuda")

                def run(a=a, s=s):
                    rasterize(*a, s)
                    torch.cuda.synchronize()
                t = timed(run, 10)
                c = batch_inputs(v, f, K, batch)
                tc = timed(lambda c=c, s=s: rasterize(*c, s), 1) if batch <= 64 else None
                cpu_s, ratio = (f"{tc * 1e3:9.2f}", f"{tc / t:8.1f}x") if tc else (f"{'-':>9}", f"{'-':>9}")
                print(f"{f'{w}x{h}':>8} {len(f):>6} {batch:>5} {t * 1e3:9.3f} {cpu_s} {ratio} {batch / t:10.0f}")


if __name__ == "__main__":
    main()
