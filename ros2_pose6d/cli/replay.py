"""``pose6d-replay``: the offline twin of the live pipeline. Reads a ROS 2 bag, pairs image + camera_info
by stamp, runs detection + refinement on every frame (none dropped) and writes: an output bag
(detections, poses, detections_3d, overlay) that ``ros2 bag play`` feeds to rviz; with ground truth
(an ObjectPoseArray topic such as /gt/poses) the metrics table, recall/per-object/latency plots and an
overlay video; and report.json with per-frame results, stage timings and the frame accounting."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ros2_pose6d.cli.object_args import add_object_args, load_registry
from ros2_pose6d.estimation.cascade import DEFAULT_REFINER
from ros2_pose6d.estimation.pipeline import Pipeline
from ros2_pose6d.estimation.types import FrameError
from ros2_pose6d.eval.report import Report
from ros2_pose6d.io.bag import POSES, BagError, BagReader, BagWriter
from ros2_pose6d.io.ros_convert import (
    ConversionError,
    array_to_image,
    estimate_to_detection3d,
    estimates_to_array,
    frame_from_msgs,
    header,
    object_pose_to_estimate,
    rosbags_factory,
)
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.viz.overlay import OverlayDrawer

OUT_TOPICS = {"detections": "/pose6d/detections", "poses": "/pose6d/poses",
              "detections_3d": "/pose6d/detections_3d", "overlay": "/pose6d/overlay"}


@dataclass
class ReplayResult:
    total: int = 0
    processed: int = 0
    skipped: Counter = field(default_factory=Counter)
    frames: list[dict] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)
    report: Report = field(default_factory=Report)
    has_gt: bool = False
    outputs: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    def accounting(self) -> dict:
        return {"total": self.total, "processed": self.processed, "skipped": sum(self.skipped.values()),
                "skipped_reasons": dict(self.skipped)}


def replay(bag: Path, out_dir: Path, pipeline: Pipeline, registry: ObjectRegistry, image_topic: str | None = None,
           info_topic: str | None = None, gt_topic: str | None = None, max_frames: int | None = None,
           video: bool = True, progress: bool = True, storage: str = "sqlite3") -> ReplayResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    res = ReplayResult()
    if pipeline.detector is not None:  # the bag's AP50 ranks what the node publishes: the deployed threshold
        res.report.ap_min_score = pipeline.detector.score_threshold
        res.report.ap_nms_iou = pipeline.detector.nms_iou
    drawer = OverlayDrawer(registry)
    sizes = {o.obj_id: o.info.bbox_size for o in registry}
    writer_video = None
    with BagReader(bag, image_topic, info_topic, gt_topic) as reader, \
            BagWriter(out_dir / "bag", storage) as writer:
        f = rosbags_factory(writer.store)
        res.outputs["bag"] = str(out_dir / "bag")
        total = reader.num_images if max_frames is None else min(max_frames, reader.num_images)
        bar = tqdm(total=total, desc="replay", unit="frame", disable=not progress)
        try:
            for k, bf in enumerate(reader):
                if max_frames is not None and k >= max_frames:
                    break
                res.total += 1
                bar.update()
                t0 = time.perf_counter()
                try:
                    frame = frame_from_msgs(bf.image, bf.camera_info, bf.stamp)
                except (ConversionError, FrameError) as exc:
                    res.skipped[str(exc)] += 1
                    res.frames.append({"stamp": bf.stamp, "skipped": str(exc)})
                    continue
                t1 = time.perf_counter()
                try:
                    out = pipeline.process(frame)
                except Exception as exc:  # a frame the models fail on is skipped and counted, never fatal
                    reason = str(exc) if isinstance(exc, FrameError) else f"pipeline error: {type(exc).__name__}: {exc}"
                    res.skipped[reason] += 1
                    res.frames.append({"stamp": bf.stamp, "skipped": reason})
                    continue
                t2 = time.perf_counter()
                hdr = header(f, frame.stamp, frame.frame_id)
                writer.write(OUT_TOPICS["detections"], POSES, frame.stamp, estimates_to_array(f, hdr, out.detections))
                writer.write(OUT_TOPICS["poses"], POSES, frame.stamp, estimates_to_array(f, hdr, out.poses))
                dets3d = [estimate_to_detection3d(f, hdr, e, sizes[e.object_id], registry[e.object_id].name)
                          for e in out.poses]
                writer.write(OUT_TOPICS["detections_3d"], "vision_msgs/msg/Detection3DArray", frame.stamp,
                             f.new("vision_msgs/msg/Detection3DArray", header=hdr, detections=dets3d))
                overlay = drawer.draw(frame.image, frame.K, out.poses)
                writer.write(OUT_TOPICS["overlay"], "sensor_msgs/msg/Image", frame.stamp,
                             array_to_image(f, overlay, "rgb8", hdr))
                t3 = time.perf_counter()
                if video:
                    if writer_video is None:
                        h, w = overlay.shape[:2]
                        writer_video = cv2.VideoWriter(str(out_dir / "overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                                       10.0, (w, h))
                        res.outputs["video"] = str(out_dir / "overlay.mp4")
                    writer_video.write(np.ascontiguousarray(overlay[..., ::-1]))
                gt = []
                if bf.ground_truth is not None:
                    res.has_gt = True
                    gt = [object_pose_to_estimate(m) for m in bf.ground_truth.objects]
                    res.report.image_width = frame.image.shape[1]
                    res.report.add_frame("detected", out.detections, gt, frame.K, registry, ranked=True)
                    res.report.add_detections(out.detections, gt)
                    if pipeline.refiner is not None:
                        res.report.add_frame("refined", out.poses, gt, frame.K, registry, ranked=True)
                timing = {"conversion": t1 - t0, **out.timings, "writing": t3 - t2}
                for key, v in timing.items():
                    res.timings.setdefault(key, []).append(v)
                res.processed += 1
                res.frames.append({"stamp": frame.stamp, "timings": timing,
                                   "poses": [{"object_id": e.object_id, "instance": e.instance, "score": e.score,
                                              "t": [float(x) for x in e.t], "R": np.asarray(e.R).tolist(),
                                              "visibility": e.visibility, "stage": e.stage,
                                              "iterations": e.iterations, "fit_error": e.fit_error,
                                              "notes": e.notes} for e in out.poses],
                                   "num_detections": len(out.detections), "num_ground_truth": len(gt)})
        except KeyboardInterrupt:
            res.interrupted = True
        finally:
            bar.close()
            if writer_video is not None:
                writer_video.release()
    _write_report(res, out_dir, registry)
    return res


def _write_report(res: ReplayResult, out_dir: Path, registry: ObjectRegistry) -> None:
    summary = {stage: res.report.summary(stage) for stage in res.report.targets} if res.has_gt else {}
    if res.has_gt:
        summary |= res.report.detection_summary()
        if by_vis := res.report.visibility_summary():
            summary["by visible fraction"] = by_vis
        if by_score := res.report.reliability_summary():
            summary["by score"] = by_score
        summary |= res.report.left_out_summary()
    data = {"accounting": res.accounting(), "interrupted": res.interrupted, "metrics": summary,
            "timing_mean_s": {k: float(np.mean(v)) for k, v in res.timings.items()}, "frames": res.frames}
    (out_dir / "report.json").write_text(json.dumps(data, indent=1, default=float))
    res.outputs["report"] = str(out_dir / "report.json")
    if res.timings:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for k, v in res.timings.items():
            ax.hist(np.asarray(v) * 1000, bins=20, alpha=0.6, label=k)
        ax.set(xlabel="latency per frame [ms]", ylabel="frames", title="per-stage latency")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "latency.png", dpi=100)
        plt.close(fig)
        res.outputs["latency"] = str(out_dir / "latency.png")
    if res.has_gt:
        (out_dir / "metrics.txt").write_text(res.report.table(registry) + "\n")
        for p in res.report.plots(out_dir, registry):
            res.outputs[p.stem] = str(p)


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", type=Path, help="detector weights (default: the shipped demo weights)")
    add_refiner_arg(p, DEFAULT_REFINER, f"refinement method (default {DEFAULT_REFINER}: with the shipped weights it "
                    "corrects more poses than NeMo or DeepIM alone; see models/weights/README.md)")
    p.add_argument("--deepim", type=Path, help="DeepIM weights (default: shipped)")
    p.add_argument("--nemo", type=Path, help="NeMo weights (default: shipped)")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--nms-iou", type=float, default=0.7, help="detector duplicate suppression (1: off)")
    p.add_argument("--iterations", type=int, help="refiner iterations / steps (a single method only)")
    add_visibility_arg(p)
    p.add_argument("--device", default="cpu")
    add_object_args(p)


def add_refiner_arg(p: argparse.ArgumentParser, default: str, help: str) -> None:
    """--refiner: none, deepim, nemo or a cascade of them (estimation/cascade.py), checked as it is parsed."""
    def spec(value: str) -> str:
        from ros2_pose6d.estimation.cascade import parse_refiner
        try:
            parse_refiner(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value
    p.add_argument("--refiner", type=spec, default=default, metavar="{none,deepim,nemo,CASCADE}",
                   help=help + "; a cascade runs methods in turn, e.g. deepim+nemo+deepim:1 (':N' sets a stage's "
                        "iterations)")


def add_visibility_arg(p: argparse.ArgumentParser) -> None:
    from ros2_pose6d.estimation.pipeline import VISIBILITY_SOURCES, PipelineConfig
    default = PipelineConfig.visibility
    p.add_argument("--visibility", choices=VISIBILITY_SOURCES, default=default,
                   help=f"whose visibility a refined detection reports (default {default}; "
                        "models/weights/README.md compares them; evaluate: with --init detector)")
    p.add_argument("--duplicate-distance", type=float, default=PipelineConfig.duplicate_distance, metavar="D",
                   help="after refinement, a pose whose centre is within D object diameters of a better-scoring one "
                        f"of its object is dropped as a duplicate (default {PipelineConfig.duplicate_distance}, as "
                        "the refiner node; 0: keep all; evaluate: with --init detector)")
    p.add_argument("--seen-power", type=float, default=PipelineConfig.seen_power, metavar="P",
                   help="a refined detection scores the detector's score times the share of the object DeepIM's "
                        "occlusion head sees matched at the refined pose, to the power P: the poses the image "
                        f"confirms rank first (default {PipelineConfig.seen_power:g}, as the refiner node; 0: the "
                        "detector's score; evaluate: with --init detector)")


def build_pipeline(args: argparse.Namespace) -> tuple[Pipeline, ObjectRegistry]:
    from ros2_pose6d.estimation.pipeline import PipelineConfig
    from ros2_pose6d.resources import weights_dir

    registry = load_registry(args)
    wd = weights_dir()
    cfg = PipelineConfig(detector_weights=str(args.detector or wd / "detector_demo.safetensors"),
                         refiner=args.refiner, deepim_weights=str(args.deepim or wd / "deepim_demo.safetensors"),
                         nemo_weights=str(args.nemo or wd / "nemo_demo.safetensors"), device=args.device,
                         score_threshold=args.score_threshold, nms_iou=args.nms_iou,
                         refine_iterations=args.iterations, visibility=args.visibility,
                         duplicate_distance=args.duplicate_distance, seen_power=args.seen_power)
    return Pipeline.from_config(cfg, registry), registry


def print_summary(res: ReplayResult, registry: ObjectRegistry) -> None:
    acc = res.accounting()
    print(f"frames: {acc['total']} total, {acc['processed']} processed, {acc['skipped']} skipped"
          + (f" ({'; '.join(f'{n}x {r}' for r, n in acc['skipped_reasons'].items())})" if acc["skipped"] else ""))
    if res.interrupted:
        print("interrupted: the output bag and report hold the frames done so far")
    if res.has_gt:
        print(res.report.table(registry))
    for k, v in res.timings.items():
        print(f"{k:>12}: {1000 * np.mean(v):8.1f} ms/frame")
    for k, v in res.outputs.items():
        print(f"{k:>15}: {v}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pose6d-replay", description=__doc__)
    p.add_argument("bag", type=Path, help="input ROS 2 bag folder (.db3 or .mcap inside)")
    p.add_argument("--out", type=Path, default=Path("out/replay"))
    p.add_argument("--image-topic")
    p.add_argument("--info-topic")
    p.add_argument("--gt-topic", help="ground-truth ObjectPoseArray topic (auto: a topic named *gt*)")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--no-video", action="store_true")
    add_pipeline_args(p)
    args = p.parse_args(argv)
    from ros2_pose6d.nets.checkpoint import CheckpointError
    from ros2_pose6d.objects.registry import RegistryError
    try:
        pipeline, registry = build_pipeline(args)
        res = replay(args.bag, args.out, pipeline, registry, args.image_topic, args.info_topic, args.gt_topic,
                     args.max_frames, video=not args.no_video)
    except (BagError, CheckpointError, RegistryError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(res, registry)
    return 130 if res.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
