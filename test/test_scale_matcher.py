"""DeepIM's depth matcher (nets/scale_matcher.py): the correlation against a loop reference, the scale warp
on a known disc, a small matcher that learns to read the scale of textured pairs, and its place in DeepimNet."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ros2_pose6d.nets.deepim import DeepimConfig, DeepimNet
from ros2_pose6d.nets.scale_matcher import ScaleMatcher, scale_grid, shifted_correlation


def test_shifted_correlation_matches_a_loop_reference():
    torch.manual_seed(0)
    B, S, C, h, w, r = 3, 4, 5, 7, 9, 2
    obs, rend, weight = torch.randn(B, C, h, w), torch.randn(B, S, C, h, w), torch.rand(B, S, 1, h, w)
    got = shifted_correlation(obs, rend, weight, r)
    ref = torch.zeros(B, S, 2 * r + 1, 2 * r + 1)
    for b in range(B):
        for s in range(S):
            for i in range(2 * r + 1):
                for j in range(2 * r + 1):
                    total = 0.0
                    for y in range(h):
                        for x in range(w):
                            yy, xx = y + i - r, x + j - r  # the observed cell paired with rendered (y, x)
                            if 0 <= yy < h and 0 <= xx < w:
                                total += float(obs[b, :, yy, xx] @ rend[b, s, :, y, x]) * float(weight[b, s, 0, y, x])
                    ref[b, s, i, j] = total / float(weight[b, s].sum())
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_scale_grid_enlarges_a_disc_about_the_image_centre():
    h, w = 81, 101
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    disc = ((yy ** 2 + xx ** 2) < 20.0 ** 2).float()[None, None]
    for s in (0.8, 1.0, 1.25):
        out = F.grid_sample(disc, scale_grid(torch.tensor([math.log(s)]), (h, w)), align_corners=False)
        radius = math.sqrt(float(out.sum()) / math.pi)
        assert radius == pytest.approx(20.0 * s, abs=0.3)
        cy, cx = float((out[0, 0] * yy).sum() / out.sum()), float((out[0, 0] * xx).sum() / out.sum())
        assert abs(cy) < 1e-3 and abs(cx) < 1e-3  # about the centre


def _textured_pairs(n: int, gen: torch.Generator, size=(48, 64), max_log_scale=0.12):
    """Rendered crops: a textured ellipse on black; observed: the same enlarged by a known scale about the
    centre, on a random background, shifted by up to one pixel."""
    h, w = size
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    ax = 0.35 + 0.2 * torch.rand(n, 1, 1, generator=gen)
    ay = 0.35 + 0.2 * torch.rand(n, 1, 1, generator=gen)
    mask = (((xx / ax) ** 2 + (yy / ay) ** 2) < 1).float()[:, None]
    tex = F.interpolate(torch.rand(n, 3, 12, 16, generator=gen), size=size, mode="bilinear", align_corners=False)
    rendered = tex * mask
    log_s = (torch.rand(n, generator=gen) * 2 - 1) * max_log_scale
    grid = scale_grid(log_s, size) + (torch.rand(n, 1, 1, 2, generator=gen) * 2 - 1) * torch.tensor([2 / w, 2 / h])
    big = F.grid_sample(torch.cat([rendered, mask], 1), grid, align_corners=False)
    background = F.interpolate(torch.rand(n, 3, 4, 4, generator=gen), size=size, mode="bilinear", align_corners=False)
    observed = big[:, :3] + (1 - big[:, 3:]) * background
    return observed, rendered, mask, log_s


def test_a_small_matcher_learns_to_read_the_scale():
    """Trained from scratch on 320 textured pairs (the expected log scale's L1 loss plus the candidates'
    cross-entropy) for 600 steps, the matcher reads the scale of new pairs to within 3.5 % (median), from
    over 6 % at initialisation (as bad as always answering 1)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    matcher = ScaleMatcher(channels=16, scales=13, max_log_scale=0.15, shift=1)
    test = _textured_pairs(32, torch.Generator().manual_seed(1))

    def error() -> float:
        with torch.no_grad():
            return float((matcher(*test[:3])[0] - test[3]).abs().median())

    before = error()
    train = _textured_pairs(320, gen)
    opt = torch.optim.Adam(matcher.parameters(), lr=3e-3)
    for _ in range(600):
        i = torch.randint(0, 320, (16,), generator=gen)
        vz, logits = matcher(train[0][i], train[1][i], train[2][i])
        loss = (vz - train[3][i]).abs().mean() + 0.1 * matcher.bin_loss(logits, train[3][i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = error()
    assert after < 0.035 and after < 0.6 * before, (before, after)


def test_deepim_takes_its_depth_update_from_the_matcher():
    torch.manual_seed(0)
    cfg = DeepimConfig(input_size=(48, 64), width=0.125, fc_dim=16, norm="group", pose_level="conv4_1",
                       flow_head=False, mask_head=False, depth_matcher=True, matcher_channels=8, matcher_scales=5,
                       matcher_shift=1)
    net = DeepimNet(cfg)
    obs, rend = torch.rand(2, 3, 48, 64), torch.rand(2, 3, 48, 64)
    mask = (torch.rand(2, 1, 48, 64) > 0.5).float()
    out = net(obs, rend, mask)
    vz, _ = net.depth_matcher(obs, rend, mask)
    torch.testing.assert_close(out["v"][:, 2], vz)
    assert out["scale_logits"].shape == (2, 5)
    with torch.no_grad():
        net.trans.bias[2] += 1.0  # the FC head's vz no longer counts
        net.trans.bias[0] += 1.0
    out2 = net(obs, rend, mask)
    torch.testing.assert_close(out2["v"][:, 2], out["v"][:, 2])
    torch.testing.assert_close(out2["v"][:, 0], out["v"][:, 0] + 1.0)
    out2["v"][:, 2].sum().backward()
    assert net.depth_matcher.features[0][0].weight.grad.abs().sum() > 0
    grad = net.encoder["conv1"][0].weight.grad  # the encoder feeds only the FC's vz, weighted 0 here
    assert grad is None or not grad.any()

    def vz(weight: float) -> torch.Tensor:
        net.cfg.matcher_weight = weight
        with torch.no_grad():
            return net(obs, rend, mask)["v"][:, 2]

    matcher_only, fc_only = vz(1.0), vz(0.0)
    assert not torch.allclose(matcher_only, fc_only)
    torch.testing.assert_close(vz(0.25), 0.25 * matcher_only + 0.75 * fc_only)
    with pytest.raises(ValueError, match="matcher_weight"):
        DeepimNet(DeepimConfig(depth_matcher=True, matcher_weight=1.5))


def test_bin_loss_is_smallest_for_logits_peaked_at_the_true_scale():
    matcher = ScaleMatcher(scales=5, max_log_scale=0.2)  # candidates -0.2, -0.1, 0, 0.1, 0.2
    true = torch.tensor([0.05, 0.3])  # between the middle two; beyond the range (clamped to 0.2)
    split = torch.log(torch.tensor([[1e-6, 1e-6, 0.5, 0.5, 1e-6], [1e-6, 1e-6, 1e-6, 1e-6, 1.0]]))
    best = matcher.bin_loss(split, true)
    assert float(best) == pytest.approx(math.log(2) / 2, abs=1e-3)  # the entropy of the (0.5, 0.5) target
    for other in (torch.zeros(2, 5), split.roll(1, -1)):
        assert float(matcher.bin_loss(other, true)) > float(best)


def test_matcher_settings_are_checked():
    with pytest.raises(ValueError, match="scales >= 2"):
        ScaleMatcher(scales=1)
    with pytest.raises(ValueError, match="blocks >= 0"):
        ScaleMatcher(blocks=-1)


def test_residual_blocks_added_to_a_trained_matcher_start_as_the_identity_and_then_learn():
    """matcher_blocks > 0 on weights without them (init_from): the same depth update at first; the blocks'
    zero-initialised last convolutions get a gradient, so they do not stay the identity."""
    torch.manual_seed(0)
    plain = ScaleMatcher(channels=8, scales=5, shift=1)
    grown = ScaleMatcher(channels=8, scales=5, shift=1, blocks=3)
    missing, unexpected = grown.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("blocks.") for k in missing)
    assert [b.body[2].dilation for b in grown.blocks] == [(1, 1), (2, 2), (4, 4)]
    obs, rend = torch.rand(2, 3, 32, 40), torch.rand(2, 3, 32, 40)
    mask = (torch.rand(2, 1, 32, 40) > 0.5).float()
    torch.testing.assert_close(grown(obs, rend, mask)[1], plain(obs, rend, mask)[1])
    grown(obs, rend, mask)[0].sum().backward()
    assert all(b.body[-1].weight.grad.abs().sum() > 0 for b in grown.blocks)


def test_renormalised_warps_find_a_known_scale_that_plain_warps_shrink():
    """Given features (the stem swapped for the identity) whose observed map is the rendered map warped by a
    candidate scale and brought back to unit length, the renormalising matcher scores that candidate with
    correlation 1, the most there is, so its logits peak there. The plain matcher scores the same candidate
    lower (bilinear warping shortens the features) while the identity candidate keeps full-length features:
    the pull toward no change that renormalising removes."""
    torch.manual_seed(0)
    h, w = 24, 30
    field = F.interpolate(torch.randn(1, 8, 8, 10), size=(h, w), mode="bilinear", align_corners=False)
    field = F.normalize(field, dim=1)
    true = 3  # candidate index: log scale -0.2 + 3 * 0.04 = -0.08
    mask = torch.zeros(1, 1, h, w)
    mask[..., 6:-6, 7:-7] = 1
    scores = {}
    for renormalise in (False, True):
        matcher = ScaleMatcher(channels=8, scales=11, max_log_scale=0.2, shift=0, renormalise=renormalise)
        matcher.features = torch.nn.Identity()
        with torch.no_grad():
            matcher.log_inv_temp.fill_(0.0)  # logits = the correlations themselves
            grid = scale_grid(matcher.log_scales[true:true + 1], (h, w))
            observed = F.normalize(F.grid_sample(field, grid, mode="bilinear", align_corners=False), dim=1)
            _, logits = matcher(observed, field, mask)
        scores[renormalise] = logits[0]
    assert float(scores[True][true]) == pytest.approx(1.0, abs=1e-5)
    assert int(scores[True].argmax()) == true
    assert float(scores[False][true]) < 0.99
    assert float(scores[False][5]) == pytest.approx(float(scores[True][5]), abs=1e-6)  # identity: no interpolation
