"""``pose6d-demo``: the README's main command.

Until the detector and refiner weights ship (issues 6-9, 11), the demo runs the end-to-end part that
exists: it loads the shipped demo object set, renders a cluttered scene of all objects through our
rasteriser kernel (mutual occlusion, colour, depth, instance masks) and writes a picture of it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ros2_pose6d._ext import backend
from ros2_pose6d.geometry import random_rotation
from ros2_pose6d.objects import ObjectRegistry, RegistryError
from ros2_pose6d.render import MeshRenderer, RasterSettings

DEFAULT_OBJECTS = Path(__file__).resolve().parents[2] / "config" / "objects.yaml"


def _panel(out, height: int, width: int) -> np.ndarray:
    color = (out.color[0].numpy() * 255).astype(np.uint8)
    depth = out.depth[0].numpy()
    d = np.zeros((height, width), np.uint8)
    if out.mask.any():
        lo, hi = depth[out.mask[0].numpy()].min(), depth.max()
        d[out.mask[0].numpy()] = (255 * (1 - (depth[out.mask[0].numpy()] - lo) / max(hi - lo, 1e-6))).astype(np.uint8)
    depth_img = cv2.applyColorMap(d, cv2.COLORMAP_VIRIDIS)[..., ::-1] * out.mask[0].numpy()[..., None]
    inst = out.instance[0].numpy()
    palette = (np.random.default_rng(0).random((64, 3)) * 200 + 55).astype(np.uint8)
    inst_img = np.where(inst[..., None] >= 0, palette[inst % 64], 0).astype(np.uint8)
    return np.concatenate([color, depth_img, inst_img], axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pose6d-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=Path, default=DEFAULT_OBJECTS, help="objects.yaml of the object set")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        registry = ObjectRegistry.from_yaml(args.objects)
    except RegistryError as exc:
        print(f"pose6d-demo: {exc}", file=sys.stderr)
        return 2
    info = backend()
    print(f"kernels: {info.kernels} ({info.reason}); torch {torch.__version__}, CUDA available: {info.torch_cuda}")
    print(f"object set '{registry.name}': " + ", ".join(f"{o.obj_id}:{o.name} ({o.diameter * 100:.1f} cm)"
                                                      for o in registry))
    renderer = MeshRenderer([o.mesh for o in registry])
    n = len(registry)
    g = torch.Generator().manual_seed(args.seed)
    R = random_rotation(n, g)
    cols = int(np.ceil(n / 2))
    t = torch.tensor([[(i % cols - (cols - 1) / 2) * 0.09, (i // cols - 0.5) * 0.12, 0.65 + 0.03 * (i % 3)]
                      for i in range(n)])
    H, W = 480, 640
    K = torch.tensor([[[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]]])
    settings = RasterSettings(H, W)
    start = time.perf_counter()
    out = renderer.render(torch.arange(n), R, t, K, settings, image_idx=torch.zeros(n, dtype=torch.long))
    elapsed = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "demo_objects.png"
    cv2.imwrite(str(path), _panel(out, H, W)[..., ::-1])
    faces = int(renderer.num_faces.sum())
    print(f"rendered {n} objects ({faces} faces) into one {W}x{H} image in {elapsed * 1000:.1f} ms")
    print("visible pixels per object: " + ", ".join(
        f"{o.name} {int((out.instance[0] == i).sum())}" for i, o in enumerate(registry)))
    print(f"wrote {path} (colour | depth | instances)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
