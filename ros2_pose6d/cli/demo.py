"""``pose6d-demo``: the README's main command. Renders a short synthetic sequence of the demo objects on
a table (a camera orbiting the scene, objects occluding each other) into a ROS 2 bag with camera_info and
ground truth, replays it through the full pipeline (detector + refiner) with the shipped weights, and
prints the metrics table and where the overlay video, plots, report and output bag are."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ros2_pose6d.cli.replay import add_pipeline_args, build_pipeline, print_summary, replay
from ros2_pose6d.estimation.types import PoseEstimate
from ros2_pose6d.io.bag import CAMERA_INFO, IMAGE, POSES, BagError, BagWriter
from ros2_pose6d.io.ros_convert import K_to_camera_info, array_to_image, estimates_to_array, header, rosbags_factory
from ros2_pose6d.objects.registry import ObjectRegistry

SCENE = (("mug", (0.00, 0.00), 0.3), ("drill", (0.12, 0.07), 1.2), ("duck", (-0.11, 0.06), 2.0),
         ("can", (0.05, -0.12), 0.0), ("house", (-0.08, -0.10), 0.8))


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def make_sequence_bag(registry: ObjectRegistry, out: Path, frames: int = 24, hw: tuple[int, int] = (480, 640),
                      seed: int = 0, progress: bool = True) -> Path:
    """Render the orbiting-camera sequence into a bag: /camera/color/image_raw, camera_info, /gt/poses."""
    from ros2_pose6d.training.synth import SynthConfig, render_sample
    from ros2_pose6d.training.synth.generate import SceneContext
    from ros2_pose6d.training.synth.poses import look_at_rotation

    names = {o.name: o for o in registry}
    scene = [(names[n], xy, yaw) for n, xy, yaw in SCENE if n in names]
    if not scene:
        raise ValueError("the demo scene needs the demo objects (mug, drill, duck, can, house)")
    ctx = SceneContext(registry, seed)
    cfg = SynthConfig(height=hw[0], width=hw[1], distractors=(0, 0), blur_prob=0.0, noise_sigma=(2.0, 2.0))
    K = np.array([[600.0, 0, (hw[1] - 1) / 2], [0, 600.0, (hw[0] - 1) / 2], [0, 0, 1]])
    world = []  # object-to-world poses: resting on the table (z = 0), turned about z
    for obj, (x, y), yaw in scene:
        z = -float(obj.mesh.vertices[:, 2].min())
        world.append((_rz(yaw), np.array([x, y, z])))
    idx = np.array([registry.index(obj.obj_id) for obj, _, _ in scene])
    with BagWriter(out) as w:
        f = rosbags_factory(w.store)
        for k in tqdm(range(frames), desc="render sequence", unit="frame", disable=not progress):
            a = np.deg2rad(-60 + 120 * k / max(1, frames - 1))
            e = np.deg2rad(35 + 10 * np.sin(np.pi * k / max(1, frames - 1)))
            radius = 0.75
            centre = np.array([0.0, 0.0, 0.05])
            cam = centre + radius * np.array([np.cos(a) * np.cos(e), np.sin(a) * np.cos(e), np.sin(e)])
            R_cw = look_at_rotation(a, e, 0.0)
            R = np.stack([R_cw @ Rw for Rw, _ in world])
            t = np.stack([R_cw @ (p - cam) for _, p in world])
            sample = render_sample(ctx, cfg, np.random.default_rng(seed), K=K, obj_indices=idx, R=R, t=t)
            stamp = k / 10.0
            hdr = header(f, stamp, "camera_color_optical_frame")
            w.write("/camera/color/image_raw", IMAGE, stamp, array_to_image(f, sample.rgb, "rgb8", hdr))
            w.write("/camera/color/camera_info", CAMERA_INFO, stamp, K_to_camera_info(f, K, hw, hdr))
            gts = []
            for rec in sample.records:
                x, y, bw, bh = rec.bbox_visib
                gts.append(PoseEstimate(rec.obj_id, rec.R, rec.t, 1.0, 0, np.array([x, y, x + bw, y + bh], float),
                                        rec.visib_fract))
            w.write("/gt/poses", POSES, stamp, estimates_to_array(f, hdr, gts))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pose6d-demo", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    add_pipeline_args(p)
    args = p.parse_args(argv)
    from ros2_pose6d.nets.checkpoint import CheckpointError
    from ros2_pose6d.objects.registry import RegistryError
    try:
        pipeline, registry = build_pipeline(args)
        bag = args.out / "input_bag"
        if bag.exists():
            shutil.rmtree(bag)
        if (args.out / "replay").exists():
            shutil.rmtree(args.out / "replay")
        make_sequence_bag(registry, bag, args.frames, seed=args.seed)
        res = replay(bag, args.out / "replay", pipeline, registry)
    except (BagError, CheckpointError, RegistryError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"input bag: {bag}")
    print_summary(res, registry)
    return 130 if res.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
