"""Multi-scale deformable attention: kernel vs grid_sample reference, forward and forward+backward,
on Deformable-DETR's typical shapes (4 levels from a 640x480 image at strides 8-64, 300 queries,
8 heads, 4 points, 256 channels). Prints a table with the kernel's speed-up over the reference. On CPU the
peak memory is the extra resident memory of one call in a fresh process; with --device cuda it is the
peak of torch's CUDA allocator during the call, and times are taken after a device synchronisation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import fmt_mib, peak_memory_fresh, timed

from ros2_pose6d.ops import ms_deform_attn, ms_deform_attn_reference


def inputs(batch: int, queries: int = 300, device: str = "cpu"):
    shapes = torch.tensor([[60, 80], [30, 40], [15, 20], [8, 10]], device=device)
    sizes = shapes[:, 0] * shapes[:, 1]
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    S, M, D, L, P = int(sizes.sum()), 8, 32, 4, 4
    value = torch.rand(batch, S, M, D, device=device, requires_grad=True)
    loc = torch.rand(batch, queries, M, L, P, 2, device=device, requires_grad=True)
    w = torch.rand(batch, queries, M, L, P, device=device).softmax(-1).requires_grad_()
    return value, shapes, start, loc, w


def case(kind: str, pass_: str, batch: int):
    """The call measured for memory (in a fresh process): kernel or reference, forward or fwd+bwd."""
    a = inputs(batch)
    run = {"kernel": lambda: ms_deform_attn(*a),
           "reference": lambda: ms_deform_attn_reference(a[0], a[1], a[3], a[4])}[kind]
    if pass_ == "forward":
        def fn():
            with torch.no_grad():
                run()
        return fn
    return lambda: run().sum().backward()


def synced(fn, device: str):
    """``fn`` followed by a device synchronisation, so that wall time covers the asynchronous kernels."""
    if not device.startswith("cuda"):
        return fn

    def run():
        fn()
        torch.cuda.synchronize(device)
    return run


def cuda_peak_memory(fn, device: str) -> float:
    """Peak bytes the CUDA caching allocator held during ``fn`` beyond what was allocated before it."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) - before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    args = parser.parse_args()
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {dev}: torch sees no CUDA device")
    print(f"device: {torch.cuda.get_device_name(dev) if dev.startswith('cuda') else 'cpu'}, "
          f"threads: {torch.get_num_threads()}")
    print(f"{'batch':>5} {'pass':>9} {'kernel ms':>10} {'reference ms':>13} {'speed-up':>9} "
          f"{'kernel MiB':>11} {'reference MiB':>14} {'memory ratio':>13}")
    for batch in (1, 2, 4):
        a = inputs(batch, device=dev)
        ops = {
            "forward": (lambda a=a: ms_deform_attn(*a), lambda a=a: ms_deform_attn_reference(a[0], a[1], a[3], a[4])),
            "fwd+bwd": (lambda a=a: ms_deform_attn(*a).sum().backward(),
                        lambda a=a: ms_deform_attn_reference(a[0], a[1], a[3], a[4]).sum().backward()),
        }
        for name, (kernel, reference) in ops.items():
            with torch.set_grad_enabled(name != "forward"):
                tk = timed(synced(kernel, dev), args.repeats)
                tr = timed(synced(reference, dev), args.repeats)
                if dev.startswith("cuda"):
                    mk, mr = cuda_peak_memory(kernel, dev), cuda_peak_memory(reference, dev)
            if not dev.startswith("cuda"):
                mk = peak_memory_fresh(__file__, "case", "kernel", name, batch)
                mr = peak_memory_fresh(__file__, "case", "reference", name, batch)
            ratio = f"{mk / mr:.2f}" if mk is not None and mr else "n/a"
            print(f"{batch:>5} {name:>9} {tk * 1e3:>10.2f} {tr * 1e3:>13.2f} {tr / tk:>8.2f}x "
                  f"{fmt_mib(mk):>11} {fmt_mib(mr):>14} {ratio:>13}")


if __name__ == "__main__":
    main()
