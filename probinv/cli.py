"""The ``probinv`` command.

::

    probinv demo [--out DIR] [--small] [--nuts]      built-in Bayesian FWI demo -> probinv-demo/
    probinv scenarios [--verbose]                    list the named synthetic set-ups
    probinv simulate CONFIG [--out DIR]              observed data (NetCDF) + figures from a TOML configuration
    probinv invert CONFIG [--method M] [--resume]    MAP / Laplace / SVI / SVGD / NUTS -> posterior.nc + figures
    probinv report RESULT.nc [--out DIR]             summary, diagnostics and figures of a posterior file

Exit status: 0 on success, 2 for an invalid command line or configuration (nothing has run), 1 for any other error,
130 when interrupted (rerun ``invert`` with ``--resume`` to continue from the last checkpoint).
"""
from __future__ import annotations

import argparse
import inspect
import logging
import sys
from pathlib import Path

from ._version import __version__

log = logging.getLogger("probinv")

__all__ = ["main"]


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("probinv")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


# ----------------------------------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------------------------------
def _cmd_demo(args) -> int:
    from .demo import run_demo

    out = Path(args.out)
    files = run_demo(out, small=True if args.small else None, nuts=args.nuts, progress=not args.quiet)
    print(f"probinv demo: results in {out.resolve()}/")
    for what, path in files.items():
        print(f"  {what:14s} {path}")
    return 0


def _cmd_scenarios(args) -> int:
    from .scenarios import SCENARIOS, list_scenarios

    for name, line in list_scenarios().items():
        print(f"{name:16s} {line}")
        if args.verbose:
            sig = inspect.signature(SCENARIOS[name])
            opts = [f"{p.name}={p.default!r}" for p in sig.parameters.values() if p.name not in ("dtype", "device")]
            print(f"{'':16s}   options: {', '.join(opts)}")
    return 0


def _load(args):
    from .config import load_config

    return load_config(args.config)


def _out_dir(cfg, args) -> Path:
    return Path(args.out) if getattr(args, "out", None) else cfg.path(cfg.output.directory)


def _observed(cfg, setup):
    """Observed data and noise sigma: from [data].observed, else simulated from the true model with [noise]."""
    from . import io, workflow

    if cfg.data.observed is None:
        sim = workflow.simulate(setup, relative=cfg.noise.relative, sigma=cfg.noise.sigma, seed=cfg.noise.seed)
        return sim.observed, sim.sigma, sim
    p = cfg.path(cfg.data.observed)
    if p.suffix.lower() in (".sgy", ".segy"):
        g = io.read_segy_gather(p, setup.dx)
    else:
        g = io.read_gather(p)
    acq = setup.acquisition
    if tuple(g.data.shape) != (acq.n_shots, acq.n_receivers, acq.nt):
        from .config import ConfigError

        raise ConfigError([f"[data].observed = {cfg.data.observed!r} holds data shaped {tuple(g.data.shape)} but the "
                           f"configuration describes [n_shots, n_receivers, nt] = "
                           f"{[acq.n_shots, acq.n_receivers, acq.nt]}: make [acquisition] and [time] match the file"],
                          cfg.source)
    setup.acquisition.source_locations = g.source_locations
    setup.acquisition.receiver_locations = g.receiver_locations
    sigma = cfg.noise.sigma if cfg.noise.sigma is not None else cfg.noise.relative * float(g.data.pow(2).mean().sqrt())
    return g.data.to(setup.true["vp"].dtype), sigma, None


def _cmd_simulate(args) -> int:
    from . import io, plotting, workflow
    from .config import resolve

    cfg = _load(args)
    setup = resolve(cfg)
    out = _out_dir(cfg, args)
    sim = workflow.simulate(setup, relative=cfg.noise.relative, sigma=cfg.noise.sigma, seed=cfg.noise.seed)
    acq = setup.acquisition
    prov = cfg.to_json()
    io.write_model(out / "true_model.nc", setup.true, setup.dx, config=prov)
    io.write_model(out / "initial_model.nc", setup.initial, setup.dx, config=prov)
    io.write_gather(out / "observed.nc", data=sim.observed, dt=acq.dt, source_locations=acq.source_locations,
                    receiver_locations=acq.receiver_locations, dx=setup.dx, units="Pa", config=prov,
                    attrs={"noise_sigma": sim.sigma})
    io.write_gather(out / "clean.nc", data=sim.clean, dt=acq.dt, source_locations=acq.source_locations,
                    receiver_locations=acq.receiver_locations, dx=setup.dx, units="Pa", config=prov)
    plotting.save_figure(plotting.plot_model(setup.true["vp"], setup.dx, title="true model",
                                             sources=acq.source_locations, receivers=acq.receiver_locations),
                         out / "model.png")
    plotting.save_figure(plotting.plot_gather(sim.observed[0], acq.dt, title="observed, shot 0",
                                              receiver_x=acq.receiver_locations[0, :, 1] * setup.dx),
                         out / "gather.png")
    print(f"probinv simulate: {acq.n_shots} shots x {acq.n_receivers} receivers x {acq.nt} samples, noise sigma "
          f"{sim.sigma:.4g}; results in {out.resolve()}/ (observed.nc, clean.nc, true_model.nc, initial_model.nc, "
          f"model.png, gather.png)")
    return 0


def _cmd_invert(args) -> int:
    from . import workflow
    from .config import resolve

    cfg = _load(args)
    inf = dict(cfg.inference)
    if args.method:
        inf["method"] = args.method
    if args.steps:
        inf["steps"] = args.steps
    setup = resolve(cfg)
    out = _out_dir(cfg, args)
    out.mkdir(parents=True, exist_ok=True)
    observed, sigma, _ = _observed(cfg, setup)
    prior = workflow.build_prior(dict(cfg.prior), setup.initial["vp"], setup.dx, dt=setup.acquisition.dt,
                                 accuracy=cfg.physics.accuracy)
    model = workflow.build_model(setup, observed, sigma, prior)
    log.info(f"probinv invert: method {inf['method']}, {inf['steps']} MAP steps, output {out}/")
    res = workflow.run_inversion(model, method=inf["method"], optimizer=inf["optimizer"], steps=inf["steps"],
                                 lr=inf["lr"], rank=inf["rank"],
                                 num_samples=inf["num_samples"], warmup=inf["warmup"], num_chains=inf["num_chains"],
                                 max_tree_depth=inf["max_tree_depth"], n_particles=inf["n_particles"],
                                 seed=inf["seed"], checkpoint_dir=out / "checkpoints",
                                 checkpoint_every=cfg.output.checkpoint_every, resume=args.resume,
                                 stop_after=args.stop_after)
    post = res.posterior
    post.observed_data = observed
    post.dt = setup.acquisition.dt
    post.attrs.update(probinv_config=cfg.to_json(), noise_sigma=sigma)
    post.to_netcdf(out / "posterior.nc")
    if args.no_figures:
        print(f"probinv invert: {inf['method']} posterior in {(out / 'posterior.nc').resolve()}")
        return 0
    map_vp = res.map.mean("vp")
    from torch import no_grad

    with no_grad():
        predicted = workflow.forward_data(map_vp, setup)
    files = workflow.write_report(out, post, dx=setup.dx, true=setup.true["vp"] if cfg.data.observed is None else None,
                                  initial=setup.initial["vp"], map_field=map_vp, observed=observed,
                                  predicted=predicted, dt=setup.acquisition.dt, loss=res.loss,
                                  receiver_x=setup.acquisition.receiver_locations[0, :, 1] * setup.dx)
    print(f"probinv invert: {inf['method']} posterior in {(out / 'posterior.nc').resolve()}; figures: "
          f"{', '.join(p.name for p in files.values())}")
    return 0


def _cmd_report(args) -> int:
    from . import inference, workflow

    path = Path(args.result)
    if not path.is_file():
        raise FileNotFoundError(f"no such result file: {str(path)!r} (a posterior written by `probinv invert` or "
                                f"`probinv demo`)")
    post = inference.Posterior.from_netcdf(path)
    if "vp" not in post.field_names:
        raise ValueError(f"{str(path)!r} has no 'vp' field (fields: {list(post.field_names)})")
    out = Path(args.out) if args.out else path.parent / f"{path.stem}_report"
    if post.dx is None:
        raise ValueError(f"{str(path)!r} carries no grid spacing dx: it was not written by probinv")
    files = workflow.write_report(out, post, dx=post.dx, loss=post.attrs.get("loss_history"))
    print(f"{path}: method {post.method}, {post.num_chains} chain(s) x {post.num_draws} draw(s), fields "
          f"{list(post.field_names)}")
    print(files["summary"].read_text())
    print(f"figures and tables in {out.resolve()}/: {', '.join(p.name for p in files.values())}")
    return 0


def _cmd_train_fno(args) -> int:
    from .surrogate import pipeline

    res = pipeline.run(args, command="probinv " + " ".join(args.argv))
    print(f"FNO training: step {res['step']} of {res['steps_total']}, validation relative L2 "
          f"{res['val_rel_l2']:.4f} (homogeneous-medium baseline {res['baseline_rel_l2']})")
    if "exported" in res:
        print(f"exported network: {res['exported']} ({res['export_mb']:.1f} MB)")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="probinv", description="Probabilistic seismic inversion (Bayesian FWI).")
    p.add_argument("--version", action="version", version=f"probinv {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final result lines")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("demo", help="run the built-in Bayesian FWI demo (< 5 min on 2 CPU cores)")
    d.add_argument("--out", default="probinv-demo", help="output folder (default: probinv-demo)")
    d.add_argument("--small", action="store_true", help="reduced mode (also: PROBINV_DEMO_SMALL=1)")
    d.add_argument("--nuts", action="store_true", help="also run a short preconditioned NUTS after Laplace")
    d.set_defaults(func=_cmd_demo)

    s = sub.add_parser("scenarios", help="list the named synthetic set-ups")
    s.add_argument("-v", "--verbose", action="store_true", help="also list each scenario's options")
    s.set_defaults(func=_cmd_scenarios)

    m = sub.add_parser("simulate", help="simulate observed data from a TOML configuration")
    m.add_argument("config", help="TOML configuration file")
    m.add_argument("--out", help="output folder (default: [output].directory)")
    m.set_defaults(func=_cmd_simulate)

    i = sub.add_parser("invert", help="invert observed (or simulated) data: MAP, then a posterior method")
    i.add_argument("config", help="TOML configuration file")
    i.add_argument("--method", choices=["map", "laplace", "svi", "svgd", "nuts"],
                   help="overrides [inference].method")
    i.add_argument("--steps", type=int, help="overrides [inference].steps")
    i.add_argument("--resume", action="store_true", help="continue from the checkpoints in the output folder")
    i.add_argument("--out", help="output folder (default: [output].directory)")
    i.add_argument("--no-figures", action="store_true", help="write posterior.nc only (figures later: probinv report)")
    i.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # test hook: simulate a kill after N blocks
    i.set_defaults(func=_cmd_invert)

    r = sub.add_parser("report", help="summary, diagnostics and figures of a posterior NetCDF file")
    r.add_argument("result", help="posterior file (posterior.nc)")
    r.add_argument("--out", help="output folder (default: <result>_report next to the file)")
    r.set_defaults(func=_cmd_report)

    from .surrogate.pipeline import __doc__ as fno_doc
    from .surrogate.pipeline import add_arguments as fno_arguments

    f = sub.add_parser("train-fno", help="simulate paper 1's training data and train the FNO surrogate (resumable)",
                       description=fno_doc.splitlines()[0], epilog=fno_doc,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    fno_arguments(f)
    f.set_defaults(func=_cmd_train_fno)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``probinv`` console script; returns the exit status."""
    from .config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.quiet)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"probinv {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        hint = " (rerun with --resume to continue from the last checkpoint)" if args.command == "invert" else ""
        print(f"probinv {args.command}: interrupted{hint}" + (f": {exc}" if str(exc) else ""), file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"probinv {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
