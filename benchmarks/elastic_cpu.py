"""SH / P-SV vs deepwave's elastic propagator on one thread, in CPU time (robust on a shared machine).

Each configuration runs in a fresh Python process (so peak RSS is its own): 200 x 200 cells at 10 m, PML 20,
accuracy 4, 4 shots at the surface with 50 surface receivers each, a 10 Hz Ricker force in y (SH) / z (P-SV), float32.
deepwave's ``elastic`` is run with its y-component source and receivers (the same 4 x 50 geometry). Writes
``benchmarks/results/elastic_cpu.{json,md}``.

    OMP_NUM_THREADS=1 GOMP_SPINCOUNT=1000 python3 benchmarks/elastic_cpu.py [--nt 1000] [--only sh psv deepwave]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from probinv._files import atomic_path  # noqa: E402

CHILD = r"""
import json, resource, sys, time, warnings
import torch
warnings.simplefilter("ignore")
torch.set_num_threads(1)
from probinv.physics import psv, ricker, sh
name, mode, nt, ck = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) or None
n, dx, dt = 200, 10.0, 1e-3
vp, vs, rho = (torch.full((n, n), c) for c in (2500.0, 1500.0, 2200.0))
amps = ricker(10.0, nt, dt).repeat(4, 1, 1)
src = torch.tensor([[[0, 25 + 50 * i]] for i in range(4)])
rec = torch.stack([torch.stack([torch.zeros(50, dtype=torch.long), torch.arange(50) * 4], -1)] * 4)
if mode == "grad":
    for p in (vp, vs, rho):
        p.requires_grad_(True)
c0 = time.process_time()
if name == "sh":
    d = sh(vs, rho, dx, dt, amps, src, rec, checkpoint_every=ck)
elif name == "psv":
    d = psv(vp, vs, rho, dx, dt, amps, src, rec, source_type="force_z", checkpoint_every=ck)
else:
    import deepwave
    lam, mu, b = deepwave.vpvsrho_to_lambmubuoyancy(vp, vs, rho)
    d = deepwave.elastic(lam, mu, b, dx, dt, source_amplitudes_y=amps, source_locations_y=src,
                         receiver_locations_y=rec, pml_width=20, accuracy=4, pml_freq=10.0,
                         location_interpolation="none", checkpoint_segments=ck or 1).receiver_amplitudes_y
if mode == "grad":
    d.pow(2).sum().backward()
cpu = time.process_time() - c0
print(json.dumps({"cpu_s": cpu, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def run(name, mode, nt, ck):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": "1000", "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", CHILD, name, mode, str(nt), str(ck or 0)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nt", type=int, default=1000)
    ap.add_argument("--only", nargs="*", default=["deepwave", "sh", "psv"])
    args = ap.parse_args(argv)
    rows = []
    for name in args.only:
        for mode, ck in (("fwd", None), ("grad", None), ("grad", 32)):
            if name == "deepwave" and ck is not None:
                continue
            r = run(name, mode, args.nt, ck)
            rows.append({"solver": name, "mode": mode, "checkpoint_every": ck, "nt": args.nt, **r,
                         "loadavg": os.getloadavg()})
            print(rows[-1], flush=True)
    ref = {r["mode"]: r for r in rows if r["solver"] == "deepwave"}
    lines = ["| solver | mode | checkpoint_every | CPU time (s) | peak RSS (GB) | time / deepwave "
             "| memory / deepwave |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = ref.get(r["mode"])
        tr = f"{r['cpu_s'] / d['cpu_s']:.2f}" if d else "n/a"
        mr = f"{r['peak_rss_gb'] / d['peak_rss_gb']:.2f}" if d else "n/a"
        lines.append(f"| {r['solver']} | {r['mode']} | {r['checkpoint_every'] or '-'} | {r['cpu_s']:.2f} | "
                     f"{r['peak_rss_gb']:.2f} | {tr} | {mr} |")
    out = os.path.join(ROOT, "benchmarks", "results")
    with atomic_path(os.path.join(out, "elastic_cpu.json")) as tmp:
        tmp.write_text(json.dumps(rows, indent=2))
    with atomic_path(os.path.join(out, "elastic_cpu.md")) as tmp:
        tmp.write_text("# SH / P-SV vs deepwave elastic, 200^2, 1 thread, CPU time\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
