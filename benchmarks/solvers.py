"""Time-domain solver benchmark: probinv vs deepwave, side by side in one run.

For each model size and configuration a fresh Python process (subprocess) builds the problem, runs it ``--repeats``
times and reports the median wall time and its peak resident memory (``ru_maxrss``; it includes the ~0.3 GB of the
interpreter + torch, reported separately as ``baseline_rss_mb``). Every process uses 2 intra-op threads, float32 and
``GOMP_SPINCOUNT=1000``. The load average of the machine is logged before and after each configuration.

Problem (issue 2): square model of ``n x n`` cells, dx = 10 m, PML 20 cells, ``--nt`` steps of 1 ms, 4 shots with
one 10 Hz Ricker source each at row 2, 50 receivers at row 2, accuracy 4. Gradient runs back-propagate
``0.5 * ||d||^2`` (the L2 misfit against zero data) to the velocity model(s).

Usage::

    python benchmarks/solvers.py                       # all sizes, writes benchmarks/results/solvers.{json,md}
    python benchmarks/solvers.py --sizes 100 --nt 200  # a quick run

Each process first makes one untimed 64-step warm-up call (lazy imports, first-touch allocations) so the medians
measure the steady state of both libraries alike.

Writes ``benchmarks/results/solvers.json`` and ``solvers.md`` (atomically: temp file + os.replace).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv._files import write_text_atomic  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
N_SHOTS, N_REC, DX, DT, FREQ, PML = 4, 50, 10.0, 1e-3, 10.0, 20

#: (name, solver, mode) of every configuration; mode "fwd" = forward only, "grad" = forward + backward
CONFIGS = [
    ("probinv acoustic", "acoustic", "fwd"),
    ("deepwave scalar", "dw_scalar", "fwd"),
    ("probinv acoustic", "acoustic", "grad"),
    ("deepwave scalar", "dw_scalar", "grad"),
    ("probinv acoustic checkpoint_every=sqrt(nt)", "acoustic_ckpt", "grad"),
    ("deepwave scalar checkpoint_segments=32", "dw_scalar_ckpt", "grad"),
    ("probinv adjoint (hand-written)", "adjoint", "grad"),
    ("probinv sh", "sh", "grad"),
    ("probinv psv", "psv", "grad"),
    ("deepwave elastic", "dw_elastic", "grad"),
]


def _problem(n, nt, torch):
    from probinv.physics import ricker

    g = torch.Generator().manual_seed(0)
    v = 2000.0 + 100.0 * torch.rand(n, n, generator=g)
    w = ricker(FREQ, nt, DT).expand(N_SHOTS, 1, nt).contiguous()
    src = torch.tensor([[[2, (i + 1) * n // (N_SHOTS + 1)]] for i in range(N_SHOTS)])
    rec = torch.tensor([[[2, round(k * (n - 1) / (N_REC - 1))] for k in range(N_REC)]] * N_SHOTS)
    return v, w, src, rec


def _worker(solver: str, mode: str, n: int, nt: int, repeats: int) -> dict:
    import resource
    import warnings

    import torch

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    v, w, src, rec = _problem(n, nt, torch)
    ckpt = max(1, round(math.sqrt(nt)))
    if solver.startswith("dw"):
        import deepwave

    v_full, w_full = v, w

    def run(nt):
        v, w = v_full, w_full[..., :nt]
        grad = mode == "grad"
        if solver == "adjoint":
            from probinv.physics.adjoint import l2_gradient

            zeros = torch.zeros(N_SHOTS, N_REC, w.shape[-1])
            return l2_gradient(v, DX, DT, w, src, rec, zeros, pml_width=PML, accuracy=4)
        if solver in ("acoustic", "acoustic_ckpt"):
            from probinv.physics import acoustic

            vv = v.clone().requires_grad_(grad)
            d = acoustic(vv, DX, DT, w, src, rec, pml_width=PML, accuracy=4,
                         checkpoint_every=ckpt if solver == "acoustic_ckpt" else None)
            params = [vv]
        elif solver in ("sh", "psv"):
            from probinv.physics import psv, sh

            vs = (v / math.sqrt(3)).clone().requires_grad_(grad)
            rho = torch.full_like(v, 2000.0)
            if solver == "sh":
                d = sh(vs, rho, DX, DT, w, src, rec, pml_width=PML, accuracy=4)
                params = [vs]
            else:
                vp = v.clone().requires_grad_(grad)
                d = psv(vp, vs, rho, DX, DT, w, src, rec, source_type="force_z", receiver_component="vz",
                        pml_width=PML, accuracy=4)
                params = [vp, vs]
        elif solver in ("dw_scalar", "dw_scalar_ckpt"):
            vv = v.clone().requires_grad_(grad)
            out = deepwave.scalar(vv, DX, DT, source_amplitudes=w, source_locations=src, receiver_locations=rec,
                                  accuracy=4, pml_width=PML, pml_freq=FREQ,
                                  checkpoint_segments=32 if solver == "dw_scalar_ckpt" else None)
            d = out[-1]
            params = [vv]
        elif solver == "dw_elastic":
            vp = v.clone().requires_grad_(grad)
            vs = (v / math.sqrt(3)).clone().requires_grad_(grad)
            rho = torch.full_like(v, 2000.0)
            mu = rho * vs ** 2
            lamb = rho * vp ** 2 - 2 * mu
            out = deepwave.elastic(lamb, mu, 1 / rho, DX, DT, source_amplitudes_y=w, source_locations_y=src,
                                   receiver_locations_y=rec, accuracy=4, pml_width=PML, pml_freq=FREQ)
            d = out[-2]
            params = [vp, vs]
        else:
            raise ValueError(f"unknown solver {solver!r}")
        assert d.shape == (N_SHOTS, N_REC, w.shape[-1]), (solver, tuple(d.shape))
        if grad:
            # .backward(), not autograd.grad: deepwave's checkpoint_segments uses reentrant checkpointing
            (0.5 * d.square().sum()).backward()
            return [p.grad for p in params]
        return d

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run(min(nt, 64))  # warm-up (lazy imports, first-touch allocations), untimed, for every solver alike
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run(nt)
        times.append(time.perf_counter() - t0)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times_s": times, "median_s": statistics.median(times), "peak_rss_mb": peak,
            "baseline_rss_mb": baseline, "cell_updates_per_s": N_SHOTS * n * n * nt / statistics.median(times)}


def _spawn(solver, mode, n, nt, repeats, timeout, max_rss_gb):
    """Run one configuration in a fresh process; kill it if its RSS exceeds ``max_rss_gb`` (shared machine)."""
    import psutil

    env = dict(os.environ, GOMP_SPINCOUNT="1000", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", solver, mode, str(n), str(nt), str(repeats)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        t0, killed = time.time(), None
        while p.poll() is None:
            time.sleep(0.2)
            try:
                rss = psutil.Process(p.pid).memory_info().rss / 2 ** 30
            except psutil.Error:
                continue
            if rss > max_rss_gb:
                killed = f"killed: RSS above {max_rss_gb} GB"
            elif time.time() - t0 > timeout:
                killed = f"timed out after {timeout} s"
            if killed:
                p.kill()
                p.wait()
                return {"error": killed}
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if p.returncode != 0:
        return {"error": stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {p.returncode}"}
    return json.loads(stdout.strip().splitlines()[-1])


def _atomic_write(path, text):
    write_text_atomic(path, text)


def _ratio(rows, n, a, b, key, mode_a="grad", mode_b="grad"):
    ra = rows.get((n, a, mode_a), {})
    rb = rows.get((n, b, mode_b), {})
    if key in ra and key in rb:
        return ra[key] / rb[key]
    return None


def _markdown(result) -> str:
    lines = [f"# Solver benchmark ({result['machine']})", "",
             f"Command: `{result['command']}`. float32, 2 threads, GOMP_SPINCOUNT=1000, medians of "
             f"{result['repeats']} runs, each configuration in a fresh process; peak RSS includes the interpreter "
             f"and torch (baseline column). Cell updates/s count the model's cells (not the PML) times shots "
             f"times steps. Load average before/after each run is in the JSON.", "",
             "| n | steps | configuration | mode | median time (s) | cell updates/s | peak RSS (MB) | baseline (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if "error" in r:
            lines.append(f"| {r['n']} | {r['nt']} | {r['name']} | {r['mode']} | error: {r['error']} | | | |")
            continue
        lines.append(f"| {r['n']} | {r['nt']} | {r['name']} | {r['mode']} | {r['median_s']:.3f} | "
                     f"{r['cell_updates_per_s']:.3g} | {r['peak_rss_mb']:.0f} | {r['baseline_rss_mb']:.0f} |")
    lines += ["", "## Ratios against the targets (issue 2)", "",
              "| n | ratio | measured | target |", "|---|---|---|---|"]
    for n, rs in result["ratios"].items():
        for name, (val, target) in rs.items():
            lines.append(f"| {n} | {name} | {'n/a' if val is None else f'{val:.2f}'} | {target} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--nt", type=int, default=1000, help="time steps (all sizes but the largest)")
    ap.add_argument("--nt-largest", type=int, default=None, help="time steps for the largest size (default --nt)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    ap.add_argument("--only", nargs="*", default=None, help="solver keys to run (default all)")
    ap.add_argument("--elastic-sizes", type=int, nargs="*", default=[100],
                    help="sizes at which SH/P-SV/deepwave elastic run (their memory grows fast)")
    ap.add_argument("--nt-elastic", type=int, default=None, help="time steps of the elastic runs (default --nt)")
    ap.add_argument("--adjoint-sizes", type=int, nargs="*", default=None,
                    help="sizes at which the hand-written adjoint runs (default all)")
    ap.add_argument("--max-rss-gb", type=float, default=8.0, help="kill a configuration above this RSS")
    ap.add_argument("--append", action="store_true",
                    help="keep the runs of an existing solvers.json that this invocation does not redo")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        solver, mode, n, nt, repeats = args.worker
        print(json.dumps(_worker(solver, mode, int(n), int(nt), int(repeats))))
        return
    import platform

    import torch

    os.makedirs(RESULTS, exist_ok=True)
    try:
        import deepwave
        dw_version = deepwave.__version__
    except ImportError:
        dw_version = None
    result = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:])),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                         f"deepwave {dw_version}",
              "repeats": args.repeats, "runs": [], "ratios": {}}
    rows = {}
    path = os.path.join(RESULTS, "solvers.json")
    if args.append and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        result["command"] = old["command"] + " ; " + result["command"]
        for r in old["runs"]:
            redo = r["n"] in args.sizes and (args.only is None or r["solver"] in args.only)
            if not redo:
                rows[(r["n"], r["solver"], r["mode"])] = r
    for n in args.sizes:
        nt = args.nt_largest if (args.nt_largest and n == max(args.sizes)) else args.nt
        for name, solver, mode in CONFIGS:
            if args.only and solver not in args.only:
                continue
            if solver.startswith("dw") and dw_version is None:
                continue
            elastic = solver in ("sh", "psv", "dw_elastic")
            if elastic and n not in args.elastic_sizes:
                continue
            if solver == "adjoint" and args.adjoint_sizes is not None and n not in args.adjoint_sizes:
                continue
            nt_run = (args.nt_elastic or nt) if elastic else nt
            load0 = os.getloadavg()
            r = _spawn(solver, mode, n, nt_run, args.repeats, args.timeout, args.max_rss_gb)
            r.update(name=name, solver=solver, mode=mode, n=n, nt=nt_run, load_before=load0,
                     load_after=os.getloadavg())
            rows[(n, solver, mode)] = r
            result["runs"] = list(rows.values())
            print(json.dumps(r), flush=True)
            _atomic_write(os.path.join(RESULTS, "solvers.json"), json.dumps(result, indent=1))
    order = {key: i for i, (_, key, _) in enumerate(CONFIGS)}
    result["runs"] = sorted(rows.values(), key=lambda r: (r["n"], order[r["solver"]], r["mode"] != "fwd"))
    for n in sorted({r["n"] for r in result["runs"]}):
        result["ratios"][str(n)] = {
            "acoustic fwd+grad time / deepwave": (_ratio(rows, n, "acoustic", "dw_scalar", "median_s"), "<= 1.0"),
            "acoustic forward time / deepwave": (_ratio(rows, n, "acoustic", "dw_scalar", "median_s", "fwd", "fwd"),
                                                 "<= 1.5"),
            "acoustic gradient peak RSS / deepwave": (_ratio(rows, n, "acoustic", "dw_scalar", "peak_rss_mb"),
                                                      "<= 1.2"),
            "acoustic checkpointed peak RSS / deepwave (not checkpointed)":
                (_ratio(rows, n, "acoustic_ckpt", "dw_scalar", "peak_rss_mb"), "<= 0.3"),
            "sh fwd+grad time / deepwave elastic": (_ratio(rows, n, "sh", "dw_elastic", "median_s"), "<= 1.5"),
            "sh peak RSS / deepwave elastic": (_ratio(rows, n, "sh", "dw_elastic", "peak_rss_mb"), "<= 1.5"),
            "psv fwd+grad time / deepwave elastic": (_ratio(rows, n, "psv", "dw_elastic", "median_s"), "<= 1.5"),
            "psv peak RSS / deepwave elastic": (_ratio(rows, n, "psv", "dw_elastic", "peak_rss_mb"), "<= 1.5"),
            "AD gradient time / hand-written adjoint": (_ratio(rows, n, "acoustic", "adjoint", "median_s"), "<= 1.5"),
            "AD gradient peak RSS / hand-written adjoint": (_ratio(rows, n, "acoustic", "adjoint", "peak_rss_mb"),
                                                            "(same budget)"),
        }
    _atomic_write(os.path.join(RESULTS, "solvers.json"), json.dumps(result, indent=1))
    _atomic_write(os.path.join(RESULTS, "solvers.md"), _markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
