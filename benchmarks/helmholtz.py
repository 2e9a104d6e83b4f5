"""Benchmark of probinv.physics.helmholtz: custom-adjoint gradient vs plain autodiff through a dense solve, the cost
of a gradient relative to a forward solve set, a large-grid run, and the accuracy table of the module docstring.

Every timed case runs in its own subprocess so that its peak resident memory (``ru_maxrss``, minus the process's
resident memory just before the call) is its own. Results: ``benchmarks/results/helmholtz.json`` and ``.md``.

Usage::

    OMP_NUM_THREADS=1 python3 benchmarks/helmholtz.py                         # 60^2 and 100^2 comparison, 500^2
    python3 benchmarks/helmholtz.py --sizes 60 --big 200 --big-freqs 4        # smaller
    python3 benchmarks/helmholtz.py --accuracy                                # error vs points per wavelength
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv._files import write_text_atomic  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _model(n: int, seed: int = 0):
    """Smooth random (v, Q) model on an n x n grid, dx = 10 m; v 2000-2600 m/s, Q 20-80."""
    import torch
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(n, n, generator=g, dtype=torch.float64)
    kern = torch.ones(1, 1, 9, 9, dtype=torch.float64) / 81
    sm = torch.nn.functional.conv2d(k[None, None], kern, padding=4)[0, 0]
    sm = (sm - sm.min()) / (sm.max() - sm.min())
    return 2000.0 + 600.0 * sm, 20.0 + 60.0 * sm.flip(0)


def worker(spec: dict) -> dict:
    """One timed case: ``spec`` has n, pml, n_freqs, n_shots, method, mode ('forward' | 'gradient')."""
    import torch

    from probinv.physics import helmholtz
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    n, nf, ns = spec["n"], spec["n_freqs"], spec["n_shots"]
    v, q = _model(n)
    dx = 10.0
    # frequencies up to 8 points per wavelength at the slowest velocity (Table 10 style: evenly spaced)
    fmax = 2000.0 / (8 * dx)
    freqs = list(np.linspace(fmax / nf, fmax, nf))
    xs = np.linspace(n // 10, n - 1 - n // 10, ns).astype(int)
    src = torch.tensor([[[2, int(x)]] for x in xs])
    rec = torch.tensor([[[2, int(x)] for x in range(0, n, max(1, n // 50))]] * ns)
    kw = dict(omega_ref=2 * math.pi * fmax, pml_width=spec["pml"], method=spec["method"],
              keep_factors=spec.get("keep_factors", True))
    # warm up both code paths on a tiny grid (lazy imports, first-call allocations) before anything is measured
    vs, qs = _model(12)
    wv = vs.clone().requires_grad_()
    w_out = helmholtz(wv, qs, dx, freqs[:1], src[:1] * 0 + 5, rec[:1, :1] * 0 + 6, **{**kw, "pml_width": 2})
    torch.autograd.grad(w_out.abs().sum(), wv)
    # observed data of a 2 % faster model; spec["obs"] == "zero" uses 0 instead (loss 0.5 |d|^2), which spares the
    # large case an extra untimed forward run
    obs = None
    if spec["mode"] == "gradient":
        obs = (0.0 if spec.get("obs") == "zero"
               else helmholtz(v * 1.02, q, dx, freqs, src, rec, **{**kw, "method": "sparse"}))
    base = _rss_bytes()
    walls = []
    for _ in range(spec.get("repeats", 1)):
        t0 = time.perf_counter()
        if spec["mode"] == "forward":
            with torch.no_grad():
                d = helmholtz(v, q, dx, freqs, src, rec, **kw)
            out = {"value": float(d.abs().sum())}
        else:
            vv, qq = v.clone().requires_grad_(), q.clone().requires_grad_()
            d = helmholtz(vv, qq, dx, freqs, src, rec, **kw)
            loss = 0.5 * (d - obs).abs().square().sum()
            gv, gq = torch.autograd.grad(loss, (vv, qq))
            out = {"grad_v": gv.numpy().ravel()[:: max(1, gv.numel() // 2000)].tolist(),
                   "grad_q": gq.numpy().ravel()[:: max(1, gq.numel() // 2000)].tolist()}
        walls.append(time.perf_counter() - t0)
        del d
    wall = min(walls)   # best of the repeats: the least disturbed by other processes
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.update(spec, time_s=wall, peak_mem_bytes=max(0, peak - base), unknowns=(n + 2 * spec["pml"]) ** 2)
    return out


def run_case(spec: dict, timeout: float = 3600) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        path = f.name
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec), "--out", path]
    try:
        proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
        if proc.returncode != 0:
            return {**spec, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else f"rc {proc.returncode}"}
        with open(path) as f:
            return json.load(f)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timeout after {timeout} s"}
    finally:
        os.unlink(path)


def accuracy_table(ppws=(5, 6, 8, 10, 15), qs=(math.inf, 30.0)) -> list[dict]:
    """Largest relative error vs (i/4) H0(k r) over receivers 1-4 wavelengths away (axis and diagonal)."""
    import torch
    from scipy.special import hankel1

    from probinv.physics import helmholtz
    rows = []
    for ppw in ppws:
        for q in qs:
            f, v0 = 10.0, 2000.0
            dx = v0 / f / ppw
            half = int(math.ceil(4 * ppw)) + 6
            c = half
            v = torch.full((2 * half + 1, 2 * half + 1), v0, dtype=torch.float64)
            offs = np.arange(int(math.ceil(ppw)), int(4 * ppw) + 1)
            recs = [[c, c + o] for o in offs] + [[c + int(o / math.sqrt(2)), c + int(o / math.sqrt(2))] for o in offs]
            om = 2 * math.pi * f
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                d = helmholtz(v, q, dx, [f], torch.tensor([[[c, c]]]), torch.tensor([recs]), omega_ref=om)[0, :, 0]
            r = np.hypot(*(np.array(recs) - c).T) * dx
            vw = v0 if not math.isfinite(q) else 1 / ((1 + 0.5j / q) / v0)
            ref = 0.25j * hankel1(0, om / vw * r)
            rows.append({"ppw": ppw, "q": q, "max_rel_error": float(np.max(np.abs(d.numpy() - ref) / np.abs(ref)))})
    return rows


def _write_atomic(path: str, text: str) -> None:
    write_text_atomic(path, text)


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="*", default=[60, 100], help="grids for the sparse vs dense comparison")
    p.add_argument("--pml", type=int, default=20, help="pml_width of the comparison (cells)")
    p.add_argument("--freqs", type=int, default=1, help="frequencies in the comparison")
    p.add_argument("--shots", type=int, default=4, help="shots in every case")
    p.add_argument("--big", type=int, default=500, help="grid of the large sparse-only case (0: skip)")
    p.add_argument("--big-freqs", type=int, default=24, help="frequencies of the large case")
    p.add_argument("--big-keep-factors", type=int, default=1, help="keep_factors in the large case (1/0)")
    p.add_argument("--big-modes", nargs="+", default=["forward", "gradient"], choices=["forward", "gradient"],
                   help="which large-case runs to time")
    p.add_argument("--repeats", type=int, default=5, help="timing repeats (best of) of the sparse comparison cases")
    p.add_argument("--accuracy", action="store_true", help="only the error-vs-points-per-wavelength table")
    p.add_argument("--tag", default="", help="suffix of the result files (helmholtz<tag>.json / .md)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        res = worker(json.loads(args.worker))
        _write_atomic(args.out, json.dumps(res))
        return
    meta = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "machine": platform.platform(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    if args.accuracy:
        rows = accuracy_table()
        md = ["| points per wavelength | Q | max relative error |", "|---|---|---|"]
        md += [f"| {r['ppw']} | {r['q']:g} | {100 * r['max_rel_error']:.2f} % |" for r in rows]
        _write_atomic(os.path.join(RESULTS, "helmholtz_accuracy.json"), json.dumps({"meta": meta, "rows": rows},
                                                                                   indent=1))
        _write_atomic(os.path.join(RESULTS, "helmholtz_accuracy.md"), "\n".join(md) + "\n")
        print("\n".join(md))
        return
    cases = []
    for n in args.sizes:
        res = {}
        for method in ("sparse", "dense"):
            for mode in ("forward", "gradient"):
                spec = dict(n=n, pml=args.pml, n_freqs=args.freqs, n_shots=args.shots, method=method, mode=mode,
                            repeats=args.repeats if method == "sparse" else 1)
                res[(method, mode)] = run_case(spec)
                print(json.dumps({k: v for k, v in res[(method, mode)].items() if not k.startswith("grad_")}),
                      flush=True)
        row = {"n": n, "unknowns": (n + 2 * args.pml) ** 2, "n_freqs": args.freqs, "n_shots": args.shots,
               "pml": args.pml}
        for (method, mode), r in res.items():
            row[f"{method}_{mode}_s"] = r.get("time_s")
            row[f"{method}_{mode}_mem_MB"] = r.get("peak_mem_bytes", 0) / 2 ** 20 if "error" not in r else None
            if "error" in r:
                row[f"{method}_{mode}_error"] = r["error"]
        sg, dg = res[("sparse", "gradient")], res[("dense", "gradient")]
        if "error" not in sg and "error" not in dg:
            row["grad_rel_diff_v"] = _rel(sg["grad_v"], dg["grad_v"])
            row["grad_rel_diff_q"] = _rel(sg["grad_q"], dg["grad_q"])
            row["dense_over_sparse_time"] = dg["time_s"] / sg["time_s"]
            row["dense_over_sparse_mem"] = dg["peak_mem_bytes"] / max(sg["peak_mem_bytes"], 1)
        if "error" not in sg:
            row["sparse_grad_over_forward"] = sg["time_s"] / res[("sparse", "forward")]["time_s"]
        cases.append(row)
    big = None
    if args.big:
        big = {}
        for mode in args.big_modes:
            spec = dict(n=args.big, pml=20, n_freqs=args.big_freqs, n_shots=args.shots, method="sparse", mode=mode,
                        keep_factors=bool(args.big_keep_factors), obs="zero")
            r = run_case(spec)
            print(json.dumps({k: v for k, v in r.items() if not k.startswith("grad_")}), flush=True)
            big[mode] = {k: v for k, v in r.items() if not k.startswith("grad_")}
        for mode in ("forward", "gradient"):
            big.setdefault(mode, {"error": "not run"})
        if "error" not in big["forward"] and "error" not in big["gradient"]:
            big["grad_over_forward"] = big["gradient"]["time_s"] / big["forward"]["time_s"]
    out = {"meta": meta, "comparison": cases, "large": big}
    _write_atomic(os.path.join(RESULTS, f"helmholtz{args.tag}.json"), json.dumps(out, indent=1))
    md = [f"Command: `{meta['command']}` ({meta['cpu_count']} CPUs, OMP_NUM_THREADS={meta['OMP_NUM_THREADS']})", "",
          "| grid | unknowns | freqs x shots | sparse fwd (s) | sparse grad (s) | grad/fwd | dense grad (s) | "
          "dense/sparse time | sparse grad mem (MB) | dense grad mem (MB) | dense/sparse mem | grad rel. diff (v, Q) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def f(x, fmt="{:.3g}"):
        return "-" if x is None else fmt.format(x)
    for r in cases:
        md.append(f"| {r['n']}^2 | {r['unknowns']} | {r['n_freqs']} x {r['n_shots']} | {f(r['sparse_forward_s'])} | "
                  f"{f(r['sparse_gradient_s'])} | {f(r.get('sparse_grad_over_forward'))} | "
                  f"{f(r['dense_gradient_s'])} | {f(r.get('dense_over_sparse_time'))} | "
                  f"{f(r['sparse_gradient_mem_MB'])} | {f(r['dense_gradient_mem_MB'])} | "
                  f"{f(r.get('dense_over_sparse_mem'))} | {f(r.get('grad_rel_diff_v'), '{:.1e}')}, "
                  f"{f(r.get('grad_rel_diff_q'), '{:.1e}')} |")
    if big:
        fw, gr = big["forward"], big["gradient"]
        md += ["", "| large grid | unknowns | freqs x shots | keep_factors | forward (s) | gradient (s) | grad/fwd | "
               "forward mem (MB) | gradient mem (MB) |", "|---|---|---|---|---|---|---|---|---|",
               f"| {args.big}^2 | {(args.big + 40) ** 2} | {args.big_freqs} x {args.shots} | "
               f"{bool(args.big_keep_factors)} | {f(fw.get('time_s'))} | {f(gr.get('time_s'))} | "
               f"{f(big.get('grad_over_forward'))} | {f(fw.get('peak_mem_bytes', 0) / 2 ** 20)} | "
               f"{f(gr.get('peak_mem_bytes', 0) / 2 ** 20)} |"]
    _write_atomic(os.path.join(RESULTS, f"helmholtz{args.tag}.md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
