"""NeMo refinement time per object per frame, for the default number of optimisation steps of a config
(training/configs/nemo_cpu.yaml by default), on 640x480 frames with 1 and 4 objects, with our rasteriser
kernel, with the pure-PyTorch reference rasteriser, and with the kernel but without the config's rotation
search, in one run. Random weights: time does not depend on them."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import timed
from pipeline import REPO, frame_with, model_cfg

from ros2_pose6d.estimation.nemo_core import NeuralMeshes
from ros2_pose6d.estimation.nemo_refiner import NemoRefiner
from ros2_pose6d.nets.nemo import NemoConfig, NemoModel
from ros2_pose6d.objects.registry import ObjectRegistry


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    registry = ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")
    cfg = model_cfg("nemo", NemoConfig)
    meshes = NeuralMeshes(registry, cfg.mesh_vertices, args.device)
    refiner = NemoRefiner(NemoModel(cfg, meshes.num_vertices), registry, args.device, meshes)
    print(f"device {args.device}, threads {torch.get_num_threads()}, {cfg.steps} steps, crop {cfg.input_size}, "
          f"{cfg.mesh_vertices}-vertex meshes, rotation search {cfg.search_rotations} (best {cfg.search_keep})")
    print(f"{'objects':>7} {'variant':>11} {'ms/frame':>9} {'ms/object':>10} {'ratio':>6}")
    os.environ["ROS2_POSE6D_FORCE_REFERENCE"] = "0"
    frames = {n: frame_with(registry, n) for n in (1, 4)}  # rendered with our kernel, before any switch
    for n, (frame, ests) in frames.items():
        times = {}
        for mode in ("kernel", "reference", "no search"):  # the last: kernel, without the rotation search
            os.environ["ROS2_POSE6D_FORCE_REFERENCE"] = "1" if mode == "reference" else "0"
            refiner.cfg = replace(cfg, search_rotations=0) if mode == "no search" else cfg
            times[mode] = timed(lambda frame=frame, ests=ests: refiner.refine(frame, ests), args.repeats)
            print(f"{n:>7} {mode:>11} {times[mode] * 1e3:>9.0f} {times[mode] * 1e3 / n:>10.0f} "
                  f"{times[mode] / times['kernel']:>5.1f}x")
    os.environ.pop("ROS2_POSE6D_FORCE_REFERENCE", None)


if __name__ == "__main__":
    main()
