"""CPU speed of the FNO: spectral convolution forward/backward and training throughput.

Compares probinv's spectral convolution (``method="dft"``: truncated DFTs as real GEMMs; ``method="fft"``: rfft2 +
real batched GEMM mode mix) with the reference FNO implementation of Li et al. (complex ``einsum`` on strided slices
of ``rfft2``), then measures training throughput (forward + backward + Adam step, samples/s) of the paper-1 network
(width 32, 12 modes, 4 layers, 64 output frames, 64 x 64 grid).

Run (quiet machine, 2 threads)::

    OMP_NUM_THREADS=2 python3 benchmarks/fno_speed.py --threads 2

Writes ``benchmarks/results/fno_speed.json`` and ``benchmarks/results/fno_speed.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv._files import write_text_atomic  # noqa: E402
from probinv.surrogate.fno import FNO2d  # noqa: E402
from probinv.surrogate.spectral import spectral_conv2d  # noqa: E402


def naive_spectral_conv2d(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The reference FNO layer (Li et al. 2021 ``fourier_2d.py``): complex einsum on strided rfft2 slices."""
    b, _, nz, nx = x.shape
    m1, m2 = w1.shape[2], w1.shape[3]
    xf = torch.fft.rfft2(x)
    out = torch.zeros(b, w1.shape[1], nz, nx // 2 + 1, dtype=torch.cfloat, device=x.device)
    out[:, :, :m1, :m2] = torch.einsum("bixy,ioxy->boxy", xf[:, :, :m1, :m2], w1)
    out[:, :, -m1:, :m2] = torch.einsum("bixy,ioxy->boxy", xf[:, :, -m1:, :m2], w2)
    return torch.fft.irfft2(out, s=(nz, nx))


CLOCK = time.perf_counter


def _time(fn, n: int) -> float:
    """Median time of ``n`` calls after two warm-up calls (the median resists other users' load spikes).

    The clock is wall time, or with ``--clock cpu`` the process CPU time: on a shared, overloaded machine and one
    thread, CPU time measures the work itself (wall time then mostly measures the other users)."""
    fn()
    fn()
    ts = []
    for _ in range(n):
        t = CLOCK()
        fn()
        ts.append(CLOCK() - t)
    return statistics.median(ts)


def time_spectral(batch: int, width: int, modes: int, n: int) -> dict:
    x = torch.randn(batch, width, 64, 64, requires_grad=True)
    w = torch.randn(width, width, 2 * modes, modes, 2, requires_grad=True) / width
    w1 = torch.complex(w[:, :, :modes, :, 0], w[:, :, :modes, :, 1]).detach().requires_grad_(True)
    w2 = torch.complex(w[:, :, modes:, :, 0], w[:, :, modes:, :, 1]).detach().requires_grad_(True)
    impls = {"naive (complex einsum, reference FNO)": lambda: naive_spectral_conv2d(x, w1, w2),
             "probinv fft": lambda: spectral_conv2d(x, w, method="fft"),
             "probinv dft": lambda: spectral_conv2d(x, w, method="dft")}
    out = {}
    for name, f in impls.items():
        y = f()
        g = torch.randn_like(y)
        t_fwd = _time(f, n)

        def fb(f=f, name=name, g=g):  # bound now: the closure must not see a later iteration's values
            yy = f()
            torch.autograd.grad(yy, (x, w) if "probinv" in name else (x, w1, w2), g)
        t_fb = _time(fb, n)
        out[name] = {"forward_ms": 1e3 * t_fwd, "backward_ms": 1e3 * (t_fb - t_fwd),
                     "backward_over_forward": (t_fb - t_fwd) / t_fwd}
    return out


class NaiveSpectralConv(torch.nn.Module):
    """The reference FNO layer as a module (complex weights ``w1``, ``w2``), for the naive-network baseline."""

    def __init__(self, width: int, modes: int):
        super().__init__()
        scale = 1.0 / (width * width)
        self.w1 = torch.nn.Parameter(scale * torch.rand(width, width, modes, modes, dtype=torch.cfloat))
        self.w2 = torch.nn.Parameter(scale * torch.rand(width, width, modes, modes, dtype=torch.cfloat))

    def forward(self, x):
        return naive_spectral_conv2d(x, self.w1, self.w2)


def time_training(batch: int, width: int, modes: int, frames: int, method: str, n: int) -> dict:
    net = FNO2d(5, frames, width=width, modes=modes, method="dft" if method == "naive" else method)
    if method == "naive":  # the same network with the reference FNO's spectral layers
        net.spectral = torch.nn.ModuleList([NaiveSpectralConv(width, modes) for _ in net.spectral])
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randn(batch, 5, 64, 64)
    y = torch.randn(batch, frames, 64, 64)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
    t_step = _time(step, n)
    with torch.no_grad():
        t_fwd = _time(lambda: net(x), n)
    return {"method": method, "batch": batch, "step_s": t_step, "samples_per_s": batch / t_step,
            "forward_no_grad_s": t_fwd, "n_parameters": net.n_parameters()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="wall time, or process CPU time (use with --threads 1 on a busy machine)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()
    res = {"torch": torch.__version__, "threads": args.threads, "clock": args.clock,
           "machine": platform.processor() or platform.machine(),
           "load_average_before": load, "spectral": time_spectral(args.batch, 32, 12, args.repeats),
           "training": [time_training(args.batch, 32, 12, 64, m, args.repeats) for m in ("naive", "dft", "fft")]}
    res["load_average_after"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    lines = [f"# FNO CPU speed (torch {res['torch']}, {args.threads} threads, {args.clock} clock, load {load[0]:.2f})",
             "",
             f"Spectral convolution, batch {args.batch}, width 32, 12 modes, 64 x 64:", "",
             "| implementation | forward ms | backward ms | backward / forward |", "|---|---|---|---|"]
    for k, v in res["spectral"].items():
        lines.append(f"| {k} | {v['forward_ms']:.1f} | {v['backward_ms']:.1f} | {v['backward_over_forward']:.2f} |")
    lines += ["", "Training step (forward + backward + Adam), width 32, 12 modes, 4 layers, 64 frames, 64 x 64:", "",
              "| method | batch | s / step | samples / s |", "|---|---|---|---|"]
    for t in res["training"]:
        lines.append(f"| {t['method']} | {t['batch']} | {t['step_s']:.3f} | {t['samples_per_s']:.1f} |")
    tag = "" if (args.threads, args.clock) == (2, "wall") else f"_{args.threads}t_{args.clock}"
    for name, text in ((f"fno_speed{tag}.json", json.dumps(res, indent=2)),
                       (f"fno_speed{tag}.md", "\n".join(lines) + "\n")):
        write_text_atomic(os.path.join(args.out, name), text)
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
