"""What DeepIM's flow-matcher options of session 31 and the polish of session 32 cost per frame, with the shipped demo
network's configuration (models/weights/deepim_demo.yaml, random weights: latency does not depend on them), on a
640x480 frame with 1, 5 and 10 objects, for one refinement of ``--iterations`` iterations (the shipped network
averages 4.2 per object from perturbed truth; here no object stops early unless its step fails): with the forward
matches only (the baseline), with the occlusion head (which adds one one-way matcher pass at the refined pose for
the visibility), with the matches read both ways, with both (session 31), and with both and the polish iterations on
larger crops after the coarse ones, as shipped. The variants take turns within each repeat, so that the machine's
drift falls on all of them alike."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import timed
from pipeline import frame_with

from ros2_pose6d.config import build_config, load_yaml
from ros2_pose6d.estimation.deepim_refiner import DeepimRefiner
from ros2_pose6d.nets.deepim import DeepimConfig, DeepimNet
from ros2_pose6d.objects.registry import ObjectRegistry

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    registry = ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")
    shipped = build_config(DeepimConfig, load_yaml(REPO / "models" / "weights" / "deepim_demo.yaml")["model"],
                           prefix="model")
    shipped = replace(shipped, stop_rotation_deg=0.0, stop_translation=0.0)  # every object runs every iteration
    unpolished = replace(shipped, polish_size=None, polish_iterations=0)
    base = replace(unpolished, flow_matcher_occlusion=False, flow_symmetric_px=0.0, flow_depth_weight_hidden=None)
    variants = {"forward": base,
                "+occlusion": replace(base, flow_matcher_occlusion=True),
                "+backward": replace(base, flow_symmetric_px=shipped.flow_symmetric_px),
                "session 31": unpolished,
                "shipped": shipped}
    torch.manual_seed(0)
    refiners = {name: DeepimRefiner(DeepimNet(cfg), registry, args.device) for name, cfg in variants.items()}
    print(f"device {args.device}, threads {torch.get_num_threads()}; ms per frame for {args.iterations} DeepIM "
          f"iteration(s) (median of {args.repeats}); ratio against 'forward'")
    print(f"{'objects':>7} " + " ".join(f"{name:>11} {'ratio':>6}" for name in variants))
    for n in (1, 5, 10):
        frame, ests = frame_with(registry, n)
        runs = {name: [] for name in refiners}
        for _ in range(args.repeats):
            for name, r in refiners.items():
                runs[name].append(timed(lambda r=r, f=frame, e=ests: r.refine(f, e, args.iterations), 1) * 1e3)
        ms = {name: sorted(t)[len(t) // 2] for name, t in runs.items()}
        print(f"{n:>7} " + " ".join(f"{ms[name]:>11.1f} {ms[name] / ms['forward']:>5.2f}x" for name in variants))


if __name__ == "__main__":
    main()
