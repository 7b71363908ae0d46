"""The CUDA kernels' own source (csrc/*/*.cu), run on the CPU under a serial emulation of the CUDA
runtime (test/cuda_emu/cuda_emu.h), against the CPU kernels: catches indexing, layout and launch-
configuration (coverage) mistakes in the .cu files on machines without a GPU. Threads run in a shuffled order;
two orders must agree. The torch glue around the launchers (csrc/*/*_cuda.cpp) is built too, over the
emulated kernels with two stand-in CUDA headers (test/cuda_emu/shim), and called with CPU tensors. The
real-device comparison is test_render/test_msda's CUDA tests."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, assert_close
from test_msda import SHAPES, make_inputs
from test_render import random_scene

CSRC = REPO / "csrc"
EMU = Path(__file__).parent / "cuda_emu"
LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<\w+>)?)\s*<<<(.*?)>>>\(", re.S)


def _top_level_args(text: str) -> list[str]:
    args, depth, cur = [], 0, ""
    for ch in text:
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return args + [cur.strip()]


def translate(cu_source: str) -> str:
    """A .cu file as C++ for the emulator: the runtime header swapped, every ``k<<<grid, block, ...>>>(``
    launch turned into ``::p6d_emu::launch(grid, block, k, ...)``."""
    src = cu_source.replace("#include <cuda_runtime.h>", '#include "cuda_emu.h"')

    def launch(m: re.Match) -> str:
        grid, block = _top_level_args(m.group(2))[:2]
        return f"::p6d_emu::launch({grid}, {block}, {m.group(1)}, "

    out, n = LAUNCH.subn(launch, src)
    assert n > 0, "no kernel launch found to translate"
    return out


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> ctypes.CDLL:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    build = tmp_path_factory.mktemp("cuda_emu")
    sources = [EMU / "emu_entry.cpp"]
    for cu in sorted(CSRC.glob("*/*.cu")):
        target = build / (cu.stem + "_emu.cpp")
        target.write_text(translate(cu.read_text()))
        sources.append(target)
    lib = build / "libp6d_cuda_emu.so"
    cmd = [cxx, "-std=c++17", "-O1", "-shared", "-fPIC", f"-I{CSRC}", f"-I{EMU}", *map(str, sources), "-o", str(lib)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"emulated CUDA sources do not compile:\n{res.stderr[-3000:]}"
    return ctypes.CDLL(str(lib))


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    """The real glue files and the translated kernels as one torch extension (CPU build, -DWITH_CUDA)."""
    from torch.utils.cpp_extension import load, verify_ninja_availability

    try:
        verify_ninja_availability()
    except RuntimeError as exc:
        if os.environ.get("ROS2_POSE6D_REQUIRE_EXT") == "1":
            pytest.fail(f"ROS2_POSE6D_REQUIRE_EXT=1 but {exc}")
        pytest.skip(str(exc))
    build = tmp_path_factory.mktemp("cuda_glue_emu")
    sources = [EMU / "emu_glue.cpp", *sorted(CSRC.glob("*/*_cuda.cpp"))]
    for cu in sorted(CSRC.glob("*/*.cu")):
        target = build / (cu.stem + "_emu.cpp")
        target.write_text(translate(cu.read_text()))
        sources.append(target)
    return load("p6d_cuda_glue_emu", [str(s) for s in sources], extra_cflags=["-O1", "-DWITH_CUDA"],
                extra_include_paths=[str(EMU / "shim"), str(CSRC), str(EMU)], build_directory=str(build))


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    assert t.is_contiguous()
    return ctypes.c_void_p(t.data_ptr())


def test_translation_covers_every_launch():
    for cu in CSRC.glob("*/*.cu"):
        assert "<<<" not in translate(cu.read_text()), cu


def emulated_rasterize(emu, verts, faces, off, K, H, W, znear, cull, seed):
    """What csrc/rasterize/rasterize_cuda.cpp does around the launcher, with the emulated kernels."""
    B, F = len(K), len(faces)
    face_image = torch.repeat_interleave(torch.arange(B), off[1:] - off[:-1])
    keys = torch.full((B, H, W), -1, dtype=torch.int64)
    face_id = torch.empty((B, H, W), dtype=torch.int64)
    depth = torch.empty((B, H, W), dtype=verts.dtype)
    fn = emu.emu_rasterize_f64 if verts.dtype == torch.float64 else emu.emu_rasterize_f32
    fn(_ptr(verts), _ptr(faces), _ptr(face_image), _ptr(K), ctypes.c_int64(F), ctypes.c_int64(B), ctypes.c_int64(H),
       ctypes.c_int64(W), ctypes.c_double(znear), ctypes.c_int(int(cull)), _ptr(keys), _ptr(face_id), _ptr(depth),
       ctypes.c_uint(seed))
    return face_id, depth


@pytest.mark.parametrize("cull", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_emulated_cuda_rasteriser_matches_cpu_kernel(kernels, emu, cull, dtype, seed):
    verts, faces, off, K, s = random_scene(B=3, n_faces=80, seed=seed, dtype=dtype, H=30, W=40)
    want_id, want_depth = kernels.rasterize(verts, faces, off, K, s.height, s.width, s.znear, cull)
    for order in (0, 1):
        got_id, got_depth = emulated_rasterize(emu, verts, faces, off, K, s.height, s.width, s.znear, cull, order)
        assert torch.equal(got_id, want_id), f"face ids differ on {(got_id != want_id).sum()} pixels (order {order})"
        assert torch.equal(got_depth, want_depth), "depths differ"
    assert (want_id >= 0).any() and (want_id < 0).any()


def test_emulated_cuda_rasteriser_empty_and_offscreen(kernels, emu):
    verts, faces, off, K, s = random_scene(B=2, n_faces=10, seed=3, dtype=torch.float32, H=8, W=8)
    verts = verts + torch.tensor([5.0, 0.0, 0.0])  # everything off to the right
    face_id, depth = emulated_rasterize(emu, verts, faces, off, K, 8, 8, s.znear, False, 0)
    assert (face_id == -1).all() and (depth == 0).all()


def emulated_msda(emu, value, shapes, start, loc, attn, gout, seed):
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = loc.shape
    sfx = "f64" if value.dtype == torch.float64 else "f32"
    dims = [ctypes.c_int64(x) for x in (N, S, M, D, L, Lq, P)]
    out = torch.empty(N, Lq, M * D, dtype=value.dtype)
    getattr(emu, f"emu_msda_forward_{sfx}")(_ptr(value), _ptr(shapes), _ptr(start), _ptr(loc), _ptr(attn), *dims,
                                            _ptr(out), ctypes.c_uint(seed))
    grads = [torch.zeros_like(t) for t in (value, loc, attn)]
    getattr(emu, f"emu_msda_backward_{sfx}")(_ptr(value), _ptr(shapes), _ptr(start), _ptr(loc), _ptr(attn),
                                             _ptr(gout), *dims, *map(_ptr, grads), ctypes.c_uint(seed))
    return out, grads


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_emulated_cuda_msda_matches_cpu_kernel(kernels, emu, shapes, dtype, atol):
    value, sh, start, loc, w = make_inputs(shapes, dtype=dtype, seed=7)
    want = kernels.ms_deform_attn_forward(value, sh, start, loc, w, 64)
    gout = torch.rand(want.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    want_grads = kernels.ms_deform_attn_backward(value, sh, start, loc, w, gout, 64)
    for order in (0, 1):
        out, grads = emulated_msda(emu, value, sh, start, loc, w, gout, order)
        assert_close(out, want, atol, what=f"forward (order {order})")
        for name, a, b in zip(("value", "sampling_locations", "attention_weights"), grads, want_grads):
            assert_close(a, b, atol * 10, what=f"grad {name} (order {order})")


def test_emulator_counts_launches(emu):
    """Guards against a translation that compiles but never runs a kernel."""
    before = emu.emu_launches()
    value, sh, start, loc, w = make_inputs(SHAPES[1], dtype=torch.float64)
    emulated_msda(emu, value, sh, start, loc, w, torch.ones(2, 7, 15, dtype=torch.float64), 0)
    assert emu.emu_launches() - before == 2
    assert np.isfinite(value.numpy()).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_emulated_cuda_glue_rasterises_like_cpu_kernel(kernels, glue, dtype):
    """csrc/rasterize/rasterize_cuda.cpp end to end: face -> image index from the offsets (including an
    image with no faces), key buffer, dispatch and launch arguments."""
    verts, faces, off, K, s = random_scene(B=3, n_faces=60, seed=4, dtype=dtype, H=24, W=32)
    n0 = int(off[1])
    faces, off = faces[n0:].contiguous(), torch.cat([off[:1], off[1:] - n0])  # image 0 gets no faces
    assert off[0] == off[1] == 0
    for cull in (True, False):
        want_id, want_depth = kernels.rasterize(verts, faces, off, K, s.height, s.width, s.znear, cull)
        for order in (0, 1):
            glue.set_order_seed(order)
            before = glue.launches()
            got_id, got_depth = glue.rasterize(verts, faces, off, K, s.height, s.width, s.znear, cull)
            assert glue.launches() - before == 2
            assert torch.equal(got_id, want_id), f"face ids differ on {(got_id != want_id).sum()} pixels"
            assert torch.equal(got_depth, want_depth), "depths differ"
        assert (want_id[0] == -1).all() and (want_id[1:] >= 0).any()


def test_emulated_cuda_glue_rasterises_no_images_and_no_faces(glue):
    verts, faces, off, K, s = random_scene(B=2, n_faces=10, seed=5, dtype=torch.float32, H=6, W=7)
    face_id, depth = glue.rasterize(verts, faces[:0].contiguous(), off[:1].contiguous(), K[:0].contiguous(), 6, 7,
                                    s.znear, True)
    assert face_id.shape == (0, 6, 7) and depth.shape == (0, 6, 7)
    face_id, depth = glue.rasterize(verts, faces[:0].contiguous(), torch.zeros(3, dtype=torch.int64), K, 6, 7,
                                    s.znear, True)
    assert (face_id == -1).all() and (depth == 0).all()


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_emulated_cuda_glue_msda_like_cpu_kernel(kernels, glue, dtype, atol):
    """csrc/ms_deform_attn/ms_deform_attn_cuda.cpp end to end: output and gradient buffers (zeroed for the
    atomics), dtype dispatch, launcher arguments."""
    value, sh, start, loc, w = make_inputs(SHAPES[2], dtype=dtype, seed=9)
    want = kernels.ms_deform_attn_forward(value, sh, start, loc, w, 64)
    gout = torch.rand(want.shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    want_grads = kernels.ms_deform_attn_backward(value, sh, start, loc, w, gout, 64)
    glue.set_order_seed(1)
    assert_close(glue.ms_deform_attn_forward(value, sh, start, loc, w), want, atol, what="forward")
    for name, a, b in zip(("value", "sampling_locations", "attention_weights"),
                          glue.ms_deform_attn_backward(value, sh, start, loc, w, gout), want_grads):
        assert_close(a, b, atol * 10, what=f"grad {name}")
