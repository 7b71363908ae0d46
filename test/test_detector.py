"""SMOPE detector: matcher optimality, model-order equivariance, loss terms, pose decoding, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import REPO
from ros2_pose6d.training.losses.matcher import HungarianMatcher, MatcherConfig
from ros2_pose6d.training.losses.point_matching import symmetric_point_matching
from ros2_pose6d.training.losses.smope_loss import SmopeCriterion, SmopeLossConfig

from ros2_pose6d.estimation.detector import Detector
from ros2_pose6d.estimation.model_set import build_model_set
from ros2_pose6d.estimation.types import Frame, FrameError
from ros2_pose6d.geometry.boxes import cxcywh_to_xyxy, generalized_box_iou, suppress_duplicates
from ros2_pose6d.geometry.rotations import egocentric_to_allocentric, matrix_to_rotation_6d, random_rotation
from ros2_pose6d.nets.backbone import BackboneConfig, ResNet
from ros2_pose6d.nets.deformable_transformer import TransformerConfig
from ros2_pose6d.nets.point_encoder import PointEncoderConfig
from ros2_pose6d.nets.smope import SmopeConfig, SmopeNet, decode_poses
from ros2_pose6d.objects.registry import ObjectRegistry

TINY = SmopeConfig(BackboneConfig(18, 8),
                   TransformerConfig(d_model=32, n_heads=4, n_points=2, enc_layers=1, dec_layers=2, ffn_dim=64,
                                     dropout=0.0, num_queries=6),
                   PointEncoderConfig(64, 32, 32), image_size=(64, 96))


@pytest.fixture(scope="module")
def registry():
    return ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")


@pytest.fixture(scope="module")
def models(registry):
    return build_model_set(registry, 64, 50)


def test_resnet_depths_give_strided_maps():
    for depth, c5 in ((18, 64), (34, 64), (50, 256)):
        feats = ResNet(BackboneConfig(depth, 8))(torch.zeros(1, 3, 64, 96))
        assert [f.shape[-2:] for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
        assert feats[-1].shape[1] == c5


def test_matcher_is_optimal_on_a_hand_case():
    # three queries, two targets; query 2 sits on target 0, query 0 on target 1, query 1 is far from both
    boxes = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.1, 0.9, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2]]])
    logits = torch.zeros(1, 3, 3)
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])}]
    (q, t), = HungarianMatcher(MatcherConfig())(logits, boxes, targets)
    assert dict(zip(q.tolist(), t.tolist())) == {0: 1, 2: 0}
    # brute force over all assignments gives the same total cost
    m = HungarianMatcher(MatcherConfig(cost_class=0.0))
    (q2, t2), = m(logits, boxes, targets)
    cost = lambda qi, ti: float(torch.cdist(boxes[0, [qi]], targets[0]["boxes"][[ti]], p=1) * 5  # noqa: E731
                                - 2 * generalized_box_iou(cxcywh_to_xyxy(boxes[0, [qi]]),
                                                          cxcywh_to_xyxy(targets[0]["boxes"][[ti]])))
    best = min(sum(cost(a, b) for a, b in zip(perm, range(2))) for perm in itertools.permutations(range(3), 2))
    assert sum(cost(a, b) for a, b in zip(q2.tolist(), t2.tolist())) == pytest.approx(best)


def test_matcher_with_no_targets():
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    (q, t), = HungarianMatcher()(torch.zeros(1, 4, 3), torch.rand(1, 4, 4), empty)
    assert len(q) == len(t) == 0


def test_batched_matching_equals_matching_each_image_alone():
    """The batch is matched with one cost matrix; splitting it per image must not mix images' targets."""
    g = torch.Generator().manual_seed(3)
    B, Q, C = 4, 6, 5
    logits, boxes = torch.randn(B, Q, C + 1, generator=g), torch.rand(B, Q, 4, generator=g) * 0.5 + 0.1
    targets = [{"labels": torch.randint(0, C, (n,), generator=g), "boxes": torch.rand(n, 4, generator=g) * 0.5 + 0.1}
               for n in (3, 0, 1, 6)]
    m = HungarianMatcher()
    together = m(logits, boxes, targets)
    for b in range(B):
        (q, t), = m(logits[b:b + 1], boxes[b:b + 1], targets[b:b + 1])
        assert torch.equal(together[b][0], q) and torch.equal(together[b][1], t)
    assert [len(q) for q, _ in together] == [3, 0, 1, 6]


def test_permuting_the_models_permutes_the_classes(models):
    torch.manual_seed(0)
    net = SmopeNet(TINY).eval()
    img = torch.randn(2, 3, 64, 96)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    with torch.no_grad():
        a = net(img, models.model_points)["logits"]
        b = net(img, models.model_points[perm])["logits"]
    torch.testing.assert_close(b[..., :-1], a[..., :-1][..., perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b[..., -1], a[..., -1], atol=1e-5, rtol=1e-5)


def test_kl_visibility_loss_keeps_its_gradient_where_the_sigmoid_saturates(models):
    """A detector that says 'fully visible' (logit 8) for an object 20 % visible: the L1 loss's gradient on the
    logit is the sigmoid's slope there (3e-4, over the 2 targets) and training cannot move it; the KL loss's is
    p - v (0.8, over the 2 targets). An unknown loss name is refused."""
    K = torch.tensor([[[80.0, 0, 47.5], [0, 80.0, 31.5], [0, 0, 1]]])
    tg = _targets(models, K)[0]
    tg["visib"] = torch.tensor([1.0, 0.2])
    Q = 4
    base = {"logits": torch.full((1, Q, 8), -10.0), "boxes": torch.full((1, Q, 4), 0.1), "rot6d": torch.zeros(1, Q, 6),
            "centre": torch.zeros(1, Q, 2), "log_depth": torch.zeros(1, Q)}
    base["logits"][0, 0, 2] = base["logits"][0, 1, 5] = 10.0
    base["boxes"][0, :2] = tg["boxes"]
    grads = {}
    for name in ("l1", "kl"):
        logit = torch.full((1, Q), 8.0, requires_grad=True)
        out = {k: v[None] for k, v in base.items()} | {"visibility": logit.sigmoid()[None],
                                                         "visibility_logit": logit[None]}
        total, _ = SmopeCriterion(SmopeLossConfig(visibility_loss=name))(out, [tg], K, (64, 96), models.loss_points,
                                                                          models.symmetries)
        total.backward()
        grads[name] = float(logit.grad[0, 1])  # the 20 % visible object's query
    assert 0 < grads["l1"] < 2e-4 and grads["kl"] == pytest.approx((torch.sigmoid(torch.tensor(8.0)) - 0.2) / 2)
    with pytest.raises(ValueError, match="loss.visibility_loss"):
        SmopeCriterion(SmopeLossConfig(visibility_loss="mse"))


def _targets(models, K):
    R = random_rotation(2, torch.Generator().manual_seed(1))
    t = torch.tensor([[0.02, -0.01, 0.6], [-0.05, 0.03, 0.8]])
    return [{"labels": torch.tensor([2, 5]), "boxes": torch.tensor([[0.5, 0.45, 0.2, 0.3], [0.3, 0.6, 0.15, 0.2]]),
             "R": R, "t": t, "visib": torch.tensor([1.0, 0.6])}]


@pytest.mark.parametrize("visibility_loss", ["l1", "kl"])
def test_every_loss_term_is_finite_and_positive(models, visibility_loss):
    torch.manual_seed(0)
    net = SmopeNet(TINY)
    K = torch.tensor([[[80.0, 0, 47.5], [0, 80.0, 31.5], [0, 0, 1]]])
    out = net(torch.randn(1, 3, 64, 96), models.model_points)
    crit = SmopeCriterion(SmopeLossConfig(visibility_loss=visibility_loss))
    total, parts = crit(out, _targets(models, K), K, TINY.image_size, models.loss_points, models.symmetries,
                        models.model_points[..., :3])
    for k in ("class", "bbox", "giou", "rot", "centre", "depth", "visibility", "model"):
        assert np.isfinite(parts[k]) and parts[k] > 0, k
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("visibility_loss", ["l1", "kl"])
def test_pose_terms_vanish_for_a_perfect_prediction(models, visibility_loss):
    """Build outputs that say exactly the truth: rotation, centre and depth terms are 0, box terms 0."""
    K = torch.tensor([[[80.0, 0, 47.5], [0, 80.0, 31.5], [0, 0, 1]]])
    tg = _targets(models, K)[0]
    Q, H, W = 4, 64, 96
    boxes = torch.full((1, Q, 4), 0.1)
    boxes[0, :2] = tg["boxes"]
    logits = torch.full((1, Q, 8), -10.0)
    logits[0, 0, 2] = logits[0, 1, 5] = 10.0
    logits[0, 2:, 7] = 10.0
    uvw = tg["t"] @ K[0].T
    uv_n = torch.stack([(uvw[:, 0] / uvw[:, 2] + 0.5) / W, (uvw[:, 1] / uvw[:, 2] + 0.5) / H], -1)
    centre = torch.zeros(1, Q, 2)
    centre[0, :2] = (uv_n - tg["boxes"][:, :2]) / tg["boxes"][:, 2:]
    rot6d = torch.zeros(1, Q, 6)
    rot6d[0, :2] = matrix_to_rotation_6d(egocentric_to_allocentric(tg["R"], tg["t"]))
    log_depth = torch.zeros(1, Q)
    log_depth[0, :2] = torch.log(tg["t"][:, 2] * W / 80.0)
    vis = torch.zeros(1, Q)
    vis[0, :2] = tg["visib"]
    vis_logit = torch.logit(vis.double().clamp(1e-12, 1 - 1e-12)).float()  # 1.0 -> a logit of ~28
    out = {k: v[None] for k, v in dict(logits=logits, boxes=boxes, rot6d=rot6d, centre=centre, log_depth=log_depth,
                                       visibility=vis, visibility_logit=vis_logit).items()}
    crit = SmopeCriterion(SmopeLossConfig(visibility_loss=visibility_loss))
    _, parts = crit(out, [tg], K, (H, W), models.loss_points, models.symmetries)
    for k in ("bbox", "giou", "rot", "centre", "depth", "visibility"):
        assert parts[k] == pytest.approx(0.0, abs=1e-5), k
    assert parts["class"] < 1e-6
    R, t = decode_poses(boxes[:, :2], rot6d[:, :2], centre[:, :2], log_depth[:, :2], K, (H, W))
    torch.testing.assert_close(t[0], tg["t"], atol=1e-5, rtol=0)
    torch.testing.assert_close(R[0], tg["R"], atol=1e-5, rtol=0)


def test_point_matching_is_zero_under_a_symmetry(registry, models):
    i = registry.index(6)  # the tray: 180 deg about z
    R = random_rotation(1, torch.Generator().manual_seed(3))
    S = models.symmetries[i, 1, :3, :3]
    assert not torch.allclose(S, torch.eye(3))
    loss = symmetric_point_matching(R @ S, R, models.loss_points[[i]], models.symmetries[[i]])
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    other = symmetric_point_matching(R @ S, R, models.loss_points[[0]], models.symmetries[[0]])  # the mug: none
    assert float(other) > 0.05


def test_detector_rejects_bad_input(registry, models):
    det = Detector(SmopeNet(TINY), registry, model_set=models)
    good = np.zeros((48, 64, 3), np.uint8)
    K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    assert isinstance(det.detect(Frame(good, K)), list)
    with pytest.raises(FrameError, match="uint8"):
        Frame(good.astype(np.float32), K)
    with pytest.raises(FrameError, match="H, W, 3"):
        Frame(good[..., 0], K)
    with pytest.raises(FrameError, match="finite"):
        Frame(good, np.full((3, 3), np.nan))
    with pytest.raises(FrameError, match="focal"):
        Frame(good, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="N_m >= 1"):
        SmopeNet(TINY).encode_models(torch.zeros(0, 64, 10))


def test_detector_rejects_nan_network_output(registry, models):
    net = SmopeNet(TINY)
    with torch.no_grad():
        net.pose_head.layers[-1].bias[8] = float("nan")
    det = Detector(net, registry, model_set=models, score_threshold=0.0)
    with pytest.raises(FrameError, match="non-finite"):
        det.detect(Frame(np.zeros((48, 64, 3), np.uint8), np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])))


@pytest.mark.slow
def test_tiny_detector_overfits_eight_images(registry, tmp_path):
    """A tiny configuration learns boxes and poses of 8 synthetic images: ADD(-S) < 0.1 d for >= 90 %."""
    from ros2_pose6d.training.synth import SynthConfig, generate_dataset
    from ros2_pose6d.training.tasks import build_task
    from ros2_pose6d.training.trainer import TrainConfig, Trainer

    from ros2_pose6d.config import apply_overrides, build_config, load_yaml
    from ros2_pose6d.eval.metrics import add_or_adds
    from ros2_pose6d.io.bop import read_bop_split

    torch.manual_seed(0)
    synth = SynthConfig(height=96, width=128, focal=(112.0, 120.0), objects_per_image=(1, 2), distractors=(0, 0),
                        distance=(0.5, 0.8))
    split = generate_dataset(registry, tmp_path / "train", 8, synth, seed=5, progress=False)
    data = apply_overrides(load_yaml(REPO / "training" / "configs" / "detector_tiny.yaml"),
                           [f"data.train={split}", f"out_dir={tmp_path / 'run'}", "data.jitter=0.0",
                            "optim.steps=400", "optim.batch_size=8", "optim.lr=0.002", "optim.ckpt_every=100000"])
    cfg = build_config(TrainConfig, data)
    task = build_task(cfg, registry)
    Trainer(cfg, task, torch.device("cpu"), progress=False).train()
    det = Detector(task.model, registry, score_threshold=0.3, model_set=task.models)
    hits = total = 0
    for scene in read_bop_split(split):
        for frame in scene:
            found = det.detect(Frame(frame.rgb, frame.K))
            for g in frame.gt:
                obj = registry[g.obj_id]
                errs = [add_or_adds(e.R, e.t, g.R, g.t, obj.mesh.vertices[::10], obj.info.is_symmetric)
                        for e in found if e.object_id == g.obj_id]
                total += 1
                hits += bool(errs) and min(errs) < 0.1 * obj.diameter
    assert total >= 8 and hits / total >= 0.9, (hits, total)


def _nms_reference(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> list[int]:
    """Textbook greedy NMS, one box at a time against every box already kept."""
    def iou_of(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
        return w * h / (area(a) + area(b) - w * h)
    kept: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(labels[k] != labels[i] or iou_of(boxes[k], boxes[i]) <= iou for k in kept):
            kept.append(i)
    return kept


def test_suppress_duplicates_hand_case_and_reference():
    # A; B: a weaker copy of A (IoU 0.81, same object) -> dropped; C: the same box as A but another object ->
    # kept; D: overlaps only the dropped B -> kept (a suppressed box suppresses nothing)
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 8.1], [0, 0, 10, 10], [0, 6, 10, 16]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([1, 1, 2, 1])
    assert suppress_duplicates(boxes, scores, labels, 0.7).tolist() == [0, 2, 3]
    assert suppress_duplicates(boxes, scores, labels, 0.85).tolist() == [0, 1, 2, 3]
    assert suppress_duplicates(boxes, scores, labels, 1.0).tolist() == [0, 1, 2, 3]
    assert suppress_duplicates(boxes[:0], scores[:0], labels[:0], 0.5).tolist() == []
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        n = int(torch.randint(1, 40, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 50
        b = torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 20], 1).double()
        s, lab = torch.rand(n, generator=g), torch.randint(0, 3, (n,), generator=g)
        thr = float(torch.rand(1, generator=g))
        assert suppress_duplicates(b, s, lab, thr).tolist() == _nms_reference(b.numpy(), s.numpy(), lab.numpy(), thr)


def test_detector_drops_duplicates_only(registry, models):
    """With nms_iou the detections are those of nms_iou=1 minus same-object boxes overlapping a better one."""
    from dataclasses import replace
    torch.manual_seed(3)
    net = SmopeNet(replace(TINY, transformer=replace(TINY.transformer, num_queries=12)))
    with torch.no_grad():  # queries 6-11: near copies of 0-5, i.e. near-duplicate detections
        w = net.transformer.query_embed.weight
        w[6:] = w[:6] + 1e-3 * torch.randn_like(w[:6])
    frame = Frame(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8),
                  np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]))
    all_dets = Detector(net, registry, model_set=models, score_threshold=0.0, nms_iou=1.0,
                        max_detections=100).detect(frame)
    kept = Detector(net, registry, model_set=models, score_threshold=0.0, nms_iou=0.5,
                    max_detections=100).detect(frame)
    assert len(kept) < len(all_dets) == 12 * len(models.obj_ids)  # threshold 0: every (query, class) pair
    b = torch.as_tensor(np.stack([d.bbox_xyxy for d in all_dets]))
    s = torch.tensor([d.score for d in all_dets])
    lab = torch.tensor([d.object_id for d in all_dets])
    expect = _nms_reference(b.numpy(), s.numpy(), lab.numpy(), 0.5)
    assert [(d.object_id, d.score) for d in kept] == [(all_dets[i].object_id, all_dets[i].score) for i in expect]
    with pytest.raises(ValueError, match="nms_iou"):
        Detector(net, registry, model_set=models, nms_iou=float("nan"))


def test_an_unsure_query_names_each_class_above_the_threshold(registry, models):
    """A query split between two classes gives a detection of each above the threshold, at the same box and
    pose; a threshold above 0.5 keeps only the likelier class (the deployment case)."""
    net = SmopeNet(TINY)
    forward = net.forward

    def split_first_query(*args, **kwargs):
        out = forward(*args, **kwargs)
        logits = torch.full_like(out["logits"], -30.0)
        logits[..., -1] = 0.0  # every query: no object
        logits[..., 0, :] = -30.0
        logits[..., 0, [1, 4, -1]] = torch.tensor([0.6, 0.35, 0.05]).log()  # query 0: class 1 or 4
        return {**out, "logits": logits}

    net.forward = split_first_query
    frame = Frame(np.zeros((48, 64, 3), np.uint8), np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]))
    low = Detector(net, registry, model_set=models, score_threshold=0.3).detect(frame)
    assert [(d.object_id, round(d.score, 4)) for d in low] == [(models.obj_ids[1], 0.6), (models.obj_ids[4], 0.35)]
    np.testing.assert_array_equal(low[0].bbox_xyxy, low[1].bbox_xyxy)
    np.testing.assert_array_equal(low[0].t, low[1].t)
    high = Detector(net, registry, model_set=models, score_threshold=0.5).detect(frame)
    assert [d.object_id for d in high] == [models.obj_ids[1]]
    assert Detector(net, registry, model_set=models, score_threshold=0.7).detect(frame) == []
