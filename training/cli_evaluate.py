"""``pose6d-evaluate``: run the pipeline (or a refiner alone from DeepIM-perturbed ground truth) on a BOP
split and report ADD(-S) 0.1d, 5cm5deg, proj 5px, AR_MSSD/AR_MSPD/AR per object and stage, with a BOP
results CSV, recall/per-object plots and a JSON summary in --out."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from ros2_pose6d.training.cli_common import run_cli
from tqdm import tqdm

from ros2_pose6d.cli.object_args import add_object_args, load_registry
from ros2_pose6d.cli.replay import add_refiner_arg, add_visibility_arg

# of each object in a frame, how many hypotheses beyond its count of targets are refined and ranked (chosen on
# val_s3; models/weights/README.md, "Ranking by what DeepIM sees")
EXTRA_HYPOTHESES = 4


def perturbation(text: str) -> tuple[float, float, float, float]:
    """argparse type of --perturb: 'DEG,X,Y,Z', four finite non-negative numbers."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not four finite non-negative numbers DEG,X,Y,Z")
    return values


def fraction(text: str) -> float:
    """argparse type of --min-visib: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a visible fraction in [0, 1], got {text!r}")
    return value


def count(text: str) -> int:
    """argparse type of --extra-hypotheses: a whole number >= 0."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pose6d-evaluate", description=__doc__)
    p.add_argument("split", type=Path, help="BOP split folder (scenes inside), synthetic or real")
    p.add_argument("--init", choices=("detector", "perturbed"), default="detector",
                   help="start from the detector, or from ground truth perturbed as in DeepIM (refiner only)")
    p.add_argument("--detector", type=Path, help="detector weights (needed with --init detector)")
    add_refiner_arg(p, "deepim", "refinement method")
    p.add_argument("--deepim", type=Path, help="DeepIM weights")
    p.add_argument("--nemo", type=Path, help="NeMo weights")
    p.add_argument("--iterations", type=int,
                   help="refiner iterations / steps (default: the weights' own; a single method only)")
    add_visibility_arg(p)  # with --init detector
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="detector score threshold: the detections scored as poses (of each object only the "
                        "best-scoring, as many as the frame has targets of it, as BOP scores them; only those and "
                        "--extra-hypotheses more are refined, and the time per frame is theirs)")
    p.add_argument("--extra-hypotheses", type=count, default=EXTRA_HYPOTHESES, metavar="K",
                   help="refine K more of each object's hypotheses than it has targets in the frame, best-scoring "
                        "first (BOP gives a method the number of instances): refined, they rank by their refined "
                        f"score (the detector's times the seen share to --seen-power), as the node's output does "
                        f"(default {EXTRA_HYPOTHESES}; 0 refines only the count, ranked by the detector's score)")
    p.add_argument("--nms-iou", type=float, default=0.7,
                   help="detector duplicate suppression: box IoU above which a weaker detection of the same "
                        "object is dropped (1: off)")
    p.add_argument("--ap-threshold", type=float, default=0.05,
                   help="box AP50 ranks every detection scoring at least this (AP measures the ranking, so it "
                        "is not cut at --score-threshold; as the 0.05 of common detection benchmarks)")
    p.add_argument("--min-visib", type=fraction,
                   help="ground truth less visible than this is no target: not counted in the pose metrics nor "
                        "expected by box AP50 (default 0.1, BOP's rule; 0 counts every instance)")
    p.add_argument("--targets", type=Path, metavar="JSON",
                   help="a BOP test-targets file (such as <dataset>/test_targets_bop19.json): evaluate only the "
                        "images it lists, and there only the instances it names (per object its inst_count most "
                        "visible ones), as BOP does; instead of --min-visib")
    p.add_argument("--max-frames", type=int, help="evaluate only the first N frames")
    p.add_argument("--gallery", type=int, default=6, metavar="N",
                   help="pictures of the N frames with the most targets missed at ADD(-S) 0.1d, each stage's poses "
                        "beside the next over the ground truth's white outlines, in --out/gallery (0: none)")
    p.add_argument("--perturb", type=perturbation, metavar="DEG,X,Y,Z",
                   help="with --init perturbed: std of the rotation angle about a random axis [deg] and of the "
                        "translation along x, y, z [m] (default DeepIM's 15,0.01,0.01,0.05; 0,0,0,0 starts at "
                        "the truth and measures how far a refiner drifts from it: its precision floor)")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("out/evaluate"))
    add_object_args(p)
    return p.parse_args(argv)


def refine_scored(pipe, frame, hypotheses: list, counts: dict[int, int], extra: int = 0) -> tuple[list, list]:
    """(started, refined): of a detector's ``hypotheses``, refined as ``Pipeline.refine_detections`` would, those
    the report may score: per object its ``counts`` best and ``extra`` more (refined, they rank by their refined
    score, ``Pipeline.refine``), and where two of them refine onto one instance (a duplicate, dropped) so that an
    object is left with fewer than its count, the next best in their place, as the pipeline's output holds it."""
    from collections import Counter

    from ros2_pose6d.estimation.duplicates import drop_duplicates
    from ros2_pose6d.eval.report import top_per_object
    if pipe.refiner is None:
        start = top_per_object(hypotheses, counts)
        return start, start
    left = sorted(hypotheses, key=lambda d: -float(d.score))
    started, done = [], []
    want = {o: n + extra for o, n in counts.items() if n > 0}
    while batch := top_per_object(left, want):
        left = [d for d in left if not any(d is b for b in batch)]
        started += batch
        done = drop_duplicates(done + pipe.refine(frame, batch), pipe.diameters, pipe.duplicate_distance)
        have = Counter(e.object_id for e in done)
        want = {o: n - have[o] for o, n in counts.items() if n > have[o]}
    return started, done


def main(argv: list[str] | None = None) -> int:
    from ros2_pose6d.training.tasks.deepim_task import DeepimLossConfig, perturb_poses

    from ros2_pose6d.estimation.cascade import parse_refiner
    from ros2_pose6d.estimation.pipeline import Pipeline, PipelineConfig, build_refiner
    from ros2_pose6d.estimation.types import Frame, PoseEstimate
    from ros2_pose6d.eval.bop_csv import BopResult, write_bop_csv
    from ros2_pose6d.eval.report import Report, top_per_object
    from ros2_pose6d.io.bop import bop_target_mask, read_bop_split, read_bop_targets
    from ros2_pose6d.viz.gallery import WorstFrames
    from ros2_pose6d.viz.overlay import OverlayDrawer

    args = parse_args(argv)
    registry = load_registry(args)
    if args.gallery < 0:
        raise ValueError(f"--gallery {args.gallery}: the number of pictures cannot be negative")
    if args.targets is not None and args.min_visib is not None:
        raise ValueError("--targets names the targets itself; leave out --min-visib")
    targets = read_bop_targets(args.targets) if args.targets is not None else None
    report = Report(min_visib=0.1 if args.min_visib is None else args.min_visib,
                    targets_file=None if targets is None else args.targets.name)
    if args.init == "detector" and args.detector is None:
        raise ValueError("--init detector needs --detector WEIGHTS")
    if args.init == "detector" and args.perturb is not None:
        raise ValueError("--perturb sets the starts of --init perturbed; the detector's are its own")
    trained = DeepimLossConfig()  # DeepIM's training perturbation: the default start
    perturb = args.perturb or (trained.rot_std_deg, *trained.trans_std)
    for stage in parse_refiner(args.refiner):
        if getattr(args, stage.method) is None:
            raise ValueError(f"--refiner {args.refiner} needs --{stage.method} WEIGHTS")
    # the detector keeps what AP ranks; the poses are those at --score-threshold (filtered below)
    cfg = PipelineConfig(detector_weights=str(args.detector or ""), refiner=args.refiner,
                         deepim_weights=str(args.deepim or ""), nemo_weights=str(args.nemo or ""), device=args.device,
                         score_threshold=min(args.score_threshold, args.ap_threshold), nms_iou=args.nms_iou,
                         refine_iterations=args.iterations, visibility=args.visibility,
                         duplicate_distance=args.duplicate_distance, seen_power=args.seen_power)
    if args.init == "detector":
        pipe = Pipeline.from_config(cfg, registry)
        report.ap_min_score, report.ap_nms_iou = cfg.score_threshold, cfg.nms_iou
    else:  # refiner alone
        # the perturbed starts carry no visibility: the refiner's own is reported
        refiner = build_refiner(args.refiner, {"deepim": args.deepim, "nemo": args.nemo}, registry, args.device)
        pipe = Pipeline(registry, None, refiner, args.iterations, visibility="refiner")
    scenes = read_bop_split(args.split, load_depth=False)
    frames = [(s, i) for s in scenes for i in s.im_ids if targets is None or (s.scene_id, i) in targets]
    frames = frames[: args.max_frames]
    if not frames:
        raise ValueError(f"{args.split}: no frames" + ("" if targets is None else f" among those {args.targets} lists"))
    gen = torch.Generator().manual_seed(args.seed)
    start_stage = "initial" if args.init == "perturbed" else "detected"
    stages = [start_stage] + (["refined"] if args.refiner != "none" else [])
    worst = WorstFrames(args.gallery)
    csv_rows = []
    times = []
    first = True
    for scene, im_id in tqdm(frames, desc="evaluate", unit="frame"):
        bf = scene.frame(im_id)
        if first:
            report.image_width = bf.rgb.shape[1]
            first = False
        frame = Frame(bf.rgb, bf.K)
        gts = [g for g in bf.gt if g.obj_id in registry.ids]
        is_target = None if targets is None else bop_target_mask(gts, targets[(scene.scene_id, im_id)])
        t0 = time.perf_counter()
        if args.init == "detector":
            ranked = pipe.detector.detect(frame)
            hypotheses = [d for d in ranked if d.score >= args.score_threshold]
            # only the hypotheses the report may score (BOP's top-n per object, of the refined scores) are
            # refined: a low --score-threshold costs little time; the rest are not ranked, only counted
            counts = report.target_counts(gts, registry, is_target)
            start, final = refine_scored(pipe, frame, hypotheses, counts, args.extra_hypotheses)
            unscored = [d for d in hypotheses if not any(d is s for s in start)]
        else:
            if not gts:
                continue
            R = torch.as_tensor(np.stack([g.R for g in gts]), dtype=torch.float32)
            t = torch.as_tensor(np.stack([g.t for g in gts]), dtype=torch.float32)
            Rp, tp = perturb_poses(R, t, gen, perturb[0], perturb[1:])
            start = [PoseEstimate(g.obj_id, Rp[k].double().numpy(), tp[k].double().numpy(), instance=k)
                     for k, g in enumerate(gts)]
            final = pipe.refine(frame, start)
        times.append(time.perf_counter() - t0)
        counted = {st: len(report.targets.get(st, [])) for st in stages}
        scored = args.init == "detector"  # a detector's hypotheses count as BOP counts them; perturbed: one each
        report.add_frame(start_stage, hypotheses if scored else start, gts, bf.K, registry, targets=is_target,
                         ranked=scored)
        if scored:
            report.add_detections(ranked, gts, targets=is_target)
        if args.refiner != "none":
            report.add_frame("refined", final, gts, bf.K, registry, targets=is_target, ranked=scored,
                             unranked=len(unscored) if scored else 0)
        passed = {st: [r.add < 0.1 * r.diameter for r in report.targets[st][counted[st]:]] for st in stages}
        worst.offer(f"{scene.scene_id:06d}_{im_id:06d}", passed[stages[-1]].count(False), bf.rgb, bf.K,
                    [PoseEstimate(g.obj_id, g.R, g.t) for g in gts],
                    dict(zip(stages, (top_per_object(p, counts) for p in (hypotheses, final)) if scored
                             else (start, final))),
                    {st: f"{sum(ok)} of {len(ok)} within 0.1d" for st, ok in passed.items()})
        csv_rows += [BopResult(scene.scene_id, im_id, e.object_id, e.score, e.R, e.t, times[-1]) for e in final]
    args.out.mkdir(parents=True, exist_ok=True)
    table = report.table(registry)
    print(table)
    (args.out / "table.txt").write_text(table + "\n")
    write_bop_csv(args.out / "results.csv", csv_rows)
    plots = report.plots(args.out, registry)
    plots += worst.write(args.out / "gallery", OverlayDrawer(registry))
    summary = {stage: report.summary(stage) for stage in report.targets}
    summary |= report.detection_summary()
    if by_vis := report.visibility_summary():
        summary["by visible fraction"] = by_vis
    if by_score := report.reliability_summary():
        summary["by score"] = by_score
    summary |= report.left_out_summary()
    if args.init == "perturbed":
        summary["perturbation"] = dict(zip(("rot_std_deg", "x_std", "y_std", "z_std"), perturb))
    summary["seconds_per_frame"] = float(np.mean(times)) if times else None
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out / 'results.csv'}, {args.out / 'summary.json'}, " + ", ".join(str(p) for p in plots))
    return 0


def entry() -> None:
    from ros2_pose6d.io.bop import BopError
    from ros2_pose6d.nets.checkpoint import CheckpointError
    from ros2_pose6d.objects.registry import RegistryError
    run_cli(main, (CheckpointError, BopError, RegistryError))


if __name__ == "__main__":
    entry()
