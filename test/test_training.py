"""Training: every tiny config trains from a fresh clone (finite, decreasing loss), resume continues the
step count and reproduces the losses, DDP over 2 gloo processes gives the single-process gradients,
CLIs fail with one clear line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from ros2_pose6d.training.datasets import EmptyDatasetError
from ros2_pose6d.training.synth import SynthConfig, generate_dataset
from ros2_pose6d.training.tasks import build_task
from ros2_pose6d.training.trainer import StepBatchSampler, TrainConfig, Trainer
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ros2_pose6d.config import ConfigError, apply_overrides, build_config, load_yaml
from ros2_pose6d.nets.checkpoint import CheckpointError, compact_weights, load_weights, read_metadata, save_weights
from ros2_pose6d.nets.deepim import DeepimConfig, DeepimNet
from ros2_pose6d.objects.registry import ObjectRegistry

CONFIGS = REPO / "training" / "configs"


@pytest.fixture(scope="module")
def registry():
    return ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")


@pytest.fixture(scope="module")
def split(registry, tmp_path_factory):
    cfg = SynthConfig(height=96, width=128, focal=(112.0, 120.0), objects_per_image=(1, 3), distractors=(0, 1),
                      distance=(0.5, 0.8), images_per_scene=50)
    return generate_dataset(registry, tmp_path_factory.mktemp("data") / "train", 12, cfg, seed=11, progress=False)


def read_safetensors_metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _cfg(name: str, split, out, **optim) -> TrainConfig:
    data = load_yaml(CONFIGS / f"{name}_tiny.yaml")
    data = apply_overrides(data, [f"data.train={split}", f"out_dir={out}", "optim.ckpt_every=1000"])
    data["optim"].update(optim)
    return build_config(TrainConfig, data)


@pytest.fixture
def one_thread():
    """Bit-reproducible runs: the parallel CPU kernels accumulate gradients in thread order."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", ["detector", "deepim", "nemo", "flow"])
def test_tiny_config_trains_and_resume_reproduces(name, registry, split, tmp_path, one_thread):
    torch.manual_seed(0)
    cfg = _cfg(name, split, tmp_path / "a", steps=12, batch_size=4, warmup_steps=1, log_every=2)
    task = build_task(cfg, registry)
    losses = Trainer(cfg, task, torch.device("cpu"), progress=False).train()
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert (tmp_path / "a" / "final.safetensors").is_file() and any((tmp_path / "a" / "tb").iterdir())
    # interrupted after 5 steps and resumed: the step count continues and the losses repeat the straight run
    torch.manual_seed(0)
    part = _cfg(name, split, tmp_path / "b", steps=12, batch_size=4, warmup_steps=1, log_every=2)
    t1 = Trainer(part, build_task(part, registry), torch.device("cpu"), progress=False)
    first = t1.train(stop_at=5)
    full = _cfg(name, split, tmp_path / "b", steps=12, batch_size=4, warmup_steps=1, log_every=2)
    torch.manual_seed(123)  # resume must not depend on the fresh initialisation
    t2 = Trainer(full, build_task(full, registry), torch.device("cpu"), progress=False)
    assert t2.try_resume() and t2.step == 5
    rest = t2.train()
    assert t2.step == 12 and len(rest) == 7
    np.testing.assert_allclose(first + rest, losses, rtol=1e-3, atol=1e-5)
    arch, config, meta = read_metadata(tmp_path / "b" / "final.safetensors")
    assert arch == task.arch and meta["step"] == 12 and "model" in config


def test_resumed_deepim_run_continues_the_translation_warm_up(registry, split, tmp_path, one_thread):
    """The perturbation's translation warm-up is a function of the trainer's step: a run resumed at step 3
    draws the noise of step 3 (not of step 0) and repeats the losses of the straight run."""
    noise = []  # the translation std (x) each step used

    def run(out, stop_at=None, resume=False):
        cfg = _cfg("deepim", split, out, steps=8, batch_size=4, warmup_steps=1)
        cfg.loss["trans_warmup_steps"] = 6
        task = build_task(cfg, registry)
        scheduled = task.trans_std
        task.trans_std = lambda: noise.append(scheduled()[0]) or scheduled()
        trainer = Trainer(cfg, task, torch.device("cpu"), progress=False)
        if resume:
            assert trainer.try_resume() and trainer.step == 3
        return trainer.train(stop_at=stop_at)

    torch.manual_seed(0)
    straight = run(tmp_path / "a")
    assert noise == pytest.approx([0.01 * min(1, s / 6) for s in range(8)])
    noise.clear()
    torch.manual_seed(0)
    first = run(tmp_path / "b", stop_at=3)
    rest = run(tmp_path / "b", resume=True)
    assert noise == pytest.approx([0.01 * min(1, s / 6) for s in range(8)])
    np.testing.assert_allclose(first + rest, straight, rtol=1e-3, atol=1e-5)


def test_step_sampler_is_a_function_of_the_step():
    a = StepBatchSampler(10, 4, seed=1, start_step=0, total_steps=7)
    b = StepBatchSampler(10, 4, seed=1, start_step=4, total_steps=7)
    assert list(a)[4:] == list(b)
    ranks = [StepBatchSampler(10, 4, 1, 0, 3, rank=r, world=2).batch(2) for r in range(2)]
    assert ranks[0] + ranks[1] == a.batch(2)


def test_weights_from_another_architecture_are_refused(registry, split, tmp_path):
    cfg = _cfg("deepim", split, tmp_path, steps=1, batch_size=2, warmup_steps=1)
    Trainer(cfg, build_task(cfg, registry), torch.device("cpu"), progress=False).train()
    other = build_task(_cfg("nemo", split, tmp_path / "n", steps=1), registry)
    with pytest.raises(CheckpointError, match="holds 'deepim' weights"):
        load_weights(tmp_path / "final.safetensors", other.model, "nemo")
    small = build_task(build_config(TrainConfig, apply_overrides(load_yaml(CONFIGS / "deepim_tiny.yaml"),
                                                                 ["model.width=0.25"])), registry)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(tmp_path / "final.safetensors", small.model, "deepim")


def test_init_from_starts_a_fresh_run_from_given_weights(split, tmp_path, capsys):
    """Fine-tuning: a run with init_from starts at step 0 from those weights; a checkpoint already in out_dir
    wins (resume), and a file that is not such weights is refused before anything is written."""
    from ros2_pose6d.training.cli_train import main

    def train(out, steps, lr, init=None):
        args = [str(CONFIGS / "deepim_tiny.yaml"), "--no-progress", "--set", f"data.train={split}", "--set",
                f"out_dir={out}", "--set", f"optim.steps={steps}", "--set", f"optim.lr={lr}", "--set",
                "optim.batch_size=2", "--set", "optim.warmup_steps=1"]
        return main(args + (["--set", f"init_from={init}"] if init else []))

    assert train(tmp_path / "src", 2, 1e-3) == 0
    src = tmp_path / "src" / "final.safetensors"
    assert train(tmp_path / "dst", 1, 0.0, src) == 0  # lr 0: the weights stay those it started from
    assert "starting deepim from the weights in" in capsys.readouterr().out
    a, b = load_file(str(src)), load_file(str(tmp_path / "dst" / "final.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_metadata(tmp_path / "dst" / "final.safetensors")[2]["step"] == 1
    assert train(tmp_path / "dst", 2, 1e-3, src) == 0
    assert "resuming deepim from step 1" in capsys.readouterr().out
    assert read_metadata(tmp_path / "dst" / "final.safetensors")[2]["step"] == 2
    with pytest.raises(CheckpointError, match="not found"):
        train(tmp_path / "none", 1, 1e-3, tmp_path / "missing.safetensors")
    assert not (tmp_path / "none").exists()


def test_init_from_adds_a_depth_matcher_and_train_only_trains_just_it(split, tmp_path, capsys):
    """Weights without DeepIM's depth matcher start a run that has one: the matcher starts fresh (said so),
    and with optim.train_only only it learns. Other missing tensors and an unknown train_only prefix are
    refused."""
    from ros2_pose6d.training.cli_train import main

    def train(out, *sets):
        args = [str(CONFIGS / "deepim_tiny.yaml"), "--no-progress", "--set", f"data.train={split}", "--set",
                f"out_dir={out}", "--set", "optim.steps=2", "--set", "optim.batch_size=2", "--set",
                "optim.warmup_steps=1", "--set", "model.norm=group", "--set", "model.pose_level=conv4_1"]
        for s in sets:
            args += ["--set", s]
        return main(args)

    assert train(tmp_path / "src") == 0
    src = tmp_path / "src" / "final.safetensors"
    matcher = ["model.depth_matcher=true", "model.matcher_channels=8", "model.matcher_scales=5"]
    assert train(tmp_path / "dst", *matcher, f"init_from={src}", "optim.train_only=[depth_matcher.]") == 0
    assert "tensors not in it start fresh (depth_matcher." in capsys.readouterr().out
    a, b = load_file(str(src)), load_file(str(tmp_path / "dst" / "final.safetensors"))
    added = sorted(set(b) - set(a))
    assert added and all(k.startswith("depth_matcher.") for k in added)
    assert all(torch.equal(a[k], b[k]) for k in a)  # frozen: the rest is the source's
    fresh = DeepimNet(build_config(DeepimConfig, read_metadata(tmp_path / "dst" / "final.safetensors")[1]["model"]))
    assert any(not torch.equal(fresh.state_dict()[k], b[k]) for k in added if "weight" in k)  # it learned
    with pytest.raises(ValueError, match="optim.train_only: no parameter"):
        train(tmp_path / "bad", f"init_from={src}", "optim.train_only=[decoder.]")
    cut = {k: v for k, v in a.items() if k != "fc.0.weight"}
    save_file(cut, str(tmp_path / "cut.safetensors"), metadata=read_safetensors_metadata(src))
    with pytest.raises(CheckpointError, match="missing"):
        train(tmp_path / "cut", *matcher, f"init_from={tmp_path / 'cut.safetensors'}")


@pytest.mark.parametrize("refine, occlusion", [(0, False), (1, True)])
def test_deepim_flow_matcher_learns_from_the_visible_masks(registry, split, tmp_path, one_thread, refine, occlusion):
    """With model.flow_matcher the instance dataset carries each object's visible mask (as written in
    mask_visib/), the step logs the matcher's loss and end-point error (of both levels with its stride-2
    level; with its occlusion head, that head's cross-entropy and accuracy), and its loss falls over a short run
    with only the matcher training. A split without mask_visib/ is refused with its name."""
    torch.manual_seed(0)
    cfg = _cfg("deepim", split, tmp_path / "a", steps=30, batch_size=4, warmup_steps=1, log_every=1, lr=3e-3,
               train_only=["flow_matcher."])
    cfg.model.update(flow_matcher=True, flow_matcher_channels=8, flow_matcher_radius=2, flow_matcher_blocks=0,
                     flow_matcher_refine=refine, flow_matcher_occlusion=occlusion)
    task = build_task(cfg, registry)
    dataset, collate = task.train_dataset()
    si, im_id, k = dataset.items[0]
    written = dataset.scenes[si].frame(im_id).gt[k].mask_visib
    assert written is not None and written.any()
    assert torch.equal(dataset[0].mask_visib, torch.as_tensor(written))
    assert "mask_visib" in collate([dataset[0], dataset[1]])
    trainer = Trainer(cfg, task, torch.device("cpu"), progress=False)
    seen = []
    original = task.step

    def step(batch, device, gen):
        loss, parts = original(batch, device, gen)
        seen.append(parts)
        return loss, parts

    task.step = step
    trainer.train()
    match = [p["match"] for p in seen]
    assert all(np.isfinite(match)) and all("metric/match_epe" in p for p in seen if p["match"] > 0)
    assert all(("metric/match_fine_epe" in p) == bool(refine) for p in seen if p["match"] > 0)
    assert np.mean(match[-8:]) < 0.9 * np.mean(match[:8]), match
    assert all(("occlusion" in p and "metric/occlusion_accuracy" in p) == occlusion for p in seen)
    assert all(np.isfinite(p["occlusion"]) for p in seen if occlusion)
    # a split without visible masks cannot train the matcher: refused by name before any step
    bare = tmp_path / "bare"
    shutil.copytree(split, bare)
    for folder in bare.glob("*/mask_visib"):
        shutil.rmtree(folder)
    cfg.data.train = str(bare)
    with pytest.raises(EmptyDatasetError, match="no mask_visib/ folder"):
        build_task(cfg, registry).train_dataset()


def test_compacted_weights_load_as_float32_with_half_precision_values(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.BatchNorm1d(64))
    save_weights(tmp_path / "w.safetensors", net, "toy", {"model": {"a": 1}}, {"step": 7},
                 extra_tensors={"bank": torch.randn(5, 4)})
    compact_weights(tmp_path / "w.safetensors", tmp_path / "h.safetensors")
    assert read_metadata(tmp_path / "h.safetensors") == read_metadata(tmp_path / "w.safetensors")
    assert (tmp_path / "h.safetensors").stat().st_size < 0.6 * (tmp_path / "w.safetensors").stat().st_size
    other = torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.BatchNorm1d(64))
    _, _, extra = load_weights(tmp_path / "h.safetensors", other, "toy")
    assert extra["bank"].dtype == torch.float32 and other[0].weight.dtype == torch.float32
    for a, b in zip(net.state_dict().values(), other.state_dict().values()):
        assert a.dtype == b.dtype  # the int64 BatchNorm counter stays an integer
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    assert not torch.equal(other[0].weight, net[0].weight)  # really stored in half precision

    with torch.no_grad():
        net[0].weight[0, 0] = 1e6  # beyond float16's 65504
    save_weights(tmp_path / "big.safetensors", net, "toy", {})
    with pytest.raises(CheckpointError, match="float16 range"):
        compact_weights(tmp_path / "big.safetensors", tmp_path / "big_h.safetensors")
    assert not (tmp_path / "big_h.safetensors").exists()
    umask = os.umask(0o022)
    try:  # readable by others, as any file the user writes (safetensors alone makes it 0600)
        save_weights(tmp_path / "m.safetensors", net, "toy", {})
        compact_weights(tmp_path / "w.safetensors", tmp_path / "m16.safetensors")
        assert [(tmp_path / n).stat().st_mode & 0o777 for n in ("m.safetensors", "m16.safetensors")] == [0o644] * 2
    finally:
        os.umask(umask)


def test_config_errors_name_the_key():
    data = load_yaml(CONFIGS / "detector_tiny.yaml")
    with pytest.raises(ConfigError, match="'lr_typo'"):
        build_config(TrainConfig, apply_overrides(data, ["optim.lr_typo=1"]))
    with pytest.raises(ConfigError, match="optim.steps"):
        build_config(TrainConfig, apply_overrides(data, ["optim.steps=many"]))
    with pytest.raises(ConfigError, match="task"):
        build_config(TrainConfig, apply_overrides(data, ["task=yolo"]))
    cfg = build_config(TrainConfig, apply_overrides(data, ["model.transformer.d_modle=8"]))
    with pytest.raises(ConfigError, match="'d_modle'"):
        build_task(cfg, None)


def test_exponent_numbers_are_numbers(tmp_path):
    """Configs read numbers as YAML 1.2 does: PyYAML alone (YAML 1.1) returns '5e-5' and '1e4' as strings,
    and `--set optim.lr=5e-5` (the command in the shipped detector YAML) was refused as not a number."""
    data = load_yaml(CONFIGS / "detector_tiny.yaml")
    cfg = build_config(TrainConfig, apply_overrides(data, ["optim.lr=5e-5", "optim.weight_decay=1E-4",
                                                           "loss.w_visibility=2.5e0", "optim.steps=12"]))
    assert cfg.optim.lr == 5e-5 and cfg.optim.weight_decay == 1e-4 and cfg.loss["w_visibility"] == 2.5
    assert cfg.optim.steps == 12 and isinstance(cfg.optim.steps, int)  # integers stay integers
    (tmp_path / "c.yaml").write_text("optim: {lr: 3e-4, grad_clip: .5e1}\nout_dir: 1e3x\n")
    read = load_yaml(tmp_path / "c.yaml")
    assert read["optim"] == {"lr": 3e-4, "grad_clip": 5.0} and read["out_dir"] == "1e3x"
    with pytest.raises(ConfigError, match="optim.lr"):  # still a clear error for a non-number
        build_config(TrainConfig, apply_overrides(data, ["optim.lr=1e-"]))


def test_several_training_splits_are_one_dataset(registry, split, tmp_path):
    """data.train may list splits (e.g. two generate runs with other backgrounds): the dataset holds every
    instance of each, in the order given; an empty list is refused."""
    from ros2_pose6d.training.datasets import DetectionDataset, EmptyDatasetError, InstanceDataset

    one = InstanceDataset(str(split), registry)
    both = InstanceDataset([str(split), str(split)], registry)
    assert len(both) == 2 * len(one)
    a, b = both[0], both[len(one)]
    assert a.label == b.label and torch.equal(a.R, b.R)
    det = DetectionDataset([str(split), str(split)], registry, (48, 64))
    assert len(det) == 2 * len(DetectionDataset(str(split), registry, (48, 64)))
    with pytest.raises(EmptyDatasetError):
        InstanceDataset([], registry)
    cfg = build_config(TrainConfig, {"data": {"train": [str(split), str(split)]}})
    assert cfg.data.train == [str(split), str(split)]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_train_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: detector\nout_dir: x\noptim: {stepz: 3}\n")
    r = _cli("ros2_pose6d.training.cli_train", str(bad))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "'stepz'" in r.stderr
    r = _cli("ros2_pose6d.training.cli_train", str(CONFIGS / "deepim_tiny.yaml"), "--set",
             f"data.train={tmp_path / 'nowhere'}")
    assert r.returncode == 2 and "nowhere" in r.stderr and r.stderr.strip().count("\n") == 0
    empty = tmp_path / "empty"
    (empty / "000000").mkdir(parents=True)
    (empty / "000000" / "scene_camera.json").write_text("{}")
    r = _cli("ros2_pose6d.training.cli_train", str(CONFIGS / "deepim_tiny.yaml"), "--set", f"data.train={empty}",
             "--set", f"out_dir={tmp_path / 'out'}")
    assert r.returncode == 2 and "no instance" in r.stderr
    assert not (tmp_path / "out").exists()  # nothing left behind


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc/*/stat: the parent is the field after the state)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_sigterm_saves_a_checkpoint_and_resume_continues(split, tmp_path, workers):
    """A scheduler's SIGTERM (or kill -INT of a background run) keeps the steps done so far. The signal goes
    to the whole process group, as schedulers and ``pkill -f`` send it: data-loader workers included."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "ros2_pose6d.training.cli_train", str(CONFIGS / "deepim_tiny.yaml"), "--no-progress",
            "--set", f"data.train={split}", "--set", f"out_dir={out}", "--set", "optim.steps=100000",
            "--set", "optim.ckpt_every=100000", "--set", f"optim.num_workers={workers}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    tb, t0 = out / "tb", time.time()
    while proc.poll() is None and not (tb.is_dir() and any(tb.iterdir())) and time.time() - t0 < 300:
        time.sleep(0.2)  # until the training loop has started
    time.sleep(1.0)
    # a group signal in its worst order: the workers first (they must outlive it), then the main process
    children = _children(proc.pid)
    assert len(children) >= workers
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = read_metadata(out / "last.safetensors")[2]["step"]
    r = _cli("ros2_pose6d.training.cli_train", str(CONFIGS / "deepim_tiny.yaml"), "--no-progress",
             "--set", f"data.train={split}", "--set", f"out_dir={out}", "--set", f"optim.steps={step + 1}")
    assert r.returncode == 0, r.stderr
    assert f"resuming deepim from step {step} " in r.stdout and read_metadata(out / "final.safetensors")[2]["step"] \
        == step + 1


def test_generate_help_lists_every_config_key_with_its_default():
    """--set takes SynthConfig keys: --help names each one (a key added later must show up too)."""
    import dataclasses

    from ros2_pose6d.training.synth import SynthConfig

    r = _cli("ros2_pose6d.training.cli_generate", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())  # argparse wraps the epilog
    for f in dataclasses.fields(SynthConfig):
        assert f"{f.name}=" in text, f.name
    assert "layout=free" in text and "table_elevation=[15.0, 80.0]" in text


def test_generate_cli_missing_mesh_is_one_line_and_leaves_nothing(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "models_info.json").write_text('{"1": {"diameter": 100.0}}')
    r = _cli("ros2_pose6d.training.cli_generate", str(tmp_path / "out"), "-n", "2", "--models-dir", str(models))
    assert r.returncode == 2 and "mesh" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


DDP_WORKER = r"""
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, os.environ["TEST_DIR"])
from ros2_pose6d.config import apply_overrides, build_config, load_yaml
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.training.tasks import build_task
from ros2_pose6d.training.trainer import StepBatchSampler, TrainConfig, Trainer, teardown_distributed
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
if world > 1:
    dist.init_process_group("gloo")
torch.manual_seed(0)
reg = ObjectRegistry.from_yaml(os.environ["OBJECTS"])
data = apply_overrides(load_yaml(os.environ["CONFIG"]), ["data.train=" + os.environ["SPLIT"], "data.jitter=0.0",
                                                         "out_dir=" + os.environ["OUT"],
                                                         *os.environ.get("OVERRIDES", "").split()])
# DATA_RANK/DATA_WORLD: one process computing the gradient of one rank's share of a distributed batch
data_rank, data_world = int(os.environ.get("DATA_RANK", rank)), int(os.environ.get("DATA_WORLD", world))
cfg = build_config(TrainConfig, data)
task = build_task(cfg, reg)
tr = Trainer(cfg, task, torch.device("cpu"), progress=False)
ds, collate = task.train_dataset()
idx = StepBatchSampler(len(ds), 4, 0, 0, 1, data_rank, data_world).batch(0)
loss, _ = task.step(collate([ds[i] for i in idx]), torch.device("cpu"), torch.Generator().manual_seed(data_rank))
(tr.ddp or tr.model).zero_grad()
loss.backward()
if rank == 0:
    torch.save({n: p.grad for n, p in tr.model.named_parameters() if p.grad is not None}, os.environ["OUT"] + "/g.pt")
teardown_distributed()
"""


def _run_ddp_worker(tmp_path, env: dict, name: str, ranks: int, port: int) -> dict:
    """The worker's gradients, in one process (ranks 1) or under torchrun with ``ranks`` gloo ranks."""
    out = tmp_path / name
    out.mkdir()
    if ranks == 1:
        cmd = [sys.executable, str(tmp_path / "worker.py")]
        env = {"RANK": "0", "WORLD_SIZE": "1"} | env
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
               str(port), str(tmp_path / "worker.py")]
    r = subprocess.run(cmd, env=env | {"OUT": str(out)}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[:3000] + "\n...\n" + r.stderr[-1500:]  # a rank's own error comes first
    return torch.load(out / "g.pt")


def test_ddp_two_processes_match_one(registry, split, tmp_path):
    """The detector's gradients (DETR target normalisation all-reduced) under 2 gloo ranks equal one process."""
    (tmp_path / "worker.py").write_text(DDP_WORKER)
    env = dict(os.environ, TEST_DIR=str(REPO / "test"), OBJECTS=str(REPO / "config" / "objects.yaml"),
               CONFIG=str(CONFIGS / "detector_tiny.yaml"), SPLIT=str(split), OMP_NUM_THREADS="1")
    g1 = _run_ddp_worker(tmp_path, env, "single", 1, 0)
    g2 = _run_ddp_worker(tmp_path, env, "ddp", 2, 29517)
    assert g1.keys() == g2.keys()
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], atol=1e-5, rtol=1e-3, msg=k)


def test_ddp_iterative_deepim_averages_the_ranks_gradients(registry, split, tmp_path):
    """DeepIM with loss.train_iterations 2 runs the network twice before one backward pass; under 2 gloo
    ranks the gradient is still the mean of what each rank's share of the batch gives alone."""
    (tmp_path / "worker.py").write_text(DDP_WORKER)
    env = dict(os.environ, TEST_DIR=str(REPO / "test"), OBJECTS=str(REPO / "config" / "objects.yaml"),
               CONFIG=str(CONFIGS / "deepim_tiny.yaml"), SPLIT=str(split), OMP_NUM_THREADS="1",
               OVERRIDES="loss.train_iterations=2 model.input_size=[48,64]")
    shares = [_run_ddp_worker(tmp_path, env | {"DATA_RANK": str(r), "DATA_WORLD": "2"}, f"rank{r}", 1, 0)
              for r in (0, 1)]
    ddp = _run_ddp_worker(tmp_path, env, "ddp", 2, 29518)
    assert ddp.keys() == shares[0].keys() and len(ddp) > 10
    for k in ddp:
        torch.testing.assert_close(ddp[k], (shares[0][k] + shares[1][k]) / 2, atol=1e-5, rtol=1e-3, msg=k)
    assert not torch.allclose(shares[0]["fc.0.weight"], shares[1]["fc.0.weight"])  # the shares differ


def test_evaluate_reports_initial_and_refined(registry, split, tmp_path):
    """Train tiny detector and DeepIM for a step each, then evaluate both ways: tables, CSV, plots, JSON."""
    for name in ("detector", "deepim"):
        cfg = _cfg(name, split, tmp_path / name, steps=1, batch_size=2, warmup_steps=1)
        Trainer(cfg, build_task(cfg, registry), torch.device("cpu"), progress=False).train()
    out = tmp_path / "eval"
    r = _cli("ros2_pose6d.training.cli_evaluate", str(split), "--init", "perturbed", "--refiner", "deepim",
             "--deepim", str(tmp_path / "deepim" / "final.safetensors"), "--max-frames", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ALL" in r.stdout and "initial" in r.stdout and "refined" in r.stdout
    import json
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["refined"]["ADD(-S) 0.1d"] <= 1 and summary["initial"]["n"] == summary["refined"]["n"]
    assert (out / "results.csv").is_file() and (out / "recall_curves.png").is_file()
    assert (out / "exact_parts.png").is_file() and "exact depth" in r.stdout
    # the gallery: the frames whose refined poses missed (up to the default 6; 3 frames here), named by rank
    missed = summary["refined"]["ADD(-S) 0.1d"] < 1
    pictures = sorted(p.name for p in (out / "gallery").glob("*.png")) if missed else []
    assert (1 <= len(pictures) <= 3) if missed else not (out / "gallery").exists()
    assert all(name.startswith(f"{k:02d}_") for k, name in enumerate(pictures, 1))
    assert all(0 <= summary[st][f"ADD(-S) 0.1d exact {k}"] <= 1 for st in ("initial", "refined")
               for k in ("rot", "lateral", "depth"))
    r = _cli("ros2_pose6d.training.cli_evaluate", str(split), "--detector",
             str(tmp_path / "detector" / "final.safetensors"), "--refiner", "deepim", "--deepim",
             str(tmp_path / "deepim" / "final.safetensors"), "--max-frames", "2", "--out", str(out / "det"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "detected" in r.stdout
    # at score 0 every (query, class) pair is a hypothesis (up to the detector's 50): as BOP, of each object only
    # as many as the frame has targets of it are scored, and without extra hypotheses only those are refined (one
    # CSV row each); the rest are counted as unscored
    r = _cli("ros2_pose6d.training.cli_evaluate", str(split), "--detector",
             str(tmp_path / "detector" / "final.safetensors"), "--refiner", "deepim", "--deepim",
             str(tmp_path / "deepim" / "final.safetensors"), "--score-threshold", "0", "--max-frames", "1",
             "--iterations", "1", "--gallery", "0", "--extra-hypotheses", "0", "--out", str(out / "all"))
    assert r.returncode == 0, r.stderr[-2000:]
    every = json.loads((out / "all" / "summary.json").read_text())
    beyond = every["estimates beyond the targets' count"]
    assert beyond["detected"] == beyond["refined"] > 0 and "estimates not scored" in r.stdout
    info = json.loads((split / "000000" / "scene_gt_info.json").read_text())
    first_gt = json.loads((split / "000000" / "scene_gt.json").read_text())
    im = min(info, key=int)
    targets = [g["obj_id"] for g, i in zip(first_gt[im], info[im]) if i["visib_fract"] >= 0.1]
    rows = (out / "all" / "results.csv").read_text().count("\n") - 1
    assert 1 <= rows <= len(targets)
    # with K extra hypotheses up to K more of each object are refined (CSV rows), ranked by their refined score
    r = _cli("ros2_pose6d.training.cli_evaluate", str(split), "--detector",
             str(tmp_path / "detector" / "final.safetensors"), "--refiner", "deepim", "--deepim",
             str(tmp_path / "deepim" / "final.safetensors"), "--score-threshold", "0", "--max-frames", "1",
             "--iterations", "1", "--gallery", "0", "--extra-hypotheses", "2", "--out", str(out / "extra"))
    assert r.returncode == 0, r.stderr[-2000:]
    extra_rows = (out / "extra" / "results.csv").read_text().count("\n") - 1
    assert rows < extra_rows <= len(targets) + 2 * len(set(targets))
    extra = json.loads((out / "extra" / "summary.json").read_text())
    assert extra["refined"]["n"] == every["refined"]["n"]
    assert extra["estimates beyond the targets' count"]["refined"] > 0
    # the scored poses by their score, per stage (what a threshold on the score keeps), in the JSON and a plot
    assert set(extra["by score"]) == {"detected", "refined"} and (out / "extra" / "by_score.png").is_file()
    assert sum(b["n"] for b in extra["by score"]["refined"].values()) <= extra_rows
    r = _cli("ros2_pose6d.training.cli_evaluate", str(split), "--detector", "x", "--extra-hypotheses", "-1")
    assert r.returncode != 0 and "--extra-hypotheses" in r.stderr
    # AP ranks every detection down to --ap-threshold; only those at --score-threshold become poses
    r = _cli("ros2_pose6d.training.cli_evaluate", str(split), "--detector",
             str(tmp_path / "detector" / "final.safetensors"), "--refiner", "none", "--score-threshold", "1.01",
             "--max-frames", "2", "--out", str(out / "strict"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "box AP50 (detector, detections scoring >= 0.05, class-wise NMS at IoU 0.7)" in r.stdout
    assert (out / "strict" / "results.csv").read_text().count("\n") == 1  # the header: no pose passed 1.01
    strict = json.loads((out / "strict" / "summary.json").read_text())
    assert strict["detected"]["ADD(-S) 0.1d"] == 0.0
    # --targets: a BOP targets file names the images and instances: here one instance of the first image
    first = json.loads((split / "000000" / "scene_gt.json").read_text())
    im = min(first, key=int)
    (out / "targets.json").write_text(json.dumps([{"scene_id": 0, "im_id": int(im), "inst_count": 1,
                                                   "obj_id": first[im][0]["obj_id"]}]))
    r = _cli("ros2_pose6d.training.cli_evaluate", str(split), "--detector",
             str(tmp_path / "detector" / "final.safetensors"), "--refiner", "none", "--targets",
             str(out / "targets.json"), "--out", str(out / "named"))
    assert r.returncode == 0, r.stderr[-2000:]
    named = json.loads((out / "named" / "summary.json").read_text())
    assert named["detected"]["n"] == 1 and named["targets file"] == "targets.json"
    assert named.get("targets not counted", {"detected": 0})["detected"] == len(first[im]) - 1
    # --min-visib 0: the targets under 10 % visible (BOP's rule, the default) count too
    r = _cli("ros2_pose6d.training.cli_evaluate", str(split), "--detector",
             str(tmp_path / "detector" / "final.safetensors"), "--refiner", "none", "--min-visib", "0",
             "--max-frames", "2", "--out", str(out / "every"))
    assert r.returncode == 0, r.stderr[-2000:]
    every = json.loads((out / "every" / "summary.json").read_text())
    hidden = strict.get("targets not counted", {}).get("detected", 0)
    assert every["detected"]["n"] == strict["detected"]["n"] + hidden and "targets not counted" not in every
    # --perturb 0,0,0,0 starts at the truth: every start is correct and the refiner's drift is what it adds
    r = _cli("ros2_pose6d.training.cli_evaluate", str(split), "--init", "perturbed", "--perturb", "0,0,0,0",
             "--refiner", "deepim", "--deepim", str(tmp_path / "deepim" / "final.safetensors"), "--max-frames", "2",
             "--out", str(out / "exact"))
    assert r.returncode == 0, r.stderr[-2000:]
    exact = json.loads((out / "exact" / "summary.json").read_text())
    assert exact["initial"]["ADD(-S) 0.1d"] == exact["initial"]["AR"] == 1.0
    assert exact["initial"]["median rot deg"] < 1e-3 and exact["initial"]["median depth mm"] < 1e-3
    assert exact["refined"]["n"] == exact["initial"]["n"] > 0
    assert exact["perturbation"] == {"rot_std_deg": 0.0, "x_std": 0.0, "y_std": 0.0, "z_std": 0.0}
    assert summary["perturbation"]["rot_std_deg"] == 15.0  # the default: DeepIM's
    for bad, message in ((["--perturb", "15,0.01"], "is not four finite non-negative numbers"),
                         (["--perturb", "15,0.01,0.01,-1"], "is not four finite non-negative numbers"),
                         (["--perturb", "15,0.01,0.01,inf"], "is not four finite non-negative numbers"),
                         (["--min-visib", "1.5"], "expected a visible fraction in [0, 1]"),
                         (["--targets", "t.json", "--min-visib", "0"], "leave out --min-visib"),
                         (["--targets", "missing.json"], "targets file not found"),
                         (["--gallery", "-1"], "cannot be negative"),
                         (["--detector", "d.safetensors", "--perturb", "1,0,0,0"], "--perturb sets the starts")):
        r = _cli("ros2_pose6d.training.cli_evaluate", str(split), "--refiner", "none", *bad)
        assert r.returncode == 2 and message in r.stderr, r.stderr
    r = _cli("ros2_pose6d.training.cli_evaluate", str(split), "--detector",
             str(tmp_path / "deepim" / "final.safetensors"), "--refiner", "none", "--out", str(out / "bad"))
    assert r.returncode == 2 and "holds 'deepim' weights" in r.stderr
