"""Acoustic forward only, one process, probinv's compiled kernel and deepwave alternating call by call.

A finer look at the issue's "forward <= 1.0x deepwave, and a second thread must make it faster" target than
``benchmarks/native.py`` (a fresh process per configuration, medians of a few calls): here both solvers run in the
same process, alternating, ``--repeats`` calls each, and the table gives the minimum and the median of each one's
wall and CPU time (``time.process_time``: the process's CPU time, less sensitive to a busy machine than the wall
time). The problems are those of ``benchmarks/native.py`` (``squareN``: N x N, dx 10 m, PML 20, accuracy 4, float32,
4 shots, 50 receivers, ``--nt`` steps of 1 ms). Each thread count runs in its own process with ``GOMP_SPINCOUNT=1000``
and ``OMP_NUM_THREADS`` set; the load average is logged before and after.

Usage::

    python benchmarks/native_forward.py                                   # square100 square200, 1 and 2 threads
    python benchmarks/native_forward.py --problems square400 --nt 250 --repeats 20

Writes ``benchmarks/results/native_forward.json`` and ``native_forward.md`` (atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv._files import write_text_atomic  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _worker(problem: str, threads: int, nt: int, repeats: int) -> dict:
    import warnings

    import deepwave  # the bench extra
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from native import _problem

    from probinv.physics import acoustic

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    v, dx, dt, amp, src, rec, opts, dw_pml, freq, _ = _problem(problem, nt, nt)

    def probinv_call():
        return acoustic(v, dx, dt, amp, src, rec, backend="native", **opts)

    def deepwave_call():
        return deepwave.scalar(v, dx, dt, source_amplitudes=amp, source_locations=src, receiver_locations=rec,
                               accuracy=opts["accuracy"], pml_width=dw_pml, pml_freq=freq)[-1]

    out = {"probinv": {"wall": [], "cpu": []}, "deepwave": {"wall": [], "cpu": []}}
    with torch.no_grad():
        probinv_call(), deepwave_call()  # warm-up: the kernel's load, first-touch allocations
        for _ in range(repeats):
            for name, fn in (("probinv", probinv_call), ("deepwave", deepwave_call)):
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                out[name]["wall"].append(time.perf_counter() - t0)
                out[name]["cpu"].append(time.process_time() - c0)
    return out


def _markdown(result) -> str:
    lines = ["# Acoustic forward: probinv native vs deepwave, alternating in one process", "",
             f"Command: `{result['command']}`. float32, `GOMP_SPINCOUNT=1000`, {result['repeats']} calls each. "
             f"Load average (1 min) {result['load_min']:.2f} .. {result['load_max']:.2f} on {os.cpu_count()} CPUs.", "",
             "| problem | threads | probinv min CPU (s) | deepwave min CPU (s) | ratio | probinv median wall (s) | "
             "deepwave median wall (s) | ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if "error" in r:
            lines.append(f"| {r['problem']} | {r['threads']} | error: {r['error'][:60]} | | | | | |")
            continue
        p, d = r["probinv"], r["deepwave"]
        pc, dc = min(p["cpu"]), min(d["cpu"])
        pw, dw = statistics.median(p["wall"]), statistics.median(d["wall"])
        lines.append(f"| {r['problem']} | {r['threads']} | {pc:.4f} | {dc:.4f} | {pc / dc:.2f} | {pw:.4f} | "
                     f"{dw:.4f} | {pw / dw:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", nargs="+", default=["square100", "square200"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--nt", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        problem, threads, nt, repeats = args.worker
        print(json.dumps(_worker(problem, int(threads), int(nt), int(repeats))))
        return
    os.makedirs(RESULTS, exist_ok=True)
    result = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:])),
              "repeats": args.repeats, "runs": []}
    loads = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for problem in args.problems:
        for threads in args.threads:
            env = dict(os.environ, GOMP_SPINCOUNT="1000", OMP_NUM_THREADS=str(threads),
                       MKL_NUM_THREADS=str(threads), PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
            load0 = os.getloadavg()
            loads.append(load0[0])
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", problem, str(threads),
                                str(args.nt), str(args.repeats)], env=env, capture_output=True, text=True)
            if p.returncode == 0:
                r = json.loads(p.stdout.strip().splitlines()[-1])
            else:
                r = {"error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
            r.update(problem=problem, threads=threads, load_before=load0, load_after=os.getloadavg())
            loads.append(r["load_after"][0])
            result["runs"].append(r)
            result["load_min"], result["load_max"] = min(loads), max(loads)
            write_text_atomic(os.path.join(RESULTS, "native_forward.json"), json.dumps(result, indent=1))
            write_text_atomic(os.path.join(RESULTS, "native_forward.md"), _markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
