"""Solver speed: probinv's compiled kernels vs their PyTorch reference path vs deepwave, side by side in one run.

Every configuration (problem x solver x mode x threads) runs in a fresh Python process that builds the problem, makes
one short untimed warm-up call (lazy imports, the kernel's build/load, first-touch allocations), then times
``--repeats`` calls and reports the median wall time and the process's peak resident memory (``ru_maxrss``; the
interpreter + torch alone, measured before the first call, is the ``baseline`` column). The configurations of one
problem run interleaved (native, torch, deepwave for each mode and thread count), so a change of the machine's load
hits all three alike; the load average is logged before and after each process. Every process gets
``GOMP_SPINCOUNT=1000`` and ``OMP_NUM_THREADS`` / ``torch.set_num_threads`` = the thread count.

Problems
--------
* ``square N``: N x N cells, dx = 10 m, PML 20, accuracy 4, float32, 4 shots (one 10 Hz Ricker each at row 2),
  50 receivers at row 2, ``--nt`` steps of 1 ms (``--nt-400`` for N = 400).
* ``marmousi2``: paper 2's set-up: Marmousi2 resampled to 44 x 100 at 80 m (``../shared/data/marmousi2.npz``, every
  4th cell of the 20 m grid; a smooth synthetic model of that size if the file is absent), nt 1500 steps of 4 ms, 16
  shots (5 Hz Ricker at row 1), 100 receivers at row 1, free surface, PML 20, accuracy 4. deepwave gets
  ``pml_width=[0, 20, 20, 20]`` (its zero boundary without a layer is a pressure-release surface).
* ``small N``: the Bayesian-inference size: N x N at 20 m, PML 5, 2 shots, 300 steps of 4 ms, N receivers, gradient
  only, one thread (the issue's "16 x 16 to 32 x 32: gradient >= 10x faster" target; the torch path is today's).
* ``psv N`` / ``sh N`` (elastic): N x N cells, dx = 10 m, vp random 2000-2100 m/s, vs = vp / 1.8, rho 2000 kg/m^3,
  PML 20, accuracy 4, float32, 4 shots (a vertical force, 8 Hz Ricker, at row 2), 50 receivers of the vertical
  particle velocity at row 2 (SH: the displacement ``u``), ``--nt`` steps of 1 ms. probinv runs
  :func:`~probinv.physics.psv` (``source_type="force_z"``) or :func:`~probinv.physics.sh`; the deepwave column is
  ``deepwave.elastic`` (P-SV: it has no SH solver) on the same grid with the same sources and receivers (its 2D
  axes are ``y, x``: ``source_amplitudes_y``, ``receiver_locations_y``) for both, so ``sh`` rows compare probinv's
  SH against deepwave's P-SV (the issue's target: SH and P-SV forward + gradient <= 1.0x deepwave's ``elastic``).
  Gradient mode differentiates w.r.t. all three model fields on both sides (probinv: vp, vs, rho; deepwave: lambda,
  mu, buoyancy).

Modes: ``fwd`` (forward only, no autograd) and ``grad`` (forward + backward of ``0.5 ||d||^2`` to the velocity).

Usage::

    python benchmarks/native.py                      # everything (acoustic and elastic; ~25 min on 2 busy cores)
    python benchmarks/native.py --problems square100 small16 --repeats 3
    python benchmarks/native.py --problems psv100 psv200 sh100 sh200 --threads 1 2   # elastic only

For the README's table run the default set on a quiet machine (load average ~1 or less, nothing else running),
e.g. ``nice -n -5 python benchmarks/native.py --repeats 5``; the load is logged per process in the JSON and its range
in the markdown table, so a busy run is visible as such. Speed claims should quote the ratio columns (both solvers
measured in the same run, interleaved), not absolute times.

Writes ``benchmarks/results/native.json`` and ``native.md`` (atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv._files import write_text_atomic  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
#: Marmousi2 (see ../shared/data/README.md); PROBINV_BENCH_DATA overrides the path (a worktree's ../shared differs)
DATA = os.environ.get("PROBINV_BENCH_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                         "shared", "data", "marmousi2.npz"))
SOLVERS = ("native", "torch", "deepwave")


def _problem(name: str, nt_square: int, nt_400: int):
    """(v, dx, dt, amp, src, rec, options for probinv, pml_width for deepwave, freq) of a named problem."""
    import numpy as np
    import torch

    from probinv.physics import ricker

    g = torch.Generator().manual_seed(0)
    if name.startswith("square"):
        n = int(name[len("square"):])
        nt = nt_400 if n >= 400 else nt_square
        shots, n_rec, dx, dt, freq = 4, 50, 10.0, 1e-3, 10.0
        v = 2000.0 + 100.0 * torch.rand(n, n, generator=g)
        src = torch.tensor([[[2, (i + 1) * n // (shots + 1)]] for i in range(shots)])
        rec = torch.tensor([[[2, round(k * (n - 1) / (n_rec - 1))] for k in range(n_rec)]] * shots)
        return v, dx, dt, ricker(freq, nt, dt).expand(shots, 1, nt).contiguous(), src, rec, \
            dict(pml_width=20, accuracy=4), 20, freq, "random 2000-2100 m/s"
    if name == "marmousi2":
        nz, nx, dx, dt, nt, shots, freq = 44, 100, 80.0, 0.004, 1500, 16, 5.0
        if os.path.exists(DATA):
            vp = np.load(DATA)["vp"][::4, :400:4][:nz, :nx]
            v, origin = torch.tensor(np.ascontiguousarray(vp), dtype=torch.float32), "Marmousi2 (every 4th cell)"
        else:
            z = torch.linspace(0, 1, nz)[:, None]
            x = torch.linspace(0, 1, nx)[None, :]
            v = 1500.0 + 3000.0 * z + 200.0 * torch.sin(6.0 * x) * z
            origin = "smooth synthetic (marmousi2.npz absent)"
        src = torch.tensor([[[1, round(i * (nx - 1) / (shots - 1))]] for i in range(shots)])
        rec = torch.tensor([[[1, k] for k in range(nx)]] * shots)
        return v, dx, dt, ricker(freq, nt, dt).expand(shots, 1, nt).contiguous(), src, rec, \
            dict(pml_width=20, accuracy=4, free_surface=True), [0, 20, 20, 20], freq, origin
    if name.startswith("small"):
        n = int(name[len("small"):])
        dx, dt, nt, shots, freq = 20.0, 0.004, 300, 2, 5.0
        v = 2000.0 + 200.0 * torch.rand(n, n, generator=g)
        src = torch.tensor([[[1, n // 4]], [[1, 3 * n // 4]]])
        rec = torch.tensor([[[1, k] for k in range(n)]] * shots)
        return v, dx, dt, ricker(freq, nt, dt).expand(shots, 1, nt).contiguous(), src, rec, \
            dict(pml_width=5, accuracy=4, pml_vmax=2600.0), 5, freq, "random 2000-2200 m/s"
    raise ValueError(f"unknown problem {name!r}")


def _elastic_problem(name: str, nt: int):
    """(vp, vs, rho, dx, dt, amp, src, rec, freq, description) of an elastic problem ``psvN`` / ``shN``."""
    import torch

    from probinv.physics import ricker

    n = int(name[3:] if name.startswith("psv") else name[2:])
    g = torch.Generator().manual_seed(0)
    shots, n_rec, dx, dt, freq = 4, 50, 10.0, 1e-3, 8.0
    vp = 2000.0 + 100.0 * torch.rand(n, n, generator=g)
    vs = vp / 1.8
    rho = torch.full((n, n), 2000.0)
    src = torch.tensor([[[2, (i + 1) * n // (shots + 1)]] for i in range(shots)])
    rec = torch.tensor([[[2, round(k * (n - 1) / (n_rec - 1))] for k in range(n_rec)]] * shots)
    amp = ricker(freq, nt, dt).expand(shots, 1, nt).contiguous()
    return vp, vs, rho, dx, dt, amp, src, rec, freq, "vp random 2000-2100 m/s, vs = vp / 1.8, rho 2000"


def _is_elastic(name: str) -> bool:
    return name.startswith(("psv", "sh"))


def _elastic_worker(problem: str, solver: str, grad: bool, nt_square: int):
    """The timed call of an elastic problem (see the module docstring)."""
    import torch

    vp, vs, rho, dx, dt, amp, src, rec, freq, _ = _elastic_problem(problem, nt_square)
    if solver == "deepwave":
        import deepwave  # the bench extra

    def run(nt):
        w = amp[..., :nt]
        with torch.set_grad_enabled(grad):
            if solver == "deepwave":
                fields = [(rho * (vp ** 2 - 2 * vs ** 2)), rho * vs ** 2, 1.0 / rho]
                fields = [f.clone().requires_grad_(grad) for f in fields]
                out = deepwave.elastic(*fields, dx, dt, source_amplitudes_y=w, source_locations_y=src,
                                       receiver_locations_y=rec, accuracy=4, pml_width=20, pml_freq=freq)
                d = out.receivers["y"]  # deepwave 0.1: receiver data by component
            else:
                from probinv.physics import psv, sh

                fields = [f.clone().requires_grad_(grad) for f in ((vp, vs, rho) if problem.startswith("psv")
                                                                   else (vs, rho))]
                if problem.startswith("psv"):
                    d = psv(*fields, dx, dt, w, src, rec, source_type="force_z", receiver_component="vz",
                            pml_width=20, accuracy=4, backend=solver)
                else:
                    d = sh(*fields, dx, dt, w, src, rec, pml_width=20, accuracy=4, backend=solver)
        assert d.shape == (*rec.shape[:2], nt), tuple(d.shape)
        if grad:
            return torch.autograd.grad(0.5 * d.square().sum(), fields)
        return d

    return run, amp.shape[-1]


def _worker(problem: str, solver: str, mode: str, threads: int, repeats: int, nt_square: int, nt_400: int) -> dict:
    import warnings

    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    grad = mode == "grad"
    if _is_elastic(problem):
        run, nt_full = _elastic_worker(problem, solver, grad, nt_square)
        return _time(run, nt_full, repeats)
    v, dx, dt, amp, src, rec, opts, dw_pml, freq, _ = _problem(problem, nt_square, nt_400)
    if solver == "deepwave":
        import deepwave  # the bench extra

    def run(nt):
        w = amp[..., :nt]
        vv = v.clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            if solver == "deepwave":
                d = deepwave.scalar(vv, dx, dt, source_amplitudes=w, source_locations=src, receiver_locations=rec,
                                    accuracy=opts["accuracy"], pml_width=dw_pml, pml_freq=freq)[-1]
            else:
                from probinv.physics import acoustic

                d = acoustic(vv, dx, dt, w, src, rec, backend=solver, **opts)
        assert d.shape == (*rec.shape[:2], nt), tuple(d.shape)
        if grad:
            (0.5 * d.square().sum()).backward()
            return vv.grad
        return d

    return _time(run, amp.shape[-1], repeats)


def _time(run, nt: int, repeats: int) -> dict:
    """Median wall and CPU time of ``run(nt)`` after one short warm-up, and the process's peak memory."""
    import resource

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run(min(nt, 32))  # warm-up, untimed, for every solver alike
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = run(nt)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times_s": times, "median_s": statistics.median(times), "cpu_s": cpu,
            "median_cpu_s": statistics.median(cpu), "peak_rss_mb": peak, "baseline_rss_mb": baseline}


def _spawn(problem, solver, mode, threads, repeats, nt_square, nt_400, timeout) -> dict:
    env = dict(os.environ, GOMP_SPINCOUNT="1000", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", problem, solver, mode, str(threads), str(repeats),
           str(nt_square), str(nt_400)]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _markdown(result) -> str:
    lines = [f"# Solvers: compiled kernels vs torch path vs deepwave ({result['machine']})", "",
             f"Command: `{result['command']}`. float32, `GOMP_SPINCOUNT=1000`, medians of {result['repeats']} calls "
             "after one warm-up, each configuration in a fresh process (peak RSS includes the interpreter and torch: "
             "baseline column); native/torch/deepwave interleaved per problem. Load average (1 min) before each "
             f"process: {result['load_min']:.2f} .. {result['load_max']:.2f} on {os.cpu_count()} CPUs.", "",
             "| problem | mode | threads | native (s) | torch (s) | deepwave (s) | native / deepwave | "
             "CPU time native / deepwave | torch / native | native RSS (MB) | deepwave RSS (MB) | "
             "RSS native / deepwave | baseline (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = {}
    for r in result["runs"]:
        rows[(r["problem"], r["mode"], r["threads"], r["solver"])] = r
    keys = sorted({k[:3] for k in rows}, key=lambda k: (result["problems"].index(k[0]), k[1] != "fwd", k[2]))

    def cell(r, key="median_s", fmt="{:.3f}"):
        if r is None:
            return "n/a"
        return "error: " + r["error"][:40] if "error" in r else fmt.format(r[key])

    def ratio(a, b, key="median_s"):
        if a is None or b is None or key not in a or key not in b:
            return "n/a"
        return f"{a[key] / b[key]:.2f}"

    for k in keys:
        n, tt, d = (rows.get((*k, s)) for s in SOLVERS)
        cells = [k[0], k[1], str(k[2]), cell(n), cell(tt), cell(d), ratio(n, d), ratio(n, d, "median_cpu_s"),
                 ratio(tt, n),
                 cell(n, "peak_rss_mb", "{:.0f}"), cell(d, "peak_rss_mb", "{:.0f}"), ratio(n, d, "peak_rss_mb"),
                 cell(n, "baseline_rss_mb", "{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Problems: " + "; ".join(f"{p}: {d}" for p, d in result["descriptions"].items()),
              "", "Elastic rows (psv*, sh*): the deepwave column is deepwave.elastic (P-SV) in both."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    # the whole module docstring: problems, usage and how to run the README's measurement on a quiet machine
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", nargs="+",
                    default=["small16", "small24", "small32", "square100", "square200", "square400", "marmousi2",
                             "psv100", "psv200", "sh100", "sh200"],
                    help="problems (see the module docstring): smallN, squareN, marmousi2, psvN, shN")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--nt", type=int, default=500, help="time steps of the square problems below 400 x 400")
    ap.add_argument("--nt-400", type=int, default=250, help="time steps of the 400 x 400 problem")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration")
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS)
    ap.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        problem, solver, mode, threads, repeats, nt_square, nt_400 = args.worker
        print(json.dumps(_worker(problem, solver, mode, int(threads), int(repeats), int(nt_square), int(nt_400))))
        return
    import torch

    try:
        import deepwave  # the bench extra
        dw_version = deepwave.__version__
    except ImportError:
        dw_version = None
    solvers = [s for s in args.solvers if s != "deepwave" or dw_version is not None]
    os.makedirs(RESULTS, exist_ok=True)
    result = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:])),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                         f"deepwave {dw_version}",
              "repeats": args.repeats, "problems": args.problems, "runs": [], "descriptions": {}}
    loads = []
    for problem in args.problems:
        if _is_elastic(problem):
            v, _, _, dx, dt, amp, src, rec, freq, origin = _elastic_problem(problem, args.nt)
            opts = dict(pml_width=20, accuracy=4)
        else:
            v, dx, dt, amp, src, rec, opts, _, freq, origin = _problem(problem, args.nt, args.nt_400)
        result["descriptions"][problem] = (f"{v.shape[0]} x {v.shape[1]} at {dx:g} m ({origin}), nt {amp.shape[-1]}, "
                                           f"dt {dt:g} s, {src.shape[0]} shots, {rec.shape[1]} receivers, {freq:g} Hz, "
                                           f"{opts}")
        small = problem.startswith("small")
        for mode in (("grad",) if small else ("fwd", "grad")):
            for threads in ((1,) if small else args.threads):
                for solver in solvers:
                    load0 = os.getloadavg()
                    loads.append(load0[0])
                    r = _spawn(problem, solver, mode, threads, args.repeats, args.nt, args.nt_400, args.timeout)
                    r.update(problem=problem, solver=solver, mode=mode, threads=threads, load_before=load0,
                             load_after=os.getloadavg())
                    result["runs"].append(r)
                    print(json.dumps({k: r[k] for k in r if k != "times_s"}), flush=True)
                    result["load_min"], result["load_max"] = min(loads), max(loads)
                    write_text_atomic(os.path.join(RESULTS, "native.json"), json.dumps(result, indent=1))
                    write_text_atomic(os.path.join(RESULTS, "native.md"), _markdown(result))  # partial results too
    print(_markdown(result))


if __name__ == "__main__":
    main()
