"""Scaling benchmark (issue 19): shot-sharded gradients on 1 -> 2 processes, peak memory per rank against shot count
with chunking, and a scaling model on paper for N machines x M GPUs.

Problems
--------
strong    48 x 48 cells of 10 m (+ 8-cell PML), 16 shots along the top, 24 receivers, 300 steps of 2 ms, float64,
          flat prior (plain FWI gradient of the Gaussian log-likelihood). Wall time of ``--repeats`` gradients after
          one warm-up gradient, on 1 process and on 2 gloo processes (loopback, ``OMP_NUM_THREADS=1`` each: one
          thread per process), each rank propagating its 8 shots; the time of a run is the slowest rank's.
memory    32 x 32 cells of 10 m (+ 8-cell PML), 150 steps, float64: peak resident-set growth of one gradient (VmHWM
          after a reset through /proc/self/clear_refs, in a fresh process, glibc's mmap threshold fixed at 64 KiB so
          that freed tensors leave the resident set) for 4 .. 256 shots, unchunked (up to ``--max-unchunked``
          shots) and in chunks of ``--chunk`` shots.

Usage::

    python benchmarks/scaling.py            # about 5-10 minutes on 2 busy cores
    python benchmarks/scaling.py --quick    # smaller sizes (about a minute)

Results: ``benchmarks/results/scaling.json`` and ``scaling.md`` (atomic writes), including ``uptime`` before and
after (the machine is shared: the load average says how much the timings are to be trusted).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import warnings

import torch
from torch.utils.checkpoint import checkpoint

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from probinv import distributed  # noqa: E402
from probinv._files import write_text_atomic  # noqa: E402
from probinv.models import AcousticForward, Flat, Gaussian, build_model  # noqa: E402
from probinv.physics import ricker  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DT = torch.float64
_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def _model(n, shots, nt, chunk=None):
    src = torch.tensor([[[1, 1 + (s * (n - 3)) // max(shots - 1, 1)]] for s in range(shots)])
    rec = torch.tensor([[[1, j] for j in range(0, n, 2)]] * shots)
    amp = ricker(8.0, nt, 0.002, dtype=DT).reshape(1, 1, -1).repeat(shots, 1, 1)
    fwd = AcousticForward(10.0, 0.002, amp, src, rec, options={"pml_width": 8, "pml_vmax": 2500.0})
    v = torch.full((n, n), 2000.0, dtype=DT)
    v[n // 2:] = 2300.0
    with torch.no_grad(), distributed.local():
        data = fwd({"vp": v})
    return build_model({"vp": Flat((n, n))}, fwd, data, noise=Gaussian(1.0), chunk_size=chunk), v


def _status(key):  # kB, from /proc/self/status
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key)).split()[1])


# ---------------------------------------------------------------------------------------------- workers (subprocess)
def worker_strong(n, shots, nt, repeats):
    distributed.init_from_env(backend="gloo")
    model, v = _model(n, shots, nt)
    x = (v * 0.98).requires_grad_(True)

    def grad():
        (g,) = torch.autograd.grad(model.log_likelihood({"vp": x}), x)
        return g

    g = grad()  # warm-up
    distributed.barrier()
    t = time.perf_counter()
    for _ in range(repeats):
        g = grad()
    seconds = time.perf_counter() - t
    times = distributed.all_gather_object(seconds)
    if distributed.is_main():
        print(json.dumps({"seconds": max(times), "per_rank": times, "grad_norm": float(g.norm())}))
    if distributed.is_active():
        torch.distributed.destroy_process_group()


def worker_memory(n, shots, nt, chunk):
    model, v = _model(n, shots, nt, None if chunk == 0 else chunk)
    x = (v * 0.98).requires_grad_(True)
    one, _ = _model(n, 1, nt)
    torch.autograd.grad(one.log_likelihood({"vp": x}), x)  # warm-up below either run's peak
    # and a checkpointed one: torch.utils.checkpoint's first use loads ~70 MiB of code, once per process
    torch.autograd.grad(checkpoint(lambda t: 2 * t, x, use_reentrant=False).sum(), x)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS:")
    t = time.perf_counter()
    (g,) = torch.autograd.grad(model.log_likelihood({"vp": x}), x)
    print(json.dumps({"mib": (_status("VmHWM:") - base) / 1024.0, "seconds": time.perf_counter() - t,
                      "grad_norm": float(g.norm())}))


# ---------------------------------------------------------------------------------------------- driver
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, world=1, timeout=900, extra_env=None):
    port = str(_free_port())
    procs = []
    for r in range(world):
        env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "RANK": str(r), "LOCAL_RANK": str(r),
               "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, **(extra_env or {})}
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), *map(str, args)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode for p in procs):
        raise RuntimeError("\n".join(e for _, e in outs)[-3000:])
    return json.loads(outs[0][0].strip().splitlines()[-1])


def _uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def scaling_model(t_shot, nz, nx, bytes_per_value, shots, gpus_per_machine, machines, bw_intra, bw_inter, latency):
    """Time per gradient and parallel efficiency of shot sharding over ``machines x gpus_per_machine`` devices.

    Compute: ``ceil(shots / P) * t_shot`` (shots are independent; the slowest rank sets the pace). Communication:
    one ring all-reduce of the model gradient (``nz * nx`` values) per gradient, ``2 (P - 1) / P * V / B`` plus
    ``2 (P - 1)`` latencies, ``B`` the slowest link (inter-machine when ``machines > 1``).
    """
    p = machines * gpus_per_machine
    volume = nz * nx * bytes_per_value
    t1 = shots * t_shot
    compute = -(-shots // p) * t_shot
    bw = bw_inter if machines > 1 else bw_intra
    comm = 0.0 if p == 1 else 2 * (p - 1) / p * volume / bw + 2 * (p - 1) * latency
    t = compute + comm
    return {"machines": machines, "gpus_per_machine": gpus_per_machine, "devices": p, "compute_s": compute,
            "allreduce_s": comm, "time_s": t, "speedup": t1 / t, "efficiency": t1 / (p * t)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--max-unchunked", type=int, default=64)
    args = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    res = {"uptime_before": _uptime(), "torch": torch.__version__, "cpus": os.cpu_count()}
    n, shots, nt = (32, 8, 150) if args.quick else (48, 16, 300)
    strong = {}
    for world in (1, 2):
        strong[world] = _run(["strong", n, shots, nt, args.repeats], world=world)
        print(f"strong scaling, {world} process(es): {strong[world]['seconds']:.2f} s", flush=True)
    res["strong"] = {"grid": [n, n], "shots": shots, "nt": nt, "repeats": args.repeats,
                     "seconds_1": strong[1]["seconds"], "seconds_2": strong[2]["seconds"],
                     "per_rank_2": strong[2]["per_rank"], "speedup": strong[1]["seconds"] / strong[2]["seconds"],
                     "grad_norm_rel_diff": abs(strong[1]["grad_norm"] - strong[2]["grad_norm"])
                     / strong[1]["grad_norm"]}
    counts = [4, 16, 64] if args.quick else [4, 16, 64, 256]
    mem = []
    for s in counts:
        row = {"shots": s}
        for label, chunk in (("unchunked", 0), ("chunked", args.chunk)):
            if label == "unchunked" and s > args.max_unchunked:
                continue
            r = _run(["memory", 32, s, 150, chunk], extra_env=_MALLOC)
            row[f"{label}_mib"], row[f"{label}_s"] = r["mib"], r["seconds"]
            print(f"memory, {s} shots, {label}: {r['mib']:.1f} MiB, {r['seconds']:.2f} s", flush=True)
        mem.append(row)
    res["memory"] = {"grid": [32, 32], "nt": 150, "chunk": args.chunk, "rows": mem}
    # the scaling model: per-shot cost measured here (one gradient = forward + backward of one shot), scaled to a
    # field-scale grid by cells x steps; the network numbers are stated assumptions (typical hardware), not measured
    t_shot_here = strong[1]["seconds"] / args.repeats / shots
    cells_here = (n + 16) ** 2 * nt
    target = {"nz": 500, "nx": 500, "nt": 4000, "shots": 1000, "pml": 20, "bytes_per_value": 4}
    cells_target = (target["nz"] + 2 * target["pml"]) * (target["nx"] + 2 * target["pml"]) * target["nt"]
    gpu_speedup_assumed = 50.0  # assumption: one GPU runs the stencil ~50x faster than one CPU thread here
    t_shot_target = t_shot_here * cells_target / cells_here / gpu_speedup_assumed
    net = {"bw_intra": 100e9, "bw_inter": 12.5e9, "latency": 10e-6}  # NVLink-class, 100 Gb/s InfiniBand, 10 us
    rows = [scaling_model(t_shot_target, target["nz"], target["nx"], target["bytes_per_value"], target["shots"], m,
                          nm, **net) for nm in (1, 2, 8, 32) for m in (1, 4, 8)]
    res["model"] = {"t_shot_measured_cpu_s": t_shot_here, "cells_x_steps_here": cells_here,
                    "target": target, "cells_x_steps_target": cells_target, "gpu_speedup_assumed": gpu_speedup_assumed,
                    "t_shot_target_s": t_shot_target, "network_assumed": net,
                    "allreduce_bytes": target["nz"] * target["nx"] * target["bytes_per_value"], "rows": rows}
    res["uptime_after"] = _uptime()
    write_text_atomic(os.path.join(RESULTS, "scaling.json"), json.dumps(res, indent=1))
    write_text_atomic(os.path.join(RESULTS, "scaling.md"), _markdown(res))
    print(_markdown(res))


def _markdown(res):
    s = res["strong"]
    lines = ["# Scaling (benchmarks/scaling.py)", "",
             f"Machine: {res['cpus']} CPUs, torch {res['torch']}; load: before `{res['uptime_before']}`, after "
             f"`{res['uptime_after']}`.", "",
             "## Strong scaling, shot-sharded gradient (gloo, one thread per process)", "",
             f"{s['grid'][0]} x {s['grid'][1]} cells, {s['shots']} shots, {s['nt']} steps, float64, "
             f"{s['repeats']} gradients.", "",
             "| processes | wall time (s) | speed-up |", "|---|---|---|",
             f"| 1 | {s['seconds_1']:.2f} | 1.00 |",
             f"| 2 | {s['seconds_2']:.2f} | {s['speedup']:.2f} |", "",
             f"Gradient norms of the two runs differ by {s['grad_norm_rel_diff']:.1e} (relative).", "",
             "## Peak memory per rank against shot count", "",
             f"Growth of the resident set during one gradient, {res['memory']['grid'][0]} x "
             f"{res['memory']['grid'][1]} cells, {res['memory']['nt']} steps, chunks of "
             f"{res['memory']['chunk']} shots.",
             "", "| shots | unchunked (MiB) | unchunked (s) | chunked (MiB) | chunked (s) |", "|---|---|---|---|---|"]
    for r in res["memory"]["rows"]:
        un = (f"{r['unchunked_mib']:.0f} | {r['unchunked_s']:.2f}" if "unchunked_mib" in r else "not run | -")
        lines.append(f"| {r['shots']} | {un} | {r['chunked_mib']:.0f} | {r['chunked_s']:.2f} |")
    m = res["model"]
    t = m["target"]
    lines += ["", "## Scaling model on paper: N machines x M GPUs", "",
              f"Per-shot gradient cost measured here: {m['t_shot_measured_cpu_s'] * 1e3:.1f} ms on one CPU thread for "
              f"{m['cells_x_steps_here']:.3g} cell-steps. Target survey: {t['shots']} shots, {t['nz']} x {t['nx']} "
              f"cells (+{t['pml']} PML), {t['nt']} steps ({m['cells_x_steps_target']:.3g} cell-steps per shot); "
              f"**assumed** GPU speed-up over one CPU thread {m['gpu_speedup_assumed']:.0f}x, giving "
              f"{m['t_shot_target_s']:.2f} s per shot-gradient. All-reduce per gradient: one {t['nz']} x {t['nx']} "
              f"float32 gradient = {m['allreduce_bytes'] / 1e6:.1f} MB (ring: 2 (P-1)/P of it per link). "
              f"**Assumed** links: {m['network_assumed']['bw_intra'] / 1e9:.0f} GB/s within a machine, "
              f"{m['network_assumed']['bw_inter'] / 1e9:.1f} GB/s between machines, "
              f"{m['network_assumed']['latency'] * 1e6:.0f} us latency.", "",
              "| machines | GPUs each | devices | compute (s) | all-reduce (s) | time/gradient (s) | efficiency |",
              "|---|---|---|---|---|---|---|"]
    for r in m["rows"]:
        lines.append(f"| {r['machines']} | {r['gpus_per_machine']} | {r['devices']} | {r['compute_s']:.2f} | "
                     f"{r['allreduce_s'] * 1e3:.2f} ms | {r['time_s']:.2f} | {r['efficiency']:.2f} |")
    lines += ["", "Efficiency is limited by the shot count per device (ceil(shots / P) rounding) long before the "
              "all-reduce: one gradient of a few MB costs milliseconds against seconds of propagation.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    if len(sys.argv) > 1 and sys.argv[1] == "strong":
        worker_strong(*map(int, sys.argv[2:6]))
    elif len(sys.argv) > 1 and sys.argv[1] == "memory":
        worker_memory(*map(int, sys.argv[2:6]))
    else:
        main()
