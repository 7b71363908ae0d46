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


def test_table_layout_rests_upright_objects_on_the_plane_without_overlap():
    """Objects of the table layout stand on the plane: their lowest point at height 0, the model's +z within
    the tilt of the table normal when upright, footprints apart when crowded objects are dropped."""
    from ros2_pose6d.training.synth.table import place_on_table, resting_rotation, table_camera

    rng = np.random.default_rng(5)
    K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
    box = np.array([[x, y, z] for x in (-0.03, 0.05) for y in (-0.04, 0.02) for z in (-0.06, 0.01)])
    placed = 0
    for _ in range(20):
        cam = table_camera(rng, (0.5, 1.2), (20.0, 85.0), 30.0)
        assert cam.centre[2] > 0  # above the table
        rotations = [resting_rotation(rng, 1.0, 10.0) for _ in range(5)]
        taken: list = []
        kept, R, t = place_on_table(rng, cam, K, (240, 320), [box] * 5, rotations, 0.05, 1.0, taken, 3.0,
                                    keep_crowded=False)
        placed += len(kept)
        for i, k in enumerate(kept):
            in_table = (box @ R[i].T + t[i] - cam.t) @ cam.R  # R^T (x - t): camera -> table frame
            assert in_table[:, 2].min() == pytest.approx(0.0, abs=1e-9)
            np.testing.assert_allclose(cam.R.T @ R[i], rotations[k], atol=1e-12)  # object-to-table as drawn
            assert np.degrees(np.arccos(rotations[k][2, 2])) <= 10.0 + 1e-9  # model +z leans at most 10 deg
        for j, (p, r) in enumerate(taken):  # footprint circles never overlap (min_separation 1)
            for q, r2 in taken[j + 1:]:
                assert np.linalg.norm(p - q) >= r + r2 - 1e-12
    assert placed >= 90  # of 100: small boxes nearly always find a free spot
    lying = [resting_rotation(np.random.default_rng(s), 0.0, 10.0) for s in range(200)]
    assert np.mean([np.degrees(np.arccos(np.clip(R[2, 2], -1, 1))) > 30 for R in lying]) > 0.6  # any orientation


def test_table_top_is_the_textured_plane_the_camera_sees(monkeypatch):
    """The warped table texture lands where an independent ray cast meets the table square, with the texel
    the ray hits; rays above the horizon never see it."""
    from ros2_pose6d.training.synth import table as table_mod

    T = table_mod.TEXTURE_SIZE
    ramp = np.zeros((T, T, 3), np.float32)
    ramp[..., 0] = np.arange(T)[None, :] / (T - 1)  # red: texture column, green: texture row
    ramp[..., 1] = np.arange(T)[:, None] / (T - 1)
    monkeypatch.setattr(table_mod, "random_background", lambda rng, h, w, marker_prob=0.0: ramp.copy())
    K = np.array([[200.0, 0, 79.5], [0, 200.0, 59.5], [0, 0, 1]])
    # the last table reaches behind the camera, whose upper rows look above the horizon
    for seed, elevation, side in ((0, 20.0, 0.6), (1, 55.0, 0.6), (2, 88.0, 0.6), (3, 6.0, 4.0)):
        rng = np.random.default_rng(seed)
        cam = table_mod.table_camera(rng, (0.8, 0.8), (elevation, elevation), 20.0)
        top = table_mod.table_surface(rng, cam, K, (120, 160), (side, side), 0.0)
        expect = np.zeros((120, 160), bool)
        errors = []
        for v in range(120):
            for u in range(160):
                p = table_mod.ray_to_table(cam, K, np.array([u, v]))
                if p is None:
                    continue
                tex = (p - top.centre) / top.side * T + T / 2 - 0.5  # texel coordinates (column, row)
                if np.all(tex >= 0.5) and np.all(tex <= T - 1.5):
                    expect[v, u] = True
                    errors.append(np.abs(top.image[v, u, :2] * (T - 1) - tex).max())
        assert expect.sum() > 300
        assert (top.seen == expect).mean() > 0.995  # only the square's outline may differ
        assert top.seen[expect].mean() > 0.99
        assert max(errors) < 0.05  # the right texel, to OpenCV's 1/32 sub-pixel steps
        if elevation < 10:  # the horizon crosses the image: the sky rows see no table
            assert (~top.seen[:10]).all() and top.seen[-10:].all()


def test_table_layout_writes_consistent_bop_scenes(registry, tmp_path):
    """A table-layout split reads back, and its objects stand on one plane: every object's lowest model point
    lies at the same height along the common normal of the upright ones."""
    cfg = SynthConfig(height=120, width=160, focal=(140.0, 150.0), objects_per_image=(3, 4), images_per_scene=4,
                      layout="table", upright_prob=1.0, upright_tilt=0.0, background_shapes=(3, 6),
                      background_shape_size=(0.02, 0.05), marker_prob=1.0)
    split = generate_dataset(registry, tmp_path / "table", 4, cfg, seed=1, progress=False)
    points = {o.obj_id: np.asarray(o.mesh.vertices) for o in registry}
    frames = [f for scene in read_bop_split(split, load_masks=True) for f in scene]
    assert len(frames) == 4
    for frame in frames:
        assert 3 <= len(frame.gt) <= 4
        up = frame.gt[0].R[:, 2]  # model +z of an upright object: the table normal, camera frame
        heights = []
        for g in frame.gt:
            np.testing.assert_allclose(g.R[:, 2], up, atol=1e-6)
            heights.append(((points[g.obj_id] @ g.R.T + g.t) @ up).min())  # height along the normal, + t_table
        assert np.ptp(heights) < 1e-6
    with pytest.raises(ValueError, match="table layout draws its own poses"):
        render_sample(SceneContext(registry), cfg, np.random.default_rng(0), K=np.eye(3), obj_indices=np.array([0]),
                      R=np.eye(3)[None], t=np.array([[0.0, 0.0, 0.5]]))
    with pytest.raises(ConfigError, match="layout"):
        build_config(SynthConfig, {"layout": "tabel"})
    with pytest.raises(ConfigError, match="table_elevation"):
        build_config(SynthConfig, {"table_elevation": [0.0, 40.0]})
    with pytest.raises(ConfigError, match="upright_prob"):
        build_config(SynthConfig, {"upright_prob": 2.0})
    with pytest.raises(ConfigError, match="upright_tilt"):
        build_config(SynthConfig, {"upright_tilt": -5.0})
