"""Rotations, camera crops / zoom-in and DeepIM's update rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

from ros2_pose6d.geometry import (
    apply_update,
    axis_angle_to_matrix,
    backproject,
    crop_resize,
    crop_resize_intrinsics,
    geodesic_angle,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    project,
    quaternion_to_matrix,
    random_rotation,
    rotation_6d_to_matrix,
    rotation_grid,
    update_target,
    zoom_in_boxes,
)

quats = st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(
    lambda q: sum(x * x for x in q) > 1e-3)


@settings(max_examples=200, deadline=None)
@given(quats)
def test_quaternion_matrix_round_trip(q):
    q = torch.tensor(q, dtype=torch.float64)
    q = q / q.norm()
    q = q if q[3] >= 0 else -q
    R = quaternion_to_matrix(q)
    assert_close(R @ R.T, torch.eye(3, dtype=torch.float64), 1e-12, what="orthonormal")
    assert abs(torch.det(R).item() - 1) < 1e-12
    back = matrix_to_quaternion(R)
    # q and -q are one rotation; at w == 0 either sign is valid
    assert min((back - q).abs().max().item(), (back + q).abs().max().item()) < 1e-9


@settings(max_examples=200, deadline=None)
@given(quats)
def test_axis_angle_and_6d_round_trips(q):
    R = quaternion_to_matrix(torch.tensor(q, dtype=torch.float64))
    assert_close(axis_angle_to_matrix(matrix_to_axis_angle(R)), R, 1e-9, what="axis-angle")
    assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R, 1e-12, what="6d")


def test_quaternion_convention_is_xyzw():
    # 90 deg about z: x axis goes to y axis
    q = torch.tensor([0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
    R = quaternion_to_matrix(q)
    assert_close(R @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), 1e-6, what="R x")


def test_rotation_grid_covers_so3_evenly_and_deterministically():
    """Every rotation is near a grid rotation (a 144-grid leaves no gap wider than random samples leave
    half their gaps), the grid holds proper rotations, no two coincide, and it is the same every call."""
    G = rotation_grid(144, torch.float64)
    assert_close(G @ G.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(144, 3, 3), 1e-12, what="R R^T")
    assert torch.allclose(torch.linalg.det(G), torch.ones(144, dtype=torch.float64))
    assert torch.equal(G, rotation_grid(144, torch.float64))
    probes = random_rotation(4000, torch.Generator().manual_seed(0), torch.float64)
    nearest = geodesic_angle(G[None], probes[:, None]).min(1).values
    rand = random_rotation(144, torch.Generator().manual_seed(1), torch.float64)
    nearest_rand = geodesic_angle(rand[None], probes[:, None]).min(1).values
    assert math.degrees(nearest.max()) < 45.0, math.degrees(nearest.max())  # 42 deg measured
    assert nearest.max() < nearest_rand.max() and nearest.mean() < nearest_rand.mean()
    apart = geodesic_angle(G[None], G[:, None]) + torch.eye(144, dtype=torch.float64) * 10
    assert math.degrees(apart.min()) > 25.0  # 32 deg measured: the points do not bunch up
    with pytest.raises(ValueError, match="at least one"):
        rotation_grid(0)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, math.pi - 1e-6), st.lists(st.floats(-1, 1), min_size=3, max_size=3).filter(
    lambda a: sum(x * x for x in a) > 1e-2))
def test_geodesic_angle_recovers_the_angle(angle, axis):
    axis = torch.tensor(axis, dtype=torch.float64)
    R = axis_angle_to_matrix(axis / axis.norm() * angle)
    assert abs(geodesic_angle(torch.eye(3, dtype=torch.float64), R).item() - angle) < 1e-7


@settings(max_examples=100, deadline=None)
@given(st.floats(100, 400), st.floats(100, 300), st.floats(20, 200), st.floats(20, 200),
       st.sampled_from([(32, 32), (48, 64), (60, 80)]))
def test_zoom_in_intrinsics_match_crop_resize(cx, cy, bw, bh, out_hw):
    """Points projected with the crop's K land where crop_resize puts the source pixels."""
    K = torch.tensor([[500.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    box = torch.tensor([[cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]], dtype=torch.float64)
    crop = zoom_in_boxes(torch.tensor([[cx, cy]], dtype=torch.float64), box, out_hw)
    Kc = crop_resize_intrinsics(K, crop[0], out_hw)
    # aspect ratio of the crop equals the output's, and the box fits inside
    w, h = (crop[0, 2] - crop[0, 0]).item(), (crop[0, 3] - crop[0, 1]).item()
    assert abs(w / h - out_hw[1] / out_hw[0]) < 1e-9
    assert crop[0, 0] <= box[0, 0] and crop[0, 2] >= box[0, 2] and crop[0, 1] <= box[0, 1] and crop[0, 3] >= box[0, 3]
    # a 3D point: its projection in the crop equals the crop-resize map of its projection in the source
    p = backproject(torch.tensor([[cx + 0.3 * bw, cy - 0.2 * bh]], dtype=torch.float64),
                    torch.tensor([0.7], dtype=torch.float64), K)
    src = project(p, K)[0]
    dst = project(p, Kc)[0]
    x0, y0, x1, y1 = crop[0]
    expected = torch.stack([(src[0] - x0) * out_hw[1] / (x1 - x0) - 0.5, (src[1] - y0) * out_hw[0] / (y1 - y0) - 0.5])
    assert_close(dst, expected, 1e-9, what="projection in crop")


def test_crop_resize_samples_where_intrinsics_say():
    """A single bright pixel lands at the output position predicted by crop_resize_intrinsics."""
    img = torch.zeros(1, 1, 100, 120, dtype=torch.float64)
    img[0, 0, 40, 70] = 1.0
    box = torch.tensor([[50.0, 30.0, 90.0, 60.0]], dtype=torch.float64)  # 40 x 30 -> 80 x 60: scale 2
    out = crop_resize(img, box, (60, 80))
    K = torch.eye(3, dtype=torch.float64)
    Kc = crop_resize_intrinsics(K, box[0], (60, 80))
    u = Kc[0, 0] * 70 + Kc[0, 2]
    v = Kc[1, 1] * 40 + Kc[1, 2]
    peak = torch.nonzero(out[0, 0] == out[0, 0].max()).double().mean(0)
    assert abs(peak[1].item() - u.item()) <= 0.5 and abs(peak[0].item() - v.item()) <= 0.5


def test_zoom_in_scales_with_distance():
    """An object twice as far has a box half the size: the zoom-in window halves too."""
    K = torch.tensor([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    corners = torch.tensor([[x, y, 0.0] for x in (-0.05, 0.05) for y in (-0.05, 0.05)])
    sizes = []
    for z in (0.5, 1.0):
        uv = project(corners + torch.tensor([0.0, 0.0, z]), K)
        box = torch.cat([uv.amin(0), uv.amax(0)])[None]
        crop = zoom_in_boxes(project(torch.tensor([[0.0, 0.0, z]]), K), box, (48, 64))
        sizes.append((crop[0, 2] - crop[0, 0]).item())
    assert abs(sizes[0] / sizes[1] - 2.0) < 1e-5


def test_deepim_update_round_trip_is_exact():
    g = torch.Generator().manual_seed(0)
    B = 16
    R_src = quaternion_to_matrix(torch.randn(B, 4, generator=g, dtype=torch.float64))
    R_tgt = quaternion_to_matrix(torch.randn(B, 4, generator=g, dtype=torch.float64))
    t_src = torch.rand(B, 3, generator=g, dtype=torch.float64) * 0.2
    t_src[:, 2] += 0.5
    t_tgt = t_src + (torch.rand(B, 3, generator=g, dtype=torch.float64) - 0.5) * 0.1
    fxy = torch.rand(B, 2, generator=g, dtype=torch.float64) * 300 + 200
    R_delta, v = update_target(R_src, t_src, R_tgt, t_tgt, fxy)
    R_out, t_out = apply_update(R_src, t_src, R_delta, v, fxy)
    assert_close(R_out, R_tgt, 1e-12, what="R")
    assert_close(t_out, t_tgt, 1e-12, what="t")


def test_deepim_translation_is_disentangled():
    """A pure pixel shift (vx) moves the object parallel to the image plane at constant depth."""
    R = torch.eye(3, dtype=torch.float64)[None]
    t = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    _, t2 = apply_update(R, t, R, torch.tensor([[10.0, 0.0, 0.0]], dtype=torch.float64),
                         torch.tensor([[500.0, 500.0]], dtype=torch.float64))
    assert_close(t2, torch.tensor([[0.02, 0.0, 1.0]], dtype=torch.float64), 1e-12, what="t")
    _, t3 = apply_update(R, t, R, torch.tensor([[0.0, 0.0, np.log(2.0)]], dtype=torch.float64),
                         torch.tensor([[500.0, 500.0]], dtype=torch.float64))
    assert_close(t3, torch.tensor([[0.0, 0.0, 0.5]], dtype=torch.float64), 1e-12, what="t")
