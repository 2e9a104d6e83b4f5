"""Paper 2's acoustic L2 row (Table 1) side by side: probinv's acoustic solver vs deepwave, one training loop.

The issue's reference (issue 16): Marmousi2 at 44 x 100, 80 m (:func:`probinv.scenarios.paper2_marmousi`), free
surface, PML 20 on the other sides, accuracy 4, 16 shots on row 0, receivers on every cell of row 0, Ricker 3 Hz
peaking at 0.5 s, nt 1500, dt 6 ms, 2 % Gaussian noise of the data RMS, start = Gaussian blur of 5 cells, Adam lr 0.02
on v in km/s clipped to [1.4, 5.0] km/s after every step, misfit = sum over traces of the trace L2 norm; MS-SSIM (win
3) after 100 / 200 / 500 iterations: 0.705 -> 0.870 / 0.942 / 0.972.

This script runs that loop (plain ``torch.optim.Adam`` on v / 1000, not :func:`probinv.inference.map`) with either
forward solver, so that the only difference between two runs is the solver (or the one setting changed):

* ``--solver probinv``: :func:`probinv.physics.acoustic` (compiled native kernel, free surface = odd mirror about
  ``z = -dx``);
* ``--solver deepwave``: ``deepwave.scalar`` (its C kernel; ``--boundary free``: ``boundary=["free", "pml", "pml",
  "pml"]``, odd about the ghost node at ``z = -dx`` as probinv's; ``--boundary zero``: a bare zero-width top PML).

Observed data are each solver's own prediction of the true model plus the same seeded noise field (2 % of that data's
RMS), as a user of either tool would make them. ``--shots spread`` puts the 16 sources at round(linspace(0, 99, 16))
(the scenario's); ``--shots step6`` at columns 0, 6, ..., 90; ``floor`` at linspace(0, 99, 16) truncated; ``centred``
at the centres of 16 equal segments (3, 9, ..., 96).

deepwave is an optional dependency of the benchmarks (``pip install -e ".[bench]"``). Usage (one thread;
``GOMP_SPINCOUNT=1000`` because deepwave's OpenMP threads spin-wait)::

    OMP_NUM_THREADS=1 GOMP_SPINCOUNT=1000 PROBINV_DATA=../shared/data \\
        python benchmarks/paper2_reference.py --solver deepwave --iterations 500 --out benchmarks/results/ref_dw

Resumable (``<out>/reference_<tag>.pt`` every 10 iterations); writes ``<out>/reference.json`` and ``reference.md``
(one row per run tag, MS-SSIM after 10 / 50 / 100 / 200 / 500 iterations, seconds per iteration, load average).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]

from paper2 import scores as _scores  # noqa: E402  (the same MS-SSIM / SSIM / rel. L2 settings as the table)

from probinv._files import atomic_path, write_text_atomic  # noqa: E402
from probinv.physics import acoustic, ricker  # noqa: E402
from probinv.scenarios import paper2_marmousi  # noqa: E402

RESULTS = os.path.join(HERE, "results")
REFERENCE = {100: 0.870, 200: 0.942, 500: 0.972}
REPORT_AT = (10, 50, 100, 200, 500)


def scores(v, true):
    """:func:`paper2.scores` in float64 (MS-SSIM 3-px window, SSIM 11 px, relative L2; data range = the true
    field's range)."""
    return _scores(v.double(), true.double())


def make_forward(solver, s, amp, src, rec, boundary):
    """``f(v [m/s]) -> data [n_shots, n_receivers, nt]`` for the chosen solver."""
    acq = s.acquisition
    if solver == "probinv":
        if boundary != "free":
            opts = {"pml_width": (0, s.pml_width, s.pml_width, s.pml_width), "free_surface": False}
        else:
            opts = {"pml_width": s.pml_width, "free_surface": True}

        def f(v):
            return acoustic(v, s.dx, acq.dt, amp, src, rec, accuracy=4, **opts)
        return f
    import deepwave  # optional dependency of this benchmark only
    pml = [0, s.pml_width, s.pml_width, s.pml_width]
    kw = {"boundary": ["free", "pml", "pml", "pml"]} if boundary == "free" else {}

    def f(v):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = deepwave.scalar(v, s.dx, acq.dt, source_amplitudes=amp, source_locations=src,
                                  receiver_locations=rec, accuracy=4, pml_width=pml, pml_freq=acq.freq, **kw)
        return out.receiver_amplitudes
    return f


def run(args):
    dtype = getattr(torch, args.dtype)
    s = paper2_marmousi("acoustic", data_dir=args.data_dir, dtype=dtype,
                        sources="centred" if args.shots == "centred" else "spread")
    acq = s.acquisition
    src, rec = acq.source_locations, acq.receiver_locations
    if args.shots in ("step6", "floor"):
        xs = {"step6": torch.arange(acq.n_shots) * 6, "floor": torch.linspace(0, 99, acq.n_shots).long()}[args.shots]
        src = torch.stack([torch.zeros_like(xs), xs], -1)[:, None, :]
    amp = ricker(acq.freq, acq.nt, acq.dt, dtype=dtype).expand(acq.n_shots, 1, acq.nt).contiguous()
    f = make_forward(args.solver, s, amp, src, rec, args.boundary)
    with torch.no_grad():
        clean = f(s.true["vp"])
        rms = clean.square().mean().sqrt()
        noise = torch.randn(clean.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(args.noise_seed))
        obs = clean + args.noise * rms * noise.to(dtype)
    tag = args.tag or f"{args.solver}_{args.boundary}_{args.shots}_{args.dtype}"
    ckpt = os.path.join(args.out, f"reference_{tag}.pt")
    v = (s.initial["vp"] / 1000).clone().requires_grad_(True)   # km/s, as the reference
    opt = torch.optim.Adam([v], lr=args.lr)
    history, step, seconds = [{"step": 0, **scores(s.initial["vp"], s.true["vp"])}], 0, 0.0
    if os.path.exists(ckpt):
        st = torch.load(ckpt, weights_only=False)
        with torch.no_grad():
            v.copy_(st["v"])
        opt.load_state_dict(st["opt"])
        history, step, seconds = st["history"], st["step"], st["seconds"]
        print(f"{tag}: resumed at step {step}", flush=True)
    while step < args.iterations:
        t0 = time.perf_counter()
        opt.zero_grad()
        pred = f(v * 1000)
        loss = (pred - obs).square().sum(-1).sqrt().sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            v.clamp_(1.4, 5.0)
        seconds += time.perf_counter() - t0
        step += 1
        history.append({"step": step, "loss": loss.item(), **scores(v.detach() * 1000, s.true["vp"])})
        if step % 10 == 0 or step == args.iterations:
            print(f"{tag} step {step}: loss {loss.item():.6g}, MS-SSIM {history[-1]['ms_ssim']:.4f} "
                  f"({seconds / step:.2f} s/it)", flush=True)
            with atomic_path(ckpt) as tmp:
                torch.save({"v": v.detach(), "opt": opt.state_dict(), "history": history, "step": step,
                            "seconds": seconds}, tmp)
    return tag, {"solver": args.solver, "boundary": args.boundary, "shots": args.shots, "dtype": args.dtype,
                 "iterations": step, "seconds_per_iteration": seconds / max(step, 1),
                 "load_average": list(os.getloadavg()),
                 "ms_ssim_at": {str(k): history[k]["ms_ssim"] for k in (0,) + REPORT_AT if k < len(history)},
                 "final": history[-1], "history": history}


def markdown(results):
    cols = (0,) + REPORT_AT
    lines = ["| run | " + " | ".join(f"MS-SSIM {k}" for k in cols) + " | s / it. | load |",
             "|---|" + "---|" * (len(cols) + 2),
             "| issue's deepwave reference | 0.705 | | | 0.870 | 0.942 | 0.972 | | |"]
    for tag, r in results["runs"].items():
        at = r["ms_ssim_at"]
        cells = [f"{at[str(k)]:.4f}" if str(k) in at else "" for k in cols]
        lines.append(f"| {tag} | " + " | ".join(cells) + f" | {r['seconds_per_iteration']:.2f} | "
                     f"{r['load_average'][0]:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--solver", choices=("probinv", "deepwave"), default="probinv")
    ap.add_argument("--boundary", choices=("free", "zero"), default="free",
                    help="top surface: odd image about z = -dx (default) or a bare zero-width PML")
    ap.add_argument("--shots", choices=("spread", "step6", "floor", "centred"), default="spread")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.02, help="Adam lr on v in km/s (default 0.02)")
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--noise-seed", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--tag", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    if args.iterations < 1:
        raise SystemExit(f"--iterations must be >= 1, got {args.iterations}")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "reference.json")
    results = {"runs": {}}
    if os.path.exists(path):
        with open(path) as fh:
            results = json.load(fh)
    tag, res = run(args)
    res["command"] = "python benchmarks/paper2_reference.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res["machine"] = f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s)"
    if os.path.exists(path):  # another run may have written meanwhile
        with open(path) as fh:
            results = json.load(fh)
    results["runs"][tag] = res
    write_text_atomic(path, json.dumps(results, indent=1))
    write_text_atomic(os.path.join(args.out, "reference.md"), markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
