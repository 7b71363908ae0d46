"""Synthetic data generator: BOP output that our reader takes, exact visibility, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO
from ros2_pose6d.training.synth import SynthConfig, generate_dataset, render_sample
from ros2_pose6d.training.synth import generate as synth_generate
from ros2_pose6d.training.synth.generate import GenerationError, SceneContext
from ros2_pose6d.training.synth.poses import look_at_rotation

from ros2_pose6d.config import ConfigError, build_config
from ros2_pose6d.io.bop import read_bop_split
from ros2_pose6d.objects.registry import ObjectRegistry

SMALL = SynthConfig(height=120, width=160, focal=(140.0, 150.0), objects_per_image=(2, 3), images_per_scene=3,
                    distractors=(0, 1))


@pytest.fixture(scope="module")
def registry():
    return ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")


@pytest.fixture(scope="module")
def dataset(registry, tmp_path_factory):
    return generate_dataset(registry, tmp_path_factory.mktemp("synth") / "train", 5, SMALL, seed=3, progress=False)


def test_written_split_reads_back_consistently(dataset):
    scenes = read_bop_split(dataset, load_masks=True)
    assert [len(s) for s in scenes] == [3, 2]  # images_per_scene = 3
    for scene in scenes:
        for frame in scene:
            assert frame.rgb.shape == (120, 160, 3) and frame.depth.shape == (120, 160)
            assert 2 <= len(frame.gt) <= 3
            for g, info in zip(frame.gt, scene.info[str(frame.im_id)]):
                assert g.mask_visib is not None
                visible = int(g.mask_visib.sum())
                assert visible == info["px_count_visib"]
                assert g.visib_fract == pytest.approx(visible / max(1, info["px_count_all"]), abs=1e-9)
                if visible:  # depth png holds the rendered depth to 0.1 mm at the visible pixels
                    z = frame.depth[g.mask_visib]
                    assert np.all(z > 0.2) and np.all(z < 1.5)
                np.testing.assert_allclose(g.R @ g.R.T, np.eye(3), atol=1e-6)


def test_fully_visible_object_has_visib_fract_one(registry):
    ctx = SceneContext(registry)
    cfg = SynthConfig(height=120, width=160, focal=(150.0, 150.0), distractors=(0, 0))
    K = np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]])
    sample = render_sample(ctx, cfg, np.random.default_rng(0), K=K, obj_indices=np.array([0]),
                           R=look_at_rotation(0.3, 0.5, 0.0)[None], t=np.array([[0.0, 0.0, 0.6]]))
    rec = sample.records[0]
    assert rec.px_count_all > 100 and rec.visib_fract == 1.0
    assert rec.bbox_obj == rec.bbox_visib


def test_occluded_object_visibility_is_the_visible_share(registry):
    ctx = SceneContext(registry)
    cfg = SynthConfig(height=120, width=160, focal=(150.0, 150.0), distractors=(0, 0))
    K = np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]])
    R = np.stack([look_at_rotation(0.0, 0.3, 0.0)] * 2)
    t = np.array([[0.0, 0.0, 0.8], [0.04, 0.0, 0.5]])  # the second object stands in front of the first
    s = render_sample(ctx, cfg, np.random.default_rng(0), K=K, obj_indices=np.array([3, 0]), R=R, t=t)
    back, front = s.records
    assert front.visib_fract == 1.0
    assert 0.0 < back.visib_fract < 1.0
    assert back.px_count_visib == int((s.masks[0] & ~s.masks[1]).sum())


def test_same_seed_same_images_with_two_workers(registry, dataset, tmp_path):
    again = generate_dataset(registry, tmp_path / "again", 5, SMALL, seed=3, workers=2, progress=False)
    for a, b in zip(read_bop_split(dataset), read_bop_split(again)):
        for fa, fb in zip(a, b):
            np.testing.assert_array_equal(fa.rgb, fb.rgb)
            assert [g.obj_id for g in fa.gt] == [g.obj_id for g in fb.gt]


def test_refuses_to_overwrite_and_leaves_nothing_on_failure(registry, dataset, tmp_path, monkeypatch):
    with pytest.raises(GenerationError, match="not empty"):
        generate_dataset(registry, dataset, 1, SMALL, progress=False)
    calls = []
    real = synth_generate.render_sample

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("renderer broke")
        return real(*args, **kwargs)
    monkeypatch.setattr(synth_generate, "render_sample", fail_second)
    with pytest.raises(RuntimeError, match="renderer broke"):
        generate_dataset(registry, tmp_path / "broken", 3, SMALL, progress=False)
    assert not (tmp_path / "broken").exists() and not (tmp_path / "broken.partial").exists()


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="'hieght'"):
        build_config(SynthConfig, {"hieght": 100})
    with pytest.raises(ConfigError, match="distance"):
        build_config(SynthConfig, {"distance": "far"})
    with pytest.raises(ConfigError, match="distance"):
        build_config(SynthConfig, {"distance": [2.0, 1.0]})


def test_backgrounds_are_valid_images_and_clutter_has_sharp_edges():
    """Every background kind is a (h, w, 3) float image in [0, 1]; the clutter kind exists for its edges (real
    desks are full of them), so its gradient energy must clearly exceed every other kind's."""
    import cv2
    from ros2_pose6d.training.synth import backgrounds

    def edge_energy(img: np.ndarray) -> float:
        grey = img.mean(-1)
        gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
        return float(np.abs(gx).mean() + np.abs(gy).mean())

    energies = {}
    for kind in backgrounds.KINDS:
        imgs = [kind(np.random.default_rng(s), 96, 128) for s in range(6)]
        for img in imgs:
            assert img.shape == (96, 128, 3) and img.dtype == np.float32
            assert img.min() >= 0 and img.max() <= 1
        energies[kind.__name__] = np.mean([edge_energy(i) for i in imgs])
    others = [e for k, e in energies.items() if k != "_clutter"]
    assert energies["_clutter"] > 1.5 * max(others), energies
    out = backgrounds.random_background(np.random.default_rng(0), 96, 128)
    assert out.shape == (96, 128, 3) and out.dtype == np.float32


def test_background_clutter_lies_behind_the_objects_and_leaves_their_annotations(registry):
    """``background_shapes`` fills the background with shaded 3D primitives behind the far distance: the
    object's pose and visible mask are those of the same seed without them, and far more pixels hold
    rendered geometry, all of it behind the object."""
    ctx = SceneContext(registry)
    base = dict(height=120, width=160, focal=(150.0, 150.0), distance=(0.45, 0.8), distractors=(0, 0))
    K = np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]])
    pose = dict(K=K, obj_indices=np.array([0]), R=look_at_rotation(0.3, 0.5, 0.0)[None], t=np.array([[0.0, 0.0, 0.5]]))
    plain = render_sample(ctx, SynthConfig(**base), np.random.default_rng(4), **pose)
    busy = render_sample(ctx, SynthConfig(**base, background_shapes=(30, 30), background_shape_size=(0.03, 0.05)),
                         np.random.default_rng(4), **pose)
    np.testing.assert_array_equal(plain.masks_visib[0], busy.masks_visib[0])
    assert plain.records[0].visib_fract == busy.records[0].visib_fract == 1.0
    obj = busy.masks[0]
    assert (plain.depth > 0).sum() == obj.sum()  # only the object was rendered
    added = (busy.depth > 0) & ~obj
    assert added.mean() > 0.03
    assert busy.depth[added].min() > busy.depth[obj].max()


def test_marker_board_and_new_options_keep_old_seeds(registry):
    """The fiducial board is black and white squares; with the new options off, backgrounds and the first 12
    distractor meshes are what they were for a seed (the shipped weights' datasets can be regenerated)."""
    from ros2_pose6d.training.synth import backgrounds
    from ros2_pose6d.training.synth.distractors import make_distractors

    rng = np.random.default_rng(9)
    plain = backgrounds.random_background(rng, 96, 128, 0.0)
    legacy = np.random.default_rng(9)  # the steps before the board existed: no draw may be added
    kind = backgrounds.KINDS[int(legacy.integers(len(backgrounds.KINDS)))]
    img = kind(legacy, 96, 128)
    if kind is not backgrounds._value_noise:
        img = 0.8 * img + 0.2 * backgrounds._value_noise(legacy, 96, 128)
    np.testing.assert_array_equal(plain, img.astype(np.float32))
    assert rng.random() == legacy.random()  # the next image's draws are unchanged too
    board = backgrounds.random_background(np.random.default_rng(9), 96, 128, marker_prob=1.0)
    changed = np.abs(board - plain).max(-1) > 1e-6
    assert changed.mean() > 0.2
    grey = board[changed].mean(-1)
    assert (grey < 0.15).mean() > 0.15 and (grey > 0.7).mean() > 0.3  # black squares on a white board
    for a, b in zip(make_distractors(0, 12), make_distractors(0, 32)[:12]):
        np.testing.assert_array_equal(a.vertices, b.vertices)
        np.testing.assert_array_equal(a.vertex_colors, b.vertex_colors)
    with pytest.raises(ConfigError, match="marker_prob"):
        build_config(SynthConfig, {"marker_prob": 1.5})
    with pytest.raises(ConfigError, match="background_shapes"):
        build_config(SynthConfig, {"background_shapes": [5, 2]})
