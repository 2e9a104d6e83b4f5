"""PyTorch vs JAX/NumPyro backends (issue 18): solver speed and NUTS efficiency, side by side in one run.

Solver (``probinv.physics.acoustic`` vs ``probinv.jax.acoustic``, float64, one thread each)
    Forward and gradient (of a weighted sum of the data w.r.t. the velocity) time per call, median of ``--repeats``
    calls after one warm call; for JAX the compilation (``jit(...).lower(v).compile()``) is timed separately.

    ============  ==========  ======  =======  ===========  ============  =========================
    set-up        grid        nt      shots    receivers    PML           notes
    ============  ==========  ======  =======  ===========  ============  =========================
    16x16         16 x 16     138     2        10           5             inference benchmark
    64x64         64 x 64     500     4        64           20            top receivers
    44x100        44 x 100    1500    16       100          20            paper 2's Marmousi2 set-up
                                                                         geometry, free surface
    ============  ==========  ======  =======  ===========  ============  =========================

    (The 44 x 100 model here is a smooth layered stand-in with the Marmousi2 set-up's size and velocities
    1500-4500 m/s, dx = 50 m, 5 Hz: the cost does not depend on the velocities; ``--nt-marmousi`` shortens it.)

NUTS (the 16 x 16, 2-shot acoustic problem of ``benchmarks/inference.py``, seed 0)
    MAP (L-BFGS) and the Laplace approximation once (PyTorch), then Laplace-preconditioned NUTS with the same
    settings by Pyro (``probinv.inference.nuts``) and NumPyro (``probinv.jax.nuts``): min bulk ESS over the 6
    latent coordinates, ESS per second (wall time of warm-up + sampling, NumPyro's compilation included and also
    reported without it) and per gradient (sampling phase), the time per gradient inside each sampler and alone
    (where the time goes), and the agreement of the two posteriors (mean difference in Monte-Carlo standard errors,
    std ratio). The same on the FNO posterior (``fno_problem``: the shipped surrogate as the forward operator).

Usage::

    python benchmarks/backends.py                 # 16 min on 2 cores at load 6-9 (FNO NUTS: 6.5 min)
    python benchmarks/backends.py --quick         # small sizes (~3 min)

Results: ``benchmarks/results/backends.json`` and ``backends.md`` (atomic writes).
"""
from __future__ import annotations

import os

# one thread each, before torch / jax start (XLA's CPU thread pool reads XLA_FLAGS at initialisation)
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import probinv.jax as pj  # noqa: E402
from probinv import diagnostics  # noqa: E402
from probinv._files import write_text_atomic  # noqa: E402
from probinv.fields import WhitenedField  # noqa: E402
from probinv.inference import laplace, map, nuts  # noqa: E402
from probinv.models import AcousticForward, Gaussian, build_model  # noqa: E402
from probinv.physics import acoustic, ricker  # noqa: E402
from probinv.surrogate import FNOOperator, load_pretrained  # noqa: E402
from probinv.surrogate.data import SimulationConfig  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DT = torch.float64
torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------------ solver set-ups
def setups(nt_marmousi: int, quick: bool) -> dict:
    out = {}
    n = 16
    out["16x16"] = dict(v=2000.0 + 100.0 * torch.rand(n, n, generator=torch.Generator().manual_seed(0), dtype=DT),
                        dx=20.0, dt=0.004, amp=ricker(5.0, 138, 0.004, dtype=DT).reshape(1, 1, -1).repeat(2, 1, 1),
                        src=torch.tensor([[[3, 0]], [[7, 0]]]),
                        rec=torch.tensor([[[j, n - 1] for j in range(10)]] * 2), kw=dict(pml_width=5))
    n, nt = 64, (200 if quick else 500)
    zz = torch.arange(n, dtype=DT)[:, None].expand(n, n)
    out["64x64"] = dict(v=1500.0 + 15.0 * zz, dx=10.0, dt=0.001,
                        amp=ricker(15.0, nt, 0.001, dtype=DT).reshape(1, 1, -1).repeat(4, 1, 1),
                        src=torch.tensor([[[1, x]] for x in (8, 24, 40, 56)]),
                        rec=torch.tensor([[[1, j] for j in range(n)]] * 4), kw=dict(pml_width=20))
    nz, nx, nt = 44, 100, (300 if quick else nt_marmousi)
    z = torch.arange(nz, dtype=DT)[:, None].expand(nz, nx)
    x = torch.arange(nx, dtype=DT)[None, :].expand(nz, nx)
    v = 1500.0 + 3000.0 * (z / (nz - 1)) ** 1.2 + 150.0 * torch.sin(x / 9.0) * (z > 5)
    ns = 16
    out["44x100"] = dict(v=v, dx=50.0, dt=0.004 if nt <= 300 else 0.002,
                         amp=ricker(5.0, nt, 0.004 if nt <= 300 else 0.002, dtype=DT).reshape(1, 1, -1).repeat(
                             ns, 1, 1),
                         src=torch.tensor([[[0, int(round(3 + i * 93 / (ns - 1)))]] for i in range(ns)]),
                         rec=torch.tensor([[[0, j] for j in range(nx)]] * ns), kw=dict(pml_width=20,
                                                                                      free_surface=True))
    return out


def _median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def bench_solver(name, s, repeats):
    v, amp, src, rec, kw = s["v"], s["amp"], s["src"], s["rec"], s["kw"]
    nt = amp.shape[-1]
    w = torch.randn(amp.shape[0], rec.shape[1], nt, generator=torch.Generator().manual_seed(1), dtype=DT)
    res = {"grid": list(v.shape), "nt": nt, "shots": int(amp.shape[0]), "receivers": int(rec.shape[1]), **kw}

    def t_fwd(backend):
        with torch.no_grad():
            return acoustic(v, s["dx"], s["dt"], amp, src, rec, backend=backend, **kw)

    def t_grad(backend):
        vv = v.clone().requires_grad_(True)
        (acoustic(vv, s["dx"], s["dt"], amp, src, rec, backend=backend, **kw) * w).sum().backward()
        return vv.grad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # PyTorch's CPU default (backend="auto") is the compiled C kernel ("native"); "torch" is the PyTorch
        # implementation (the path on GPUs)
        for b, key in (("native", "native"), ("torch", "torch")):
            d_t = t_fwd(b)
            g_t = t_grad(b)
            res[f"{key}_forward_s"] = _median_time(lambda: t_fwd(b), repeats)  # noqa: B023
            res[f"{key}_gradient_s"] = _median_time(lambda: t_grad(b), repeats)  # noqa: B023
        vj, ampj, wj = jnp.asarray(v.numpy()), amp.numpy(), jnp.asarray(w.numpy())
        fwd = jax.jit(lambda vv: pj.acoustic(vv, s["dx"], s["dt"], ampj, src, rec, **kw))
        grad = jax.jit(jax.grad(lambda vv: (pj.acoustic(vv, s["dx"], s["dt"], ampj, src, rec, **kw) * wj).sum()))
        # compilation alone: trace, lower and compile (XLA), without running
        t0 = time.perf_counter()
        fwd_c = fwd.lower(vj).compile()
        res["jax_forward_compile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        grad_c = grad.lower(vj).compile()
        res["jax_gradient_compile_s"] = time.perf_counter() - t0
        d_j = fwd_c(vj).block_until_ready()
        g_j = grad_c(vj).block_until_ready()
    res["jax_forward_s"] = _median_time(lambda: fwd_c(vj).block_until_ready(), repeats)
    res["jax_gradient_s"] = _median_time(lambda: grad_c(vj).block_until_ready(), repeats)
    for key in ("native", "torch"):
        res[f"gradient_ratio_jax_over_{key}"] = res["jax_gradient_s"] / res[f"{key}_gradient_s"]
        res[f"forward_ratio_jax_over_{key}"] = res["jax_forward_s"] / res[f"{key}_forward_s"]
    res["rel_diff_data"] = float(np.linalg.norm(np.asarray(d_j) - d_t.numpy()) / d_t.norm())
    res["rel_diff_gradient"] = float(np.linalg.norm(np.asarray(g_j) - g_t.numpy()) / g_t.norm())
    print(name, json.dumps(res), flush=True)
    return res


# ------------------------------------------------------------------------------------------------------ NUTS
def acoustic_problem(seed=0):
    """The acoustic problem of benchmarks/inference.py (16 x 16, 2 shots, 138 steps, 6 modes, 2 % noise)."""
    n, dx, dt, nt = 16, 20.0, 0.004, 138
    prior = WhitenedField((n, n), dx, covariance="matern", nu=1.5, a_z=100.0, a_x=100.0, mean=2000.0, std=100.0,
                          n_modes=6, bounds=(1500.0, 2600.0), dtype=DT)
    src = torch.tensor([[[3, 0]], [[7, 0]]])
    rec = torch.tensor([[[j, n - 1] for j in range(10)]] * 2)
    amp = ricker(5.0, nt, dt, dtype=DT).reshape(1, 1, -1).repeat(2, 1, 1)
    fwd = AcousticForward(dx, dt, amp, src, rec, options={"pml_width": 5, "pml_vmax": 2600.0})
    gt = torch.Generator().manual_seed(seed)
    z = torch.randn(6, generator=gt, dtype=DT)
    clean = fwd({"vp": prior(z)})
    sigma = 0.02 * float(clean.abs().max())
    data = clean + sigma * torch.randn(clean.shape, generator=gt, dtype=DT)
    return build_model({"vp": prior}, fwd, data, noise=Gaussian(sigma))


def _efficiency(post, seconds):
    z = post.samples["vp_z"].numpy()
    ess = float(diagnostics.ess(z).min())
    n_s = post.attrs["n_gradients_sampling"]
    return {"seconds": seconds, "n_gradients": post.attrs["n_gradients"], "n_gradients_sampling": n_s,
            "ess_min": ess, "rhat_max": float(diagnostics.rhat(z).max()), "ess_per_second": ess / seconds,
            "ess_per_gradient": ess / n_s, "mean_n_steps": float(post.sample_stats["n_steps"].double().mean()),
            "divergences": int(post.sample_stats["diverging"].sum())}


def bench_nuts(cfg):
    model = acoustic_problem(0)
    return _nuts_side_by_side(model, pj.from_torch_model(model), cfg, map_lr=1.0)


def fno_problem(n_modes: int, seed: int = 0):
    """NUTS through the shipped FNO surrogate (``probinv.surrogate.load_pretrained``): a 64 x 64 whitened von Karman
    prior (``benchmarks/fno_posterior.py``'s, truncated to ``n_modes``), 4 shots on the surface, 64 receivers, the
    surrogate's frames; data = the FNO's prediction for a prior draw + 2 % Gaussian noise (the surrogate's own
    posterior: this compares samplers, not the surrogate's accuracy). Returns the PyTorch model and its NumPyro twin
    (``fno_apply`` with the same weights; the network runs in float32 on both sides, the inference in float64)."""
    sur = load_pretrained()
    for p in sur.parameters():
        p.requires_grad_(False)
    cfg = SimulationConfig.from_dict(sur.config["simulation"]) if "simulation" in sur.config else SimulationConfig()
    prior = WhitenedField((64, 64), cfg.dx, covariance="von_karman", hurst=0.5, a_z=1600.0, a_x=1600.0,
                          mean=3000.0, std=150.0, n_modes=n_modes, bounds=(2400.0, 3600.0), dtype=DT)
    src = torch.tensor([[2, x] for x in (8, 24, 40, 56)])
    rec = torch.tensor([[2, x] for x in range(0, 64, 2)] + [[62, x] for x in range(0, 64, 2)])
    op = FNOOperator(sur, src, rec)

    def fwd_t(fields, shots=None):
        return op({"vp": fields["vp"].float()}, shots=shots).to(fields["vp"].dtype)

    gen = torch.Generator().manual_seed(seed)
    clean = fwd_t({"vp": prior(torch.randn(n_modes, generator=gen, dtype=DT))})
    sigma = 0.02 * float(clean.abs().max())
    data = clean + sigma * torch.randn(clean.shape, generator=gen, dtype=DT)
    tm = build_model({"vp": prior}, fwd_t, data, noise=Gaussian(sigma))
    params = pj.fno_params(sur)
    src_np, rz, rx = src.numpy(), jnp.asarray(rec[:, 0].numpy()), jnp.asarray(rec[:, 1].numpy())

    def fwd_j(fields, shots=None):
        if shots is not None:
            raise ValueError("the FNO benchmark runs every shot")
        v = fields["vp"]
        u = pj.fno_apply(params, jnp.broadcast_to(v.astype(jnp.float32), (len(src_np),) + v.shape), src_np)
        return jnp.swapaxes(u[:, :, rz, rx], 1, 2).astype(v.dtype)  # [shots, receivers, frames]

    fwd_j.n_shots = len(src_np)
    return tm, pj.from_torch_model(tm, forward=fwd_j)


def _nuts_side_by_side(model, jm, cfg, map_lr):
    """MAP + Laplace once (PyTorch), then Pyro and NumPyro NUTS with the same settings; ESS/s, ESS/gradient."""
    t0 = time.perf_counter()
    m = map(model, optimizer="lbfgs", num_steps=cfg["map_steps"], lr=map_lr)
    lap = laplace(model, map_posterior=m, seed=0)
    out = {"map_laplace_s": time.perf_counter() - t0}
    kw = dict(num_samples=cfg["samples"], warmup_steps=cfg["warmup"], num_chains=2, laplace_posterior=lap, seed=0,
              max_tree_depth=8)
    out["settings"] = kw | {"laplace_posterior": "laplace(map(lbfgs))"}
    z = torch.as_tensor(m.samples["vp_z"][0, 0])
    # time per gradient of the log density outside the samplers (median of 10 after a warm call)
    zt = z.clone().requires_grad_(True)

    def g_torch():
        zt.grad = None
        model.log_joint({"vp_z": zt}).backward()

    g_jax = jax.jit(jax.grad(lambda zz: jm.log_joint({"vp_z": zz})))
    zj = jnp.asarray(z.numpy())
    g_torch()
    g_jax(zj).block_until_ready()
    out["gradient_s"] = {"pyro": _median_time(g_torch, 10),
                         "numpyro": _median_time(lambda: g_jax(zj).block_until_ready(), 10)}
    t0 = time.perf_counter()
    p_pyro = nuts(model, **kw)
    out["pyro"] = _efficiency(p_pyro, time.perf_counter() - t0)
    print("pyro", json.dumps(out["pyro"]), flush=True)
    t0 = time.perf_counter()
    p_np = pj.nuts(jm, **kw)
    first = time.perf_counter() - t0
    # the same call with one iteration per chain: the set-up and compilation alone (the compiled program is not
    # reused across calls: new closures)
    t0 = time.perf_counter()
    pj.nuts(jm, **{**kw, "num_samples": 1, "warmup_steps": 1})
    compile_s = time.perf_counter() - t0
    out["numpyro"] = _efficiency(p_np, first)
    out["numpyro"]["compile_and_setup_s"] = compile_s
    out["numpyro"]["ess_per_second_without_compile"] = out["numpyro"]["ess_min"] / max(first - compile_s, 1e-9)
    for b in ("pyro", "numpyro"):  # seconds per gradient inside the sampler (compilation excluded for NumPyro)
        secs = out[b]["seconds"] - (compile_s if b == "numpyro" else 0.0)
        out[b]["seconds_per_gradient_in_sampler"] = secs / out[b]["n_gradients"]
    sp, sn = p_pyro.summary(var_names=["vp_z"]), p_np.summary(var_names=["vp_z"])
    se = np.hypot(sp["mcse_mean"].to_numpy(), sn["mcse_mean"].to_numpy())
    out["agreement"] = {"max_mean_diff_in_mcse": float((np.abs(sp["mean"].to_numpy() - sn["mean"].to_numpy())
                                                        / se).max()),
                        "std_ratio_numpyro_over_pyro": (sn["sd"].to_numpy() / sp["sd"].to_numpy()).tolist()}
    out["ratio_ess_per_second"] = out["numpyro"]["ess_per_second"] / out["pyro"]["ess_per_second"]
    out["ratio_ess_per_second_without_compile"] = (out["numpyro"]["ess_per_second_without_compile"]
                                                   / out["pyro"]["ess_per_second"])
    print("numpyro", json.dumps(out["numpyro"]), json.dumps(out["agreement"]), flush=True)
    return out


def bench_nuts_fno(cfg):
    tm, jm = fno_problem(cfg["fno_modes"])
    d_t = float(tm.log_joint({"vp_z": torch.zeros(cfg["fno_modes"], dtype=DT)}))
    d_j = float(jm.log_joint({"vp_z": jnp.zeros(cfg["fno_modes"], jnp.float64)}))
    out = _nuts_side_by_side(tm, jm, cfg, map_lr=1.0)
    out["n_modes"] = cfg["fno_modes"]
    out["log_joint_rel_diff_at_prior_mean"] = abs(d_j - d_t) / abs(d_t)
    return out


# ------------------------------------------------------------------------------------------------------ report
def _nuts_md(n, title) -> list:
    s = n["settings"]
    lines = ["", f"## NUTS on {title} (2 chains, {s['warmup_steps']} warm-up + {s['num_samples']} draws each, "
             "Laplace-preconditioned, max tree depth 8)", "",
             "| backend | seconds | gradients (all) | s / gradient in the sampler | s / gradient alone | min bulk ESS "
             "| ESS/s | ESS/gradient (sampling) | mean leapfrog steps | r-hat max | divergences |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in ("pyro", "numpyro"):
        r = n[b]
        lines.append(f"| {b} | {r['seconds']:.1f} | {r['n_gradients']} | {r['seconds_per_gradient_in_sampler']:.4f} | "
                     f"{n['gradient_s'][b]:.4f} | {r['ess_min']:.0f} | {r['ess_per_second']:.2f} | "
                     f"{r['ess_per_gradient']:.4f} | {r['mean_n_steps']:.2f} | {r['rhat_max']:.3f} | "
                     f"{r['divergences']} |")
    lines += ["", f"NumPyro / Pyro ESS per second: **{n['ratio_ess_per_second']:.1f}x** with NumPyro's set-up and "
              f"compilation ({n['numpyro']['compile_and_setup_s']:.1f} s) included, "
              f"**{n['ratio_ess_per_second_without_compile']:.1f}x** without it. Posterior agreement: max |mean "
              f"difference| = {n['agreement']['max_mean_diff_in_mcse']:.2f} Monte-Carlo standard errors, std "
              f"ratios {', '.join(f'{x:.2f}' for x in n['agreement']['std_ratio_numpyro_over_pyro'])}. "
              f"MAP + Laplace (PyTorch, shared): {n['map_laplace_s']:.1f} s."]
    return lines


def markdown(res) -> str:
    lines = ["## Solver: PyTorch vs JAX (float64, 1 thread each; seconds per call, median)", "",
             "PyTorch `native` = the CPU default (`backend=\"auto\"`, the compiled C kernel); `torch` = "
             "`backend=\"torch\"` (the PyTorch implementation, the GPU path).", "",
             "| set-up | grid | nt | shots | native fwd | torch fwd | jax fwd | native grad | torch grad | jax grad | "
             "jax grad / native | jax grad / torch | jax compile fwd / grad (s) | rel. diff data / grad |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["solver"].items():
        lines.append(f"| {name} | {r['grid'][0]} x {r['grid'][1]} | {r['nt']} | {r['shots']} | "
                     f"{r['native_forward_s']:.4f} | {r['torch_forward_s']:.4f} | {r['jax_forward_s']:.4f} | "
                     f"{r['native_gradient_s']:.4f} | {r['torch_gradient_s']:.4f} | {r['jax_gradient_s']:.4f} | "
                     f"{r['gradient_ratio_jax_over_native']:.2f} | {r['gradient_ratio_jax_over_torch']:.2f} | "
                     f"{r['jax_forward_compile_s']:.1f} / {r['jax_gradient_compile_s']:.1f}"
                     f" | {r['rel_diff_data']:.1e} / {r['rel_diff_gradient']:.1e} |")
    if "nuts" in res:
        lines += _nuts_md(res["nuts"], "the 16 x 16 acoustic problem")
    if "nuts_fno" in res:
        n = res["nuts_fno"]
        lines += _nuts_md(n, f"the FNO posterior (64 x 64, {n['n_modes']} modes, 4 shots, shipped network)")
        lines += [f"(log joint density PyTorch vs JAX at the prior mean: relative difference "
                  f"{n['log_joint_rel_diff_at_prior_mean']:.1e}, float32 network.)"]
    lines += ["", f"Machine: {res['machine']}; load before the run: {res['uptime_before']}; after: "
              f"{res['uptime_after']}. Command: `{res['command']}`."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--nt-marmousi", type=int, default=1500, help="time steps of the 44 x 100 set-up")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-nuts", action="store_true")
    ap.add_argument("--skip-solver", action="store_true")
    ap.add_argument("--skip-fno", action="store_true", help="skip the FNO-posterior NUTS comparison")
    ap.add_argument("--fno-modes", type=int, default=8, help="whitened modes of the FNO posterior")
    ap.add_argument("--fno-warmup", type=int, default=30, help="warm-up iterations per chain, FNO posterior")
    ap.add_argument("--fno-samples", type=int, default=50, help="draws per chain, FNO posterior")
    ap.add_argument("--only", nargs="*", help="solver set-ups to run (default all: 16x16 64x64 44x100)")
    ap.add_argument("--nuts-warmup", type=int, help="warm-up iterations per chain (default 60, quick 30)")
    ap.add_argument("--nuts-samples", type=int, help="draws per chain (default 100, quick 40)")
    ap.add_argument("--out", default=os.path.join(RESULTS, "backends"))
    args = ap.parse_args()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    res = {"command": "python " + " ".join(sys.argv), "uptime_before": uptime,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                      f"{torch.__version__}, jax {jax.__version__}", "solver": {}}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)

    def save():  # after every section: a killed run keeps what it finished
        res["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        write_text_atomic(args.out + ".json", json.dumps(res, indent=1))

    if not args.skip_solver:
        for name, s in setups(args.nt_marmousi, args.quick).items():
            if args.only and name not in args.only:
                continue
            res["solver"][name] = bench_solver(name, s, args.repeats)
            save()
    if not args.skip_nuts:
        cfg = dict(map_steps=40, warmup=30, samples=40) if args.quick else dict(map_steps=40, warmup=60, samples=100)
        cfg.update({k: v for k, v in (("warmup", args.nuts_warmup), ("samples", args.nuts_samples)) if v})
        cfg["fno_modes"] = args.fno_modes
        res["nuts"] = bench_nuts(cfg)
        save()
        if not args.skip_fno:
            res["nuts_fno"] = bench_nuts_fno({**cfg, "warmup": args.fno_warmup, "samples": args.fno_samples})
    save()
    md = markdown(res)
    write_text_atomic(args.out + ".md", md)
    print(md)


if __name__ == "__main__":
    main()
