"""Multi-scale deformable attention: kernel vs grid_sample reference, gradcheck, module, bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, cuda

from ros2_pose6d.ops import MSDeformAttn, ms_deform_attn, ms_deform_attn_reference


def make_inputs(shapes, N=2, M=3, D=5, Lq=7, P=4, dtype=torch.float64, seed=0, spread=1.4, device="cpu"):
    """Random inputs; locations in [-0.2, 1.2] so that some fall outside the maps."""
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = shapes[:, 0] * shapes[:, 1]
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    L, S = len(shapes), int(sizes.sum())
    value = torch.rand(N, S, M, D, generator=g, dtype=dtype)
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=dtype) * spread - (spread - 1) / 2
    weights = torch.rand(N, Lq, M, L, P, generator=g, dtype=dtype)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    return [t.to(device) for t in (value, shapes, start, loc, weights)]


SHAPES = [
    [(6, 4), (3, 5), (1, 1)],  # non-square levels and a 1x1 level
    [(9, 13)],  # one level
    [(20, 30), (10, 15), (5, 8), (3, 4)],  # Deformable-DETR-like pyramid
]


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_kernel_matches_reference_forward_and_backward(kernels, shapes, dtype, atol):
    value, sh, start, loc, w = make_inputs(shapes, dtype=dtype, seed=len(shapes))
    inputs = [value.requires_grad_(), loc.requires_grad_(), w.requires_grad_()]
    out = ms_deform_attn(value, sh, start, loc, w)
    ref = ms_deform_attn_reference(value, sh, loc, w)
    assert_close(out, ref, atol, what="forward")
    grad = torch.rand_like(out)
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(ref, inputs, grad)
    for name, a, b in zip(("value", "sampling_locations", "attention_weights"), got, want):
        scale = 1.0 if name != "sampling_locations" else max(s[0] * s[1] for s in shapes) ** 0.5
        assert_close(a, b, atol * scale, what=f"grad {name}")


def test_points_outside_every_level_give_zero(kernels):
    value, sh, start, loc, w = make_inputs(SHAPES[0])
    loc = torch.full_like(loc, 1.7)
    out = ms_deform_attn(value, sh, start, loc, w)
    assert torch.count_nonzero(out) == 0


def test_gradcheck_float64(kernels):
    value, sh, start, loc, w = make_inputs([(3, 4), (2, 2)], N=1, M=2, D=3, Lq=2, P=2, spread=1.0)
    fn = lambda v, l, a: ms_deform_attn(v, sh, start, l, a)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (value.requires_grad_(), loc.requires_grad_(), w.requires_grad_()),
                                    eps=1e-6, atol=1e-6)


def test_module_float32_matches_reference_path(kernels, monkeypatch):
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=2)
    for p in module.parameters():  # move away from the zero init so every projection matters
        torch.nn.init.normal_(p, std=0.1)
    shapes = torch.tensor([[8, 6], [4, 3]])
    start = torch.tensor([0, 48])
    x = torch.rand(2, 60, 32)
    q = torch.rand(2, 5, 32)
    ref_pts = torch.rand(2, 5, 2, 2)
    out = module(q, ref_pts, x, shapes, start)
    monkeypatch.setenv("ROS2_POSE6D_FORCE_REFERENCE", "1")
    ref = module(q, ref_pts, x, shapes, start)
    assert out.shape == (2, 5, 32)
    assert_close(out, ref, 1e-5, what="module")


def test_initial_offsets_form_a_ring_per_head():
    m = MSDeformAttn(d_model=16, n_levels=1, n_heads=4, n_points=2)
    bias = m.sampling_offsets.bias.view(4, 1, 2, 2)
    # head 0 looks along +x, head 1 along +y (angle pi/2), point p at distance p + 1
    assert_close(bias[0, 0, :, 0], torch.tensor([1.0, 2.0]), 1e-6, what="head 0 x")
    assert_close(bias[1, 0, :, 1], torch.tensor([1.0, 2.0]), 1e-6, what="head 1 y")
    assert torch.count_nonzero(m.attention_weights.weight) == 0


@pytest.mark.parametrize("mutate,message", [
    (lambda a: a.__setitem__(0, a[0][:, :-1]), "sum to"),
    (lambda a: a.__setitem__(3, a[3].float()), "dtype"),
    (lambda a: a.__setitem__(4, a[4][..., :-1]), "attention_weights"),
    (lambda a: a.__setitem__(1, a[1].int()), "int64"),
    (lambda a: a.__setitem__(0, a[0][0]), "value must be"),
])
def test_bad_input_raises_clear_error(mutate, message):
    args = make_inputs(SHAPES[0])
    mutate(args)
    with pytest.raises(ValueError, match=message):
        ms_deform_attn(*args)


def test_kernel_boundary_check_rejects_bad_level_index(kernels):
    value, sh, start, loc, w = make_inputs(SHAPES[0])
    with pytest.raises(ValueError, match="level_start_index"):
        kernels.ms_deform_attn_forward(value, sh, start + 1, loc, w, 64)
    with pytest.raises(ValueError, match="contiguous"):
        kernels.ms_deform_attn_forward(value.transpose(2, 3).contiguous().transpose(2, 3), sh, start, loc, w, 64)


@cuda
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_cuda_matches_cpu(kernels, dtype, atol):
    args = make_inputs(SHAPES[2], dtype=dtype)
    cpu = [a.clone().requires_grad_(a.is_floating_point()) for a in args]
    gpu = [a.cuda().requires_grad_(a.is_floating_point()) for a in args]
    out_c, out_g = ms_deform_attn(*cpu), ms_deform_attn(*gpu)
    assert_close(out_g.cpu(), out_c, atol, what="forward")
    g = torch.rand_like(out_c)
    for a, b in zip(torch.autograd.grad(out_g, [gpu[0], gpu[3], gpu[4]], g.cuda()),
                    torch.autograd.grad(out_c, [cpu[0], cpu[3], cpu[4]], g)):
        assert_close(a.cpu(), b, atol * 10, what="backward")


@cuda
@pytest.mark.parametrize("dtype,atol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_cuda_half_module(kernels, dtype, atol):
    torch.manual_seed(0)
    m = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=2).cuda()
    shapes, start = torch.tensor([[8, 6], [4, 3]]).cuda(), torch.tensor([0, 48]).cuda()
    x, q, p = torch.rand(2, 60, 32).cuda(), torch.rand(2, 5, 32).cuda(), torch.rand(2, 5, 2, 2).cuda()
    ref = m(q, p, x, shapes, start)
    with torch.autocast("cuda", dtype=dtype):
        out = m(q, p, x, shapes, start)
    assert_close(out.float(), ref, atol, rtol=atol, what=str(dtype))
