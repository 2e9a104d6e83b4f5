"""The JAX solver's gradient against the compiled C kernel (``probinv.physics.acoustic``'s CPU default), side by side.

64 x 64 cells of 10 m (vp 2000-2200 m/s, random), PML 20, accuracy 4, 4 shots (10 Hz Ricker at row 2), 32 receivers
at row 2, 500 steps of 1 ms, float64, one thread; the gradient of ``sum(d^2)`` to the velocity. The two alternate
call by call (``--repeats`` each, after one untimed call: JAX's compilation, the kernel's load); medians of wall time.
The issue-18 target: the JAX gradient no slower than the PyTorch solver's.

Usage::

    OMP_NUM_THREADS=1 GOMP_SPINCOUNT=1000 python benchmarks/jax_gradient.py --repeats 5

Writes ``benchmarks/results/jax_gradient.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv._files import write_text_atomic  # noqa: E402
from probinv.physics import acoustic, ricker  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=64, help="cells per side")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import jax  # noqa: PLC0415  (the jax extra)
    import jax.numpy as jnp  # noqa: PLC0415

    from probinv import jax as pj  # noqa: PLC0415

    n, nt, ns, dx, dt = args.n, 500, 4, 10.0, 1e-3
    v = 2000.0 + 200.0 * np.random.default_rng(0).random((n, n))
    amp = ricker(10.0, nt, dt).to(torch.float64).repeat(ns, 1, 1)
    src = torch.tensor([[[2, int(x)]] for x in np.linspace(4, n - 5, ns)])
    rec = torch.tensor([[[2, x] for x in range(0, n, 2)]] * ns)
    g_jax = jax.jit(jax.grad(lambda vv: (pj.acoustic(vv, dx, dt, amp.numpy(), src.numpy(), rec.numpy(),
                                                      pml_width=20) ** 2).sum()))

    def jax_call():
        return np.asarray(g_jax(jnp.asarray(v)).block_until_ready())

    def native_call():
        vt = torch.tensor(v, requires_grad=True)
        (acoustic(vt, dx, dt, amp, src, rec, pml_width=20) ** 2).sum().backward()
        return vt.grad.numpy()

    t0 = time.perf_counter()
    gj = jax_call()
    compile_s = time.perf_counter() - t0
    gn = native_call()
    times = {"jax": [], "native": []}
    for _ in range(args.repeats):
        for name, f in (("jax", jax_call), ("native", native_call)):
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    med = {k: float(np.median(x)) for k, x in times.items()}
    res = {"command": "python benchmarks/jax_gradient.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "load_average": os.getloadavg(), "n": n, "nt": nt, "shots": ns, "times": times, "median_s": med,
           "ratio_jax_over_native": med["jax"] / med["native"], "jax_first_call_s": compile_s,
           "max_relative_difference": float(np.abs(gj - gn).max() / np.abs(gn).max())}
    os.makedirs(RESULTS, exist_ok=True)
    write_text_atomic(os.path.join(RESULTS, "jax_gradient.json"), json.dumps(res, indent=1))
    md = ("| n | JAX gradient (s) | C kernel gradient (s) | JAX / C | max rel. difference | load |\n"
          "|---|---|---|---|---|---|\n"
          f"| {n} | {med['jax']:.3f} | {med['native']:.3f} | {res['ratio_jax_over_native']:.2f} | "
          f"{res['max_relative_difference']:.1e} | {res['load_average'][0]:.1f} |\n")
    write_text_atomic(os.path.join(RESULTS, "jax_gradient.md"), md)
    print(md)
    return res


if __name__ == "__main__":
    main()
