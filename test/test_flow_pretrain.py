"""Flow pre-training of DeepIM's network: the procedural pairs' flow is exact (it carries rendered pixels onto
the observed ones, and the plane motion is the projection of a rigid motion), the pairs are a function of
(seed, index), the network learns the flow on them, and its weights start a DeepIM run."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO
from ros2_pose6d.training.synth.flow_pairs import FlowPairConfig, FlowPairDataset, make_flow_pair, plane_homography
from ros2_pose6d.training.tasks import build_task
from ros2_pose6d.training.trainer import TrainConfig, Trainer

from ros2_pose6d.config import ConfigError, apply_overrides, build_config, load_yaml
from ros2_pose6d.nets.checkpoint import read_metadata
from ros2_pose6d.objects.registry import ObjectRegistry

CONFIGS = REPO / "training" / "configs"
PLAIN = FlowPairConfig(gain=(1.0, 1.0), light_variation=0.0, occluders=(0, 0), blur_prob=0.0, noise=0.0)


@pytest.fixture(scope="module")
def registry():
    return ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")


def test_flow_carries_rendered_pixels_onto_the_observed_crop():
    """Moving a texture that holds each pixel's own coordinates: the observed crop read at p + flow(p) (without
    relighting, occluders, blur and noise) gives back p, to a small fraction of a pixel; a flow one pixel off
    is caught."""
    h, w = 96, 128
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = np.stack([xs / w, ys / h, np.zeros_like(xs)], -1)
    for seed in range(8):
        pair = make_flow_pair(np.random.default_rng(seed), PLAIN, h, w, texture=coords)
        mx, my = xs + pair["flow"][..., 0], ys + pair["flow"][..., 1]
        inner = cv2.erode(pair["target_mask"], np.ones((5, 5), np.uint8)) > 0
        lands = inner[my.round().astype(int).clip(0, h - 1), mx.round().astype(int).clip(0, w - 1)]
        keep = pair["valid"] & lands
        assert keep.sum() > 100
        back = cv2.remap(pair["observed"], mx, my, cv2.INTER_LINEAR)[..., :2] * [w, h]
        err = np.linalg.norm(back - np.stack([xs, ys], -1), axis=-1)[keep]
        assert np.percentile(err, 99) < 0.05, (seed, np.percentile(err, 99))
        shifted = cv2.remap(pair["observed"], mx + 1, my, cv2.INTER_LINEAR)[..., :2] * [w, h]
        assert np.median(np.linalg.norm(shifted - np.stack([xs, ys], -1), axis=-1)[keep]) > 0.5


def test_pure_shift_gives_a_constant_flow_within_the_range():
    cfg = FlowPairConfig(rotation_deg=0.0, tilt_deg=0.0, scale=(1.0, 1.0), nonrigid=0.0, shift=0.1)
    for seed in range(5):
        pair = make_flow_pair(np.random.default_rng(seed), cfg, 64, 80)
        f = pair["flow"][pair["valid"]]
        np.testing.assert_allclose(f, np.broadcast_to(f[0], f.shape), atol=1e-4)
        assert abs(f[0, 0]) <= 0.1 * 80 + 1e-4 and abs(f[0, 1]) <= 0.1 * 64 + 1e-4
        assert not pair["flow"][~pair["valid"]].any()


def test_plane_homography_is_the_projection_of_the_moved_plane():
    """H maps a pixel to where its point on the plane (depth 1, through the crop's centre) projects after
    the rigid motion X -> R (X - C) + C + T, computed here point by point in 3D."""
    h, w, f = 60, 80, 90.0
    R = cv2.Rodrigues(np.array([0.3, -0.2, 0.25]))[0]
    T = np.array([0.05, -0.03, 0.1])
    H = plane_homography(R, T, f, h, w)
    rng = np.random.default_rng(0)
    uv = rng.uniform(0, [w, h], (50, 2))
    X = np.c_[(uv - [w / 2, h / 2]) / f, np.ones(50)]  # on the plane z = 1
    C = np.array([0.0, 0.0, 1.0])
    Y = (X - C) @ R.T + C + T
    expected = Y[:, :2] / Y[:, 2:] * f + [w / 2, h / 2]
    got = np.c_[uv, np.ones(50)] @ H.T
    np.testing.assert_allclose(got[:, :2] / got[:, 2:], expected, atol=1e-9)
    # a tilt about the image's x axis foreshortens: rows move by different amounts, columns keep their order
    tilt = plane_homography(cv2.Rodrigues(np.array([math.radians(25), 0, 0]))[0], np.zeros(3), f, h, w)
    top, bottom = (tilt @ [w / 2, 5, 1]), (tilt @ [w / 2, h - 5, 1])
    assert not math.isclose((top[1] / top[2]) - 5, (bottom[1] / bottom[2]) - (h - 5), abs_tol=0.5)


def test_pairs_are_a_function_of_seed_and_index():
    ds = FlowPairDataset(FlowPairConfig(count=10), (48, 64), seed=3)
    a, b, c = ds[4], ds[4], ds[5]
    assert len(ds) == 10
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert not torch.equal(a["observed"], c["observed"])
    assert a["observed"].shape == (3, 48, 64) and a["flow"].shape == (2, 48, 64) and a["mask"].shape == (1, 48, 64)
    other = FlowPairDataset(FlowPairConfig(count=10), (48, 64), seed=4)[4]
    assert not torch.equal(a["observed"], other["observed"])


def _cfg(out, **optim) -> TrainConfig:
    data = apply_overrides(load_yaml(CONFIGS / "flow_tiny.yaml"), [f"out_dir={out}"])
    data["optim"].update(optim)
    return build_config(TrainConfig, data)


def test_network_overfits_a_few_pairs(registry, tmp_path):
    """The flow head learns: on 4 fixed pairs the end-point error falls well below that of predicting no
    motion (ratio 1)."""
    torch.manual_seed(0)
    cfg = _cfg(tmp_path, steps=150, batch_size=4, warmup_steps=10, lr=0.002)
    cfg.pairs = {"count": 4, "occluders": [0, 0]}
    task = build_task(cfg, registry)
    ds, collate = task.train_dataset()
    batch = collate([ds[i] for i in range(4)])
    opt = torch.optim.Adam(task.model.parameters(), lr=2e-3)
    ratios = []
    for _ in range(150):
        loss, parts = task.step(batch, torch.device("cpu"), torch.Generator())
        opt.zero_grad()
        loss.backward()
        opt.step()
        ratios.append(parts["metric/flow_epe_ratio"])
    assert ratios[0] > 0.9 and np.mean(ratios[-5:]) < 0.2, (ratios[:5], ratios[-5:])


def test_pretrained_weights_start_a_deepim_run(registry, tmp_path):
    cfg = _cfg(tmp_path / "flow", steps=2, batch_size=2, warmup_steps=1)
    flow = Trainer(cfg, build_task(cfg, registry), torch.device("cpu"), progress=False)
    flow.train()
    weights = tmp_path / "flow" / "final.safetensors"
    arch, _, meta = read_metadata(weights)
    assert arch == "deepim" and meta["task"] == "flow" and meta["step"] == 2
    deepim = build_config(TrainConfig, apply_overrides(load_yaml(CONFIGS / "deepim_tiny.yaml"),
                                                        [f"out_dir={tmp_path / 'deepim'}"]))
    trainer = Trainer(deepim, build_task(deepim, registry), torch.device("cpu"), progress=False)
    trainer.init_from(weights)
    trained = dict(flow.model.named_parameters())
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(p, trained[name], msg=name)


def test_config_errors_name_the_key(registry, tmp_path):
    cfg = _cfg(tmp_path)
    cfg.pairs = {"tilt_degrees": 10}
    with pytest.raises(ConfigError, match="tilt_degrees"):
        build_task(cfg, registry)
    cfg = _cfg(tmp_path)
    cfg.model["flow_head"] = False
    with pytest.raises(ValueError, match="model.flow_head"):
        build_task(cfg, registry)
    deepim = build_config(TrainConfig, load_yaml(CONFIGS / "deepim_tiny.yaml"))
    deepim.pairs = {"tilt_deg": 10}
    with pytest.raises(ValueError, match="pairs"):
        build_task(deepim, registry)
    for key, value in (("count", 0), ("occluders", [3, 1]), ("shape_size", [0.5, 1.5]), ("scale", [0.0, 1.0]),
                       ("blur_prob", 2.0), ("tilt_deg", -5.0), ("field_of_view_deg", 180.0)):
        cfg = _cfg(tmp_path)
        cfg.pairs = {key: value}
        with pytest.raises(ValueError, match=f"pairs.{key}"):
            build_task(cfg, registry).train_dataset()


def test_two_process_ddp_run_with_an_unused_pose_head(tmp_path):
    """The pose head gets no gradient in this task; DistributedDataParallel must be told, or its second step
    fails. Runs the CLI under torchrun with 2 gloo processes for 3 steps."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29523", "-m", "ros2_pose6d.training.cli_train", str(CONFIGS / "flow_tiny.yaml"),
                        "--no-progress", "--device", "cpu", "--set", f"out_dir={tmp_path}", "--set", "optim.steps=3",
                        "--set", "optim.batch_size=4", "--set", "model.input_size=[32, 40]"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_metadata(tmp_path / "final.safetensors")[2]["step"] == 3
