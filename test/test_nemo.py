"""NeMo: differentiable render-and-compare loss, pose optimisation, occlusion reasoning, banks, bad input.

The optimisation and occlusion tests use ideal image features (the neural mesh's own features rendered
at the true pose, clutter features elsewhere): they check the inference machinery independently of how
well a feature net is trained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, needs_lmo, refine_lmo_from_perturbed_truth

from ros2_pose6d.estimation.nemo_core import NeuralMeshes, clutter_score, render_compare, visible_vertices
from ros2_pose6d.estimation.nemo_refiner import NemoRefiner, rotation_prior
from ros2_pose6d.estimation.refine_common import paste_crop_mask
from ros2_pose6d.estimation.types import Frame, PoseEstimate
from ros2_pose6d.geometry.rotations import axis_angle_to_matrix, geodesic_angle, rotation_about_axis
from ros2_pose6d.nets.backbone import BackboneConfig
from ros2_pose6d.nets.nemo import NemoConfig, NemoModel, NeuralMeshBank
from ros2_pose6d.objects.registry import ObjectRegistry
from ros2_pose6d.render.rasterize import RasterSettings

Kf = torch.tensor([[[90.0, 0, 31.5], [0, 90.0, 31.5], [0, 0, 1]]])


@pytest.fixture(scope="module")
def registry():
    return ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")


@pytest.fixture(scope="module")
def meshes(registry):
    return NeuralMeshes(registry, 300)


def _bank(n: int, C: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, C, generator=g), dim=1), F.normalize(torch.randn(64, C, generator=g), dim=1)


def _ideal_features(meshes, vf, clutter, idx, R, t, hw=(64, 64)):
    """Image features: the vertex features rendered at the true pose, clutter features elsewhere."""
    r = meshes.renderer.render(idx, R, t, Kf, RasterSettings(*hw), shade=False, vertex_features=vf)
    bg = clutter[torch.arange(hw[0] * hw[1]) % len(clutter)].reshape(1, *hw, -1)
    return torch.where(r.mask[..., None], F.normalize(r.features, dim=-1), bg), r.mask


def test_loss_gradient_matches_finite_differences(registry):
    meshes = NeuralMeshes(registry, 300, dtype=torch.float64)
    vf, clutter = _bank(meshes.num_vertices)
    vf, clutter = vf.double(), clutter.double()
    idx = torch.tensor([2])
    f64 = torch.float64
    R0 = rotation_about_axis(torch.tensor([[1.0, 0.5, 0]], dtype=f64), torch.tensor([0.6], dtype=f64))
    t0 = torch.tensor([[0.0, 0.0, 0.7]], dtype=torch.float64)
    feats, _ = _ideal_features(meshes, vf, clutter, idx, R0, t0 + torch.tensor([[0.01, 0, 0]], dtype=torch.float64))
    clog = clutter_score(feats, clutter, 0.1)
    Kd = Kf.double()

    def loss_at(params):
        R = axis_angle_to_matrix(params[:, :3]) @ R0
        return render_compare(meshes, vf, feats, clog, idx, R, t0 + params[:, 3:], Kd, 0.1)[0].sum()
    p = torch.tensor([[0.02, -0.01, 0.03, 0.004, -0.003, 0.01]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss_at(p), p)
    eps = 1e-6
    fd = torch.zeros(6, dtype=torch.float64)
    for k in range(6):
        d = torch.zeros_like(p)
        d[0, k] = eps
        fd[k] = (loss_at(p.detach() + d) - loss_at(p.detach() - d)) / (2 * eps)
    assert grad.abs().max() > 1e-3  # the loss does depend on the pose
    torch.testing.assert_close(grad[0], fd, atol=1e-5 * float(fd.abs().max()) + 1e-8, rtol=1e-4)


def _refiner(registry, meshes, vf, clutter, steps=80):
    cfg = NemoConfig(backbone=BackboneConfig(18, 8), feature_dim=vf.shape[1], input_size=(64, 64), mesh_vertices=300,
                     clutter_size=len(clutter), temperature=0.1, steps=steps, lr_rotation=0.03, lr_translation=0.003)
    model = NemoModel(cfg, meshes.num_vertices)
    model.bank.vertex_features.copy_(vf)
    model.bank.clutter.copy_(clutter)
    return NemoRefiner(model, registry, meshes=meshes)


def test_optimisation_from_a_perturbed_pose_reduces_the_error(registry, meshes):
    vf, clutter = _bank(meshes.num_vertices)
    ref = _refiner(registry, meshes, vf, clutter)
    idx = torch.tensor([1])
    R_gt = rotation_about_axis(torch.tensor([[0.3, 1.0, 0.2]]), torch.tensor([0.8]))
    t_gt = torch.tensor([[0.01, -0.01, 0.75]])
    feats, _ = _ideal_features(meshes, vf, clutter, idx, R_gt, t_gt)
    R0 = rotation_about_axis(torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([float(np.deg2rad(20.0))])) @ R_gt
    t0 = t_gt + torch.tensor([[0.02, -0.015, 0.015]])  # 2.9 cm
    R, t, _loss, _occluded, _mask = ref.optimise(feats, Kf, idx, R0, t0, steps=80, hypotheses=1)
    err_r0, err_r = float(geodesic_angle(R0, R_gt)), float(geodesic_angle(R, R_gt))
    err_t0, err_t = float((t0 - t_gt).norm()), float((t - t_gt).norm())
    assert err_r < 0.5 * err_r0 and err_t < 0.5 * err_t0, (np.rad2deg([err_r0, err_r]), err_t0, err_t)


def _start_120deg_off(meshes):
    """Ideal features of object 1 and a start 120 deg off its true rotation (a detector's wrong rotation)."""
    vf, clutter = _bank(meshes.num_vertices)
    idx = torch.tensor([1])
    R_gt = rotation_about_axis(torch.tensor([[0.3, 1.0, 0.2]]), torch.tensor([0.8]))
    t_gt = torch.tensor([[0.01, -0.01, 0.75]])
    feats, _ = _ideal_features(meshes, vf, clutter, idx, R_gt, t_gt)
    R0 = rotation_about_axis(torch.tensor([[1.0, -0.5, 0.3]]), torch.tensor([float(np.deg2rad(120.0))])) @ R_gt
    return vf, clutter, idx, R_gt, t_gt, feats, R0


@pytest.mark.parametrize("prior_weight, outlier", [(0.0, 0.0), (0.05, 0.01)])
def test_rotation_search_recovers_a_start_far_off_in_rotation(registry, meshes, prior_weight, outlier):
    """NeMo's initialisation: from a start 120 deg off (a detector's wrong rotation), descent alone stays in
    the wrong basin; scoring a 144-rotation grid first and descending from its best finds the truth, also
    under the shipped robust pose prior (weight 0.05, outlier share 0.01)."""
    from dataclasses import replace
    vf, clutter, idx, R_gt, t_gt, feats, R0 = _start_120deg_off(meshes)
    t0 = t_gt + torch.tensor([[0.01, 0.005, 0.01]])
    errors = {}
    for search in (0, 144):
        ref = _refiner(registry, meshes, vf, clutter, steps=60)
        ref.cfg = replace(ref.cfg, prior_weight=prior_weight, prior_rotation_outlier=outlier, search_rotations=search,
                          search_keep=2)
        R, _, _, _, _ = ref.optimise(feats, Kf, idx, R0, t0, steps=60, hypotheses=1)
        errors[search] = float(torch.rad2deg(geodesic_angle(R, R_gt)))
    assert errors[0] > 60.0 and errors[144] < 10.0, errors
    best = ref.search_rotations(feats, clutter_score(feats, clutter, 0.1), Kf, idx, t0, 144, 2)
    assert best.shape == (2, 1, 3, 3)
    assert float(torch.rad2deg(geodesic_angle(best[0], R_gt))) < 45.0  # the grid's widest gap is 42 deg


def test_a_gaussian_rotation_prior_pulls_a_searched_start_back_and_the_robust_one_does_not(registry, meshes):
    """Under the plain Gaussian prior a rotation 120 deg from the given one costs more (0.66 at weight 0.03)
    than the image gains (0.29 here), so the search cannot override it; the robust prior caps that cost at
    weight x -log(outlier) (0.14)."""
    from dataclasses import replace
    vf, clutter, idx, R_gt, t_gt, feats, R0 = _start_120deg_off(meshes)
    errors = {}
    for outlier in (0.0, 0.01):
        ref = _refiner(registry, meshes, vf, clutter, steps=60)
        ref.cfg = replace(ref.cfg, prior_weight=0.03, prior_rotation_outlier=outlier, search_rotations=144,
                          search_keep=2)
        R, _, _, _, _ = ref.optimise(feats, Kf, idx, R0, t_gt, steps=60, hypotheses=1)
        errors[outlier] = float(torch.rad2deg(geodesic_angle(R, R_gt)))
    assert errors[0.0] > 60.0 and errors[0.01] < 10.0, errors


def test_robust_rotation_prior_is_quadratic_near_and_levels_off_far():
    m = torch.tensor([0.0, 0.01, 1.0, 100.0, 1e4])
    torch.testing.assert_close(rotation_prior(m, 0.0), 0.5 * m)
    robust = rotation_prior(m, 0.01)
    assert abs(float(robust[0])) < 1e-6
    torch.testing.assert_close(robust[1], torch.tensor(0.005 * 0.99), rtol=1e-3, atol=0)  # (1 - p) m / 2 near 0
    assert bool((robust.diff() >= 0).all()) and float(robust[-1]) == pytest.approx(-np.log(0.01), rel=1e-6)
    cfg = NemoConfig(backbone=BackboneConfig(18, 8), feature_dim=16, clutter_size=64, prior_rotation_outlier=1.0)
    with pytest.raises(ValueError, match="prior_rotation_outlier"):
        NemoRefiner(NemoModel(cfg, 10), ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml"))


@pytest.mark.parametrize("key", ["search_rotations", "search_keep"])
def test_a_negative_search_setting_is_refused_by_name(key):
    cfg = NemoConfig(backbone=BackboneConfig(18, 8), feature_dim=16, clutter_size=64, **{key: -1})
    with pytest.raises(ValueError, match=f"model.{key}: -1 is negative"):
        NemoRefiner(NemoModel(cfg, 10), ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml"))


def test_pose_prior_holds_the_start_pose_in_proportion_to_its_weight(registry, meshes):
    """MAP refinement: a strong prior around the start pose keeps it there, a weak one still lets the image
    evidence pull the pose towards the truth; the returned loss is the data term alone (the fit error)."""
    from dataclasses import replace
    vf, clutter = _bank(meshes.num_vertices)
    idx = torch.tensor([1])
    R_gt = rotation_about_axis(torch.tensor([[0.3, 1.0, 0.2]]), torch.tensor([0.8]))
    t_gt = torch.tensor([[0.01, -0.01, 0.75]])
    feats, _ = _ideal_features(meshes, vf, clutter, idx, R_gt, t_gt)
    R0 = rotation_about_axis(torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([float(np.deg2rad(20.0))])) @ R_gt
    t0 = t_gt + torch.tensor([[0.02, -0.015, 0.015]])
    moved = {}
    for weight in (0.0, 0.002, 1e4):
        ref = _refiner(registry, meshes, vf, clutter)
        ref.cfg = replace(ref.cfg, prior_weight=weight)
        R, t, loss, _, _ = ref.optimise(feats, Kf, idx, R0, t0, steps=80, hypotheses=3)
        moved[weight] = (float(geodesic_angle(R, R0)), float((t - t0).norm()))
        clog = clutter_score(feats, ref.model.bank.clutter, 0.1)
        data_term = render_compare(meshes, vf, feats, clog, idx, R, t, Kf, 0.1)[0]
        torch.testing.assert_close(loss, data_term)
        if weight == 0.002:
            assert float(geodesic_angle(R, R_gt)) < 0.25 * float(geodesic_angle(R0, R_gt))
            assert float((t - t_gt).norm()) < 0.25 * float((t0 - t_gt).norm())
    assert moved[1e4][0] < np.deg2rad(1.0) and moved[1e4][1] < 0.002, moved
    assert moved[0.002][0] < moved[0.0][0] + 1e-6 or moved[0.002][1] < moved[0.0][1] + 1e-6, moved


def test_occlusion_map_marks_the_occluder_and_visibility_follows(registry, meshes):
    vf, clutter = _bank(meshes.num_vertices)
    ref = _refiner(registry, meshes, vf, clutter)
    idx = torch.tensor([4])
    R_gt = rotation_about_axis(torch.tensor([[1.0, 0.2, 0.0]]), torch.tensor([0.5]))
    t_gt = torch.tensor([[0.0, 0.0, 0.7]])
    feats, mask = _ideal_features(meshes, vf, clutter, idx, R_gt, t_gt)
    occluder = torch.zeros_like(mask)
    occluder[:, :, 32:] = True  # a box covering the right half of the image hides part of the object
    feats = torch.where(occluder[..., None], clutter[3].expand_as(feats), feats)
    truth = mask & occluder
    _, _, _, occluded, rmask = ref.optimise(feats, Kf, idx, R_gt, t_gt, steps=0, hypotheses=1)
    iou = float((occluded & truth).sum() / (occluded | truth).sum())
    assert iou >= 0.5
    visibility = 1 - float(occluded.sum() / rmask.sum())
    true_vis = 1 - float(truth.sum() / mask.sum())
    assert abs(visibility - true_vis) <= 0.15


def test_zoom_window_points_span_each_whole_mesh(meshes):
    """The points that size NeMo's zoom windows (training and refinement alike) reach every extreme of the
    simplified mesh; a prefix of the vertex list covered only a slab of the object."""
    pts = meshes.extent_points(torch.arange(len(meshes.meshes)))
    for i, m in enumerate(meshes.meshes):
        full = np.ptp(np.asarray(m.vertices), 0)
        assert np.all(np.ptp(pts[i].numpy(), 0) >= 0.9 * full), (i, np.ptp(pts[i].numpy(), 0), full)


def test_visible_vertices_are_the_front_ones(registry, meshes):
    R = torch.eye(3)[None]
    t = torch.tensor([[0.0, 0.0, 0.7]])
    vis = visible_vertices(meshes, torch.tensor([6]), R, t, Kf, (64, 64))  # the can, seen along its axis
    v = meshes.meshes[6].vertices[(vis.vertex - int(meshes.renderer.vert_offsets[6])).numpy()]
    assert len(v) > 10 and np.all(v[:, 2] < v[:, 2].min() + 0.5 * np.ptp(meshes.meshes[6].vertices[:, 2]))


def test_banks_update_by_momentum_and_queue():
    bank = NeuralMeshBank(5, 4, 3)
    f = F.normalize(torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]]), dim=1)
    bank.update_vertices(torch.tensor([2, 2]), f, momentum=0.5)  # first sight: takes the feature outright
    torch.testing.assert_close(bank.vertex_features[2], f[0])
    g = F.normalize(torch.tensor([[0.0, 1.0, 0, 0]]), dim=1)
    untouched = bank.vertex_features[3].clone()
    bank.update_vertices(torch.tensor([2]), g, momentum=0.5)  # then momentum
    torch.testing.assert_close(bank.vertex_features[2], F.normalize(0.5 * f[0] + 0.5 * g[0], dim=0))
    torch.testing.assert_close(bank.vertex_features[3], untouched)
    bank.enqueue_clutter(torch.eye(4)[:2])
    bank.enqueue_clutter(torch.eye(4)[2:4])
    torch.testing.assert_close(bank.clutter, torch.eye(4)[[3, 1, 2]])  # FIFO wrapped around
    assert int(bank.clutter_ptr) == 1


def test_paste_crop_mask_puts_the_crop_back():
    crop = np.zeros((4, 4), bool)
    crop[:2, :2] = True
    out = paste_crop_mask(crop, np.array([1.5, 1.5, 9.5, 9.5]), (12, 12))
    assert out[2:6, 2:6].all() and out.sum() == 16


def test_refine_returns_unrefinable_estimates_with_a_reason(registry, meshes):
    vf, clutter = _bank(meshes.num_vertices)
    ref = _refiner(registry, meshes, vf, clutter, steps=3)
    frame = Frame(np.zeros((120, 160, 3), np.uint8), np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]]))
    out = ref.refine(frame, [PoseEstimate(1, np.eye(3), np.array([0, 0, -1.0])),
                             PoseEstimate(2, np.eye(3), np.array([0.0, 0.0, 0.7]))])
    assert out[0].stage == "detected" and "behind" in out[0].notes[0]
    assert out[1].stage == "refined" and out[1].occlusion.shape == (120, 160) and 0 <= out[1].visibility <= 1


def test_a_diverging_optimisation_keeps_its_best_pose(registry, meshes):
    """Huge steps throw the translation behind the camera: no crash, the best finite pose comes back."""
    vf, clutter = _bank(meshes.num_vertices)
    ref = _refiner(registry, meshes, vf, clutter, steps=6)
    ref.cfg.lr_translation = 5.0  # metres per step
    frame = Frame(np.zeros((120, 160, 3), np.uint8), np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]]))
    (out,) = ref.refine(frame, [PoseEstimate(2, np.eye(3), np.array([0.0, 0.0, 0.7]))])
    assert np.isfinite(out.t).all() and out.t[2] > 0.3 and np.isfinite(out.R).all()


def test_shipped_weights_reduce_a_20deg_3cm_perturbation(registry):
    """The shipped (CPU-trained) NeMo weights on synthetic frames: from 20 deg / 3 cm perturbations of the
    truth, the mean rotation and translation errors go down (12 single-object frames, fixed seeds)."""
    from ros2_pose6d.training.synth import SynthConfig, render_sample
    from ros2_pose6d.training.synth.generate import SceneContext

    from ros2_pose6d.resources import weights_dir
    ref = NemoRefiner.from_weights(weights_dir() / "nemo_demo.safetensors", registry)
    ctx = SceneContext(registry)
    cfg = SynthConfig(height=240, width=320, focal=(290.0, 290.0), objects_per_image=(1, 1), distractors=(0, 0),
                      distance=(0.5, 0.7))
    rng, gen = np.random.default_rng(7), torch.Generator().manual_seed(0)
    before_r, after_r, before_t, after_t = [], [], [], []
    for _ in range(12):
        s = render_sample(ctx, cfg, rng)
        r = s.records[0]
        dR = rotation_about_axis(torch.randn(1, 3, generator=gen), torch.tensor([float(np.deg2rad(20.0))]))
        d = torch.randn(3, generator=gen).numpy()
        R0, t0 = dR.double().numpy()[0] @ r.R, r.t + d / np.linalg.norm(d) * 0.03
        (out,) = ref.refine(Frame(s.rgb, s.K), [PoseEstimate(r.obj_id, R0, t0)])
        angle = lambda A, B: np.degrees(np.arccos(np.clip((np.trace(A.T @ B) - 1) / 2, -1, 1)))  # noqa: E731
        before_r.append(angle(R0, r.R))
        after_r.append(angle(out.R, r.R))
        before_t.append(np.linalg.norm(t0 - r.t))
        after_t.append(np.linalg.norm(out.t - r.t))
    assert np.mean(after_r) < np.mean(before_r) and np.mean(after_t) < np.mean(before_t), \
        (np.mean(after_r), np.mean(after_t))


def test_weights_for_another_object_set_are_refused_clearly():
    from ros2_pose6d.nets.checkpoint import CheckpointError
    from ros2_pose6d.resources import weights_dir
    lmo_like = ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")
    lmo_like.objects = lmo_like.objects[:3]  # a different object set
    with pytest.raises(CheckpointError, match="another object set"):
        NemoRefiner.from_weights(weights_dir() / "nemo_demo.safetensors", lmo_like)


@needs_lmo
def test_shipped_lmo_weights_lift_perturbed_poses_on_the_real_frames(tmp_path):
    """The LM-O report's NeMo claim, reproduced by evaluate on the 50 real frames: from DeepIM-perturbed ground
    truth the shipped LM-O weights (synthetic renders only) raise ADD(-S) 0.1d, proj 5px and AR and lower the
    visibility error. (5cm5deg is not claimed: see models/weights/lmo_report.md.)"""
    from ros2_pose6d.resources import weights_dir
    before, after = refine_lmo_from_perturbed_truth("nemo", weights_dir() / "nemo_lmo.safetensors", tmp_path / "eval")
    for key in ("ADD(-S) 0.1d", "proj 5px", "AR"):
        assert after[key] > before[key] + 0.03, (key, before[key], after[key])
    assert after["vis MAE"] < before["vis MAE"] - 0.03
