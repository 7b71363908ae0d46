"""Per-stage latency of the pipeline on 640x480 frames with 1, 5 and 10 objects: message conversion,
detection, refinement per iteration (DeepIM, without and with its depth matcher) / per step (NeMo), and
message writing; with our kernels
(rasteriser, MSDA) and with their pure-PyTorch references, in one run. Networks are the CPU-sized
configurations (training/configs/*_cpu.yaml) with random weights: latency does not depend on the weights."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import timed
from ros2_pose6d.training.synth import SynthConfig, render_sample
from ros2_pose6d.training.synth.generate import SceneContext

from ros2_pose6d.config import build_config, load_yaml
from ros2_pose6d.estimation.deepim_refiner import DeepimRefiner
from ros2_pose6d.estimation.detector import Detector
from ros2_pose6d.estimation.nemo_core import NeuralMeshes
from ros2_pose6d.estimation.nemo_refiner import NemoRefiner
from ros2_pose6d.estimation.types import Frame, PoseEstimate
from ros2_pose6d.io.ros_convert import (
    K_to_camera_info,
    array_to_image,
    camera_info_to_K,
    estimates_to_array,
    header,
    image_to_rgb,
    rosbags_factory,
)
from ros2_pose6d.io.ros_types import typestore
from ros2_pose6d.nets.deepim import DeepimConfig, DeepimNet
from ros2_pose6d.nets.nemo import NemoConfig, NemoModel
from ros2_pose6d.nets.smope import SmopeConfig, SmopeNet
from ros2_pose6d.objects.registry import ObjectRegistry

REPO = Path(__file__).resolve().parents[1]


def model_cfg(name: str, cls):
    return build_config(cls, load_yaml(REPO / "training" / "configs" / f"{name}_cpu.yaml")["model"])


def frame_with(registry, n: int, seed: int = 0):
    ctx = SceneContext(registry, seed)
    rng = np.random.default_rng(seed)
    cfg = SynthConfig(objects_per_image=(n, n), distractors=(0, 0), allow_repeats=True)
    s = render_sample(ctx, cfg, rng)
    ests = [PoseEstimate(r.obj_id, r.R, r.t, 1.0, k, np.array([r.bbox_obj[0], r.bbox_obj[1], r.bbox_obj[0]
                                                                 + r.bbox_obj[2], r.bbox_obj[1] + r.bbox_obj[3]],
                                                                float)) for k, r in enumerate(s.records)]
    return Frame(s.rgb, s.K), ests


def row(n, mode, frame, ests, det, deepim, deepim_matcher, nemo, store, f, repeats: int, nemo_steps: int = 5) -> None:
    hdr = header(f, 0.0, "cam")
    img_msg = array_to_image(f, frame.image, "rgb8", hdr)
    info_msg = K_to_camera_info(f, frame.K, frame.image.shape[:2], hdr)
    conv = timed(lambda: (image_to_rgb(img_msg), camera_info_to_K(info_msg)), repeats)
    detect = timed(lambda: det.detect(frame), repeats)
    it = timed(lambda: deepim.refine(frame, ests, 1), repeats)
    it_m = timed(lambda: deepim_matcher.refine(frame, ests, 1), repeats)
    nm = timed(lambda: nemo.refine(frame, ests, nemo_steps), 1) / nemo_steps
    write = timed(lambda: store.serialize_cdr(estimates_to_array(f, hdr, ests), "ros2_pose6d_msgs/msg/ObjectPoseArray"),
                  repeats)
    print(f"{n:>7} {mode:>9} {conv * 1e3:>8.1f} {detect * 1e3:>8.1f} {it * 1e3:>10.1f} {it_m * 1e3:>10.1f} "
          f"{it_m / it:>7.2f}x {nm * 1e3:>10.1f} {write * 1e3:>7.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    registry = ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")
    dev = args.device
    torch.manual_seed(0)
    det = Detector(SmopeNet(model_cfg("detector", SmopeConfig)), registry, dev, score_threshold=0.0)
    dcfg = model_cfg("deepim", DeepimConfig)
    deepim = DeepimRefiner(DeepimNet(dcfg), registry, dev)
    deepim_matcher = DeepimRefiner(DeepimNet(replace(dcfg, depth_matcher=True, matcher_weight=0.5)), registry, dev)
    ncfg = model_cfg("nemo", NemoConfig)
    meshes = NeuralMeshes(registry, ncfg.mesh_vertices, dev)
    nemo = NemoRefiner(NemoModel(ncfg, meshes.num_vertices), registry, dev, meshes)
    store = typestore("humble")
    f = rosbags_factory(store)
    os.environ["ROS2_POSE6D_FORCE_REFERENCE"] = "0"
    print(f"device {dev}, threads {torch.get_num_threads()}; times in ms per frame (median of {args.repeats})")
    print(f"{'objects':>7} {'kernels':>9} {'convert':>8} {'detect':>8} {'DeepIM/it':>10} {'+matcher':>10} "
          f"{'ratio':>8} {'NeMo/step':>10} {'write':>7}")
    frames = {n: frame_with(registry, n) for n in (1, 5, 10)}  # rendered with our kernel, before any switch
    for n, (frame, ests) in frames.items():
        for mode in ("ours", "reference"):
            os.environ["ROS2_POSE6D_FORCE_REFERENCE"] = "1" if mode == "reference" else "0"
            # the reference rasteriser takes seconds per render: one timed call is enough to see the gap
            row(n, mode, frame, ests, det, deepim, deepim_matcher, nemo, store, f,
                args.repeats if mode == "ours" else 1)
    os.environ.pop("ROS2_POSE6D_FORCE_REFERENCE", None)


if __name__ == "__main__":
    main()
