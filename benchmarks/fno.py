"""Evaluation of the trained FNO surrogate against the solver, and FNO-FWI vs finite-difference FWI (paper 1).

Parts (``--parts``):

``val``
    validation relative L2 of the checkpoint on ``--val`` held-out samples of ``--data`` (the last ones), next to
    the homogeneous-medium baseline and paper 1's 0.273.
``generalisation``
    the square 5 % anomaly in a 3000 m/s background (outside the training family) on 64 x 64, and a paper-1 model
    refined to 128 x 128 (80 m, evaluated without retraining): relative L2 FNO vs solver and the waveforms at 8
    receivers (saved in the JSON).
``fwi``
    paper 1 Fig. 5: 20 sources, a receiver at every node, homogeneous 3000 m/s start, Adam (lr 0.01 on km/s),
    ``--iterations`` iterations, noise-free data. Three runs: the FNO inverting the finite-difference solver's
    data (the realistic case: the network's error is in the residual), the FNO inverting data it generated itself
    (paper 1 does not say which data it inverted; this is the setting where network error cannot hurt), and the
    finite-difference solver (probinv.physics.acoustic, AD gradient) inverting its own data
    (``--fd-iterations``). Relative L2 model misfit, its history, and seconds per iteration side by side (the ratio
    is the honest speed-up on this machine).
``timing``
    only the seconds per FWI iteration of both (no trained network needed: the cost does not depend on the
    weights), for a quick CPU/GPU comparison.

Run::

    OMP_NUM_THREADS=2 python3 benchmarks/fno.py --checkpoint probinv/surrogate/pretrained/paper1.pt \\
        --data fno_data.nc --parts val,generalisation,fwi --iterations 1000
    OMP_NUM_THREADS=2 python3 benchmarks/fno.py --parts timing --repeats 3

Writes ``benchmarks/results/fno.json`` and ``benchmarks/results/fno.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv._files import write_text_atomic  # noqa: E402
from probinv.surrogate import FNOSurrogate, evaluate, load_pretrained  # noqa: E402
from probinv.surrogate.data import (  # noqa: E402
    SimulationConfig,
    homogeneous_response,
    load_dataset,
    sample_batch,
    simulate_wavefields,
)

PAPER1 = {"val_rel_l2": 0.273, "fwi_fno": 0.0319, "fwi_sem": 0.0289}


def fwi_sources(n: int = 20, nz: int = 64, nx: int = 64) -> torch.Tensor:
    """``n`` sources on a 4 x 5 lattice inside the grid, ``Tensor[n, 2]`` (z, x)."""
    zs = torch.linspace(8, nz - 9, 4).round().long()
    xs = torch.linspace(6, nx - 7, 5).round().long()
    src = torch.stack(torch.meshgrid(zs, xs, indexing="ij"), dim=-1).reshape(-1, 2)
    return src[:n]


def fno_data(sur: FNOSurrogate, v: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """All-node frames for every source through the FNO, ``[n_src, n_frames, nz, nx]``."""
    return sur(v[None].expand(src.shape[0], *v.shape), src)


def fd_data(v: torch.Tensor, src: torch.Tensor, cfg: SimulationConfig) -> torch.Tensor:
    """All-node frames for every source through the solver (one call, 20 shots; differentiable),
    ``[n_src, n_frames, nz, nx]``."""
    from probinv.physics import acoustic, ricker

    amp = ricker(cfg.freq, cfg.nt, cfg.dt, cfg.t0, dtype=v.dtype, device=v.device).expand(src.shape[0], 1, cfg.nt)
    loc = src.reshape(-1, 1, 2).to(v.device)
    _, snaps = acoustic(v, cfg.dx, cfg.dt, amp.contiguous(), loc, loc, pml_width=cfg.pml_width,
                        accuracy=cfg.accuracy, return_wavefield=True, wavefield_every=cfg.frame_every)
    return snaps[:, 1:cfg.n_frames + 1]  # snapshot j is step j * frame_every; frame k is snapshot k + 1


def run_fwi(forward, v_true: torch.Tensor, observed: torch.Tensor, iterations: int, lr: float = 0.01,
            clock=time.perf_counter, history_every: int = 10, label: str = "") -> dict:
    """Adam on the velocity in km/s from a homogeneous 3000 m/s start; L2 misfit of all frames at all nodes.

    Returns the final relative L2 model misfit ``||v - v_true|| / ||v_true||``, the median seconds per iteration
    (forward + backward + step), the data misfit at the first and last iteration, the model misfit every
    ``history_every`` iterations (``history``: ``[[iteration, rel_l2], ...]``, iteration counted after the step)
    and the final model (m/s, nested lists) for the figure."""
    vkm = torch.full_like(v_true, 3.0).requires_grad_(True)
    opt = torch.optim.Adam([vkm], lr=lr)
    times, losses = [], []
    history = [[0, _rel(1000 * vkm.detach(), v_true)]]
    t_start = time.perf_counter()
    for it in range(1, iterations + 1):
        t = clock()
        opt.zero_grad(set_to_none=True)
        loss = ((forward(1000 * vkm) - observed) ** 2).sum()
        loss.backward()
        opt.step()
        times.append(clock() - t)
        losses.append(float(loss.detach()))
        if it % history_every == 0 or it == iterations:
            history.append([it, _rel(1000 * vkm.detach(), v_true)])
            print(f"  {label} it {it}/{iterations}: loss {losses[-1]:.4g}, model rel L2 {history[-1][1]:.4f}, "
                  f"{time.perf_counter() - t_start:.0f} s", flush=True)
    v = 1000 * vkm.detach()
    return {"rel_l2_model": _rel(v, v_true), "seconds_per_iteration":
            sorted(times)[len(times) // 2], "loss_first": losses[0], "loss_last": losses[-1], "iterations": iterations,
            "history": history, "model": v.cpu().tolist()}


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="trained checkpoint (default: load_pretrained())")
    ap.add_argument("--data", default=None, help="data file for the validation part")
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--parts", default="val,generalisation,fwi")
    ap.add_argument("--iterations", type=int, default=1000, help="FNO-FWI iterations (paper 1: 1000)")
    ap.add_argument("--fd-iterations", type=int, default=None,
                    help="finite-difference FWI iterations (default --iterations; on 2 CPU cores one FD iteration "
                         "with 20 shots costs seconds, so fewer are affordable: the FNO misfit at the same "
                         "iteration is in its history)")
    ap.add_argument("--repeats", type=int, default=3, help="iterations timed by the timing part")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="time FWI iterations in wall time or process CPU time (busy machine, --threads 1)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    cfg = SimulationConfig()
    dev = torch.device(args.device)
    res = {"threads": args.threads, "clock": args.clock, "device": str(dev), "load_average_before": os.getloadavg(),
           "paper1": PAPER1}
    if parts == ["timing"]:
        torch.manual_seed(0)
        sur = FNOSurrogate(cfg.n_frames, {"nz": 64, "nx": 64, "dx": cfg.dx}, cfg.times, v_mean=3000.0,
                           v_std=150.0, target="residual", simulation=cfg.to_dict(), device=dev)
        sur.homogeneous.copy_(homogeneous_response(cfg).to(dev))
    else:
        sur = load_pretrained(path=args.checkpoint, map_location=dev) if args.checkpoint else load_pretrained()
        res["metadata"] = {k: v for k, v in sur.metadata.items() if k not in ("residual_std", "time")}
    for p in sur.parameters():
        p.requires_grad_(False)  # FWI differentiates w.r.t. the velocity only
    v_true = sample_batch(cfg, seed=12345, batch=0, batch_size=1)[0][0].to(dev)
    src = fwi_sources().to(dev)

    if "val" in parts:
        if args.data is None:
            raise SystemExit("--data is needed for the validation part")
        import netCDF4

        with netCDF4.Dataset(args.data) as nc:
            n = len(nc.dimensions["sample"])
        data = load_dataset(args.data, n - args.val, n)  # the held-out tail only (the file is ~5 GB)
        va = {k: data[k] for k in ("velocity", "source", "wavefield")}
        ev = evaluate(sur, va)
        res["val"] = {"rel_l2": ev["rel_l2"], "baseline_rel_l2": ev.get("baseline_rel_l2"), "n": args.val}

    if "generalisation" in parts:
        out = {}
        anomaly = torch.full((64, 64), 3000.0, device=dev)
        anomaly[24:40, 24:40] = 3150.0  # square 5 % anomaly
        fine_v = torch.nn.functional.interpolate(v_true[None, None], size=(128, 128), mode="bilinear",
                                                 align_corners=False)[0, 0]
        receivers = [(2, 8 * k + 4) for k in range(8)]  # 8 receivers along a line near the top
        for name, v, s, dx in (("anomaly_64", anomaly, torch.tensor([[32, 10]]), cfg.dx),
                               ("random_128", fine_v, torch.tensor([[64, 40]]), cfg.dx / 2)):
            with torch.no_grad():
                pred = sur(v[None], s.to(dev), dx=dx)[0]
                true = simulate_wavefields(v[None].double(), s, cfg, dx=dx)[0].to(pred)
            f = 1 if v.shape[0] == 64 else 2
            out[name] = {"rel_l2": _rel(pred, true),
                         "receivers": [(f * z, f * x) for z, x in receivers],
                         "fno": [pred[:, f * z, f * x].tolist() for z, x in receivers],
                         "solver": [true[:, f * z, f * x].tolist() for z, x in receivers]}
        res["generalisation"] = out

    if "fwi" in parts or "timing" in parts:
        iters = args.iterations if "fwi" in parts else args.repeats
        fd_iters = (args.fd_iterations or args.iterations) if "fwi" in parts else args.repeats
        with torch.no_grad():
            observed = fd_data(v_true.double(), src, cfg).to(v_true)
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        every = max(1, min(10, fd_iters // 5))
        fno_run = run_fwi(lambda v: fno_data(sur, v, src), v_true, observed, iters, clock=clock,
                          history_every=every, label="FNO")
        fno_self = None
        if "fwi" in parts:  # a misfit result, not timed again by the timing part
            with torch.no_grad():
                observed_fno = fno_data(sur, v_true, src)
            fno_self = run_fwi(lambda v: fno_data(sur, v, src), v_true, observed_fno, iters, clock=clock,
                               history_every=every, label="FNO (FNO data)")
        fd_run = run_fwi(lambda v: fd_data(v, src, cfg), v_true, observed, fd_iters, clock=clock,
                         history_every=every, label="FD")
        at = dict(fno_run["history"]).get(fd_iters)
        res["fwi"] = {"fno": fno_run, "fno_on_fno_data": fno_self, "finite_difference": fd_run,
                      "fno_rel_l2_at_fd_iterations": at,
                      "fd_over_fno_time": fd_run["seconds_per_iteration"] / fno_run["seconds_per_iteration"],
                      "v_true": v_true.cpu().tolist()}
    res["load_average_after"] = os.getloadavg()

    lines = [f"# FNO evaluation ({res['device']}, {args.threads} threads, {args.clock} clock, load "
             f"{res['load_average_before'][0]:.2f} / {res['load_average_after'][0]:.2f})", "",
             "| quantity | probinv | paper 1 |", "|---|---|---|"]
    if "val" in res:
        lines.append(f"| validation rel. L2 ({res['val']['n']} models) | {res['val']['rel_l2']:.3f} | 0.273 |")
        if res["val"]["baseline_rel_l2"] is not None:
            lines.append(f"| homogeneous-medium baseline rel. L2 | {res['val']['baseline_rel_l2']:.3f} | - |")
    for name, g in res.get("generalisation", {}).items():
        lines.append(f"| {name}: FNO vs solver rel. L2 | {g['rel_l2']:.3f} | - |")
    if "fwi" in res:
        f = res["fwi"]
        if "fwi" in parts:
            lines.append(f"| FWI model rel. L2, FNO on solver data ({f['fno']['iterations']} it.) | "
                         f"{f['fno']['rel_l2_model']:.4f} | 0.0319 |")
            best = min(f["fno"]["history"], key=lambda h: h[1])
            lines.append(f"| (best FNO iterate on solver data: iteration {best[0]}) | {best[1]:.4f} | - |")
            lines.append(f"| FWI model rel. L2, FNO on FNO-generated data ({f['fno_on_fno_data']['iterations']} it.) | "
                         f"{f['fno_on_fno_data']['rel_l2_model']:.4f} | 0.0319 |")
            fdi = f["finite_difference"]["iterations"]
            lines.append(f"| FWI model rel. L2, finite differences ({fdi} it.) | "
                         f"{f['finite_difference']['rel_l2_model']:.4f} | 0.0289 (SEM + adjoint, 1000 it.) |")
            if fdi != f["fno"]["iterations"] and f["fno_rel_l2_at_fd_iterations"] is not None:
                lines.append(f"| FWI model rel. L2, FNO after {fdi} it. (same budget) | "
                             f"{f['fno_rel_l2_at_fd_iterations']:.4f} | - |")
            lines.append(f"| starting model (3000 m/s) rel. L2 | {f['fno']['history'][0][1]:.4f} | - |")
        lines.append(f"| s / FWI iteration, FNO | {f['fno']['seconds_per_iteration']:.3f} | ~1 (V100) |")
        lines.append(f"| s / FWI iteration, finite differences | {f['finite_difference']['seconds_per_iteration']:.3f} "
                     f"| ~100 (SEM) |")
        lines.append(f"| speed-up FD / FNO | {f['fd_over_fno_time']:.2f} | ~100 |")
    os.makedirs(args.out, exist_ok=True)
    for name, text in (("fno.json", json.dumps(res, indent=2)), ("fno.md", "\n".join(lines) + "\n")):
        write_text_atomic(os.path.join(args.out, name), text)
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
