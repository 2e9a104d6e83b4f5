"""The ``probinv`` command.

::

    probinv demo [--out DIR] [--small] [--nuts]      built-in Bayesian FWI demo -> probinv-demo/
    probinv scenarios [--verbose]                    list the named synthetic set-ups
    probinv simulate CONFIG [--out DIR]              observed data (NetCDF) + figures from a TOML configuration
    probinv invert CONFIG [--method M] [--backend B] [--resume]
                                                     MAP / Laplace / SVI / SVGD / NUTS -> posterior.nc + figures
    probinv report RESULT.nc [--out DIR]             summary, diagnostics and figures of a posterior file

Exit status: 0 on success, 2 for an invalid command line, configuration, input file or output folder (one message
naming the file or key, the value and the fix; nothing has run and nothing is written), 1 for any other error, 130
when interrupted (rerun ``invert`` with ``--resume`` to continue from the last checkpoint).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys

from ._version import __version__

# OpenMP threads (PyTorch's intra-op pool) spin-wait between parallel regions by default: on a machine where other
# jobs run they burn the cores those jobs need (measured: `probinv demo --small` at load ~3, 30.7 s wall and 24.4 s
# CPU by default, 22.9 s and 15.3 s with GOMP_SPINCOUNT=1000). The command sets a short spin unless the user chose
# one; it must be in the environment before torch (and its libgomp) loads, which happens in _commands() below.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

log = logging.getLogger("probinv")

__all__ = ["build_parser", "main"]


def _commands(module: str = "workflow"):
    """The module ``probinv.<module>`` that implements a command, imported when the command runs.

    This is the CLI's one dispatch point into the rest of probinv and the only place it imports it: those modules
    load torch, pyro and matplotlib (seconds and hundreds of MB), which ``probinv --help``, ``--version`` and a
    mistyped command must not pay (issue 15: the help screen took 12.7 s). Everything else in this file imports only
    the standard library and ``probinv._version``.
    """
    return importlib.import_module(f"probinv.{module}")


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
    out = _commands("io").check_output_dir(args.out)  # before the work: nothing written, no traceback
    files = _commands("demo").run_demo(out, small=True if args.small else None, nuts=args.nuts,
                                       progress=not args.quiet)
    print(f"probinv demo: results in {out.resolve()}/")
    for what, path in files.items():
        print(f"  {what:14s} {path}")
    return 0


def _cmd_scenarios(args) -> int:
    scenarios = _commands("scenarios")
    for name, line in scenarios.list_scenarios().items():
        print(f"{name:16s} {line}")
        if args.verbose:
            sig = inspect.signature(scenarios.SCENARIOS[name])
            opts = [f"{p.name}={p.default!r}" for p in sig.parameters.values() if p.name not in ("dtype", "device")]
            print(f"{'':16s}   options: {', '.join(opts)}")
    return 0


def _load(args):
    return _commands("config").load_config(args.config)


def _cmd_simulate(args) -> int:
    cfg = _load(args)
    obs, files = _commands().run_simulation(cfg, args.out)
    acq, out = obs.setup.acquisition, files["observed"].parent
    # time gathers [shots, receivers, nt]; frequency-domain physics give spectra [shots, receivers, frequencies]
    axis = f"{obs.data.shape[2]} frequencies" if obs.setup.frequency_domain else f"{acq.nt} samples"
    print(f"probinv simulate: {acq.n_shots} shots x {acq.n_receivers} receivers x {axis}, noise sigma "
          f"{obs.sigma:.4g}; results in {out.resolve()}/ ({', '.join(p.name for p in files.values())})")
    return 0


def _cmd_invert(args) -> int:
    cfg = _load(args)
    res = _commands().run(cfg, args.out, method=args.method, steps=args.steps, resume=args.resume,
                          figures=not args.no_figures, stop_after=args.stop_after, progress=not args.quiet,
                          backend=args.backend)
    if not _commands("distributed").is_main():  # under torchrun: rank 0 wrote the files and reports them
        return 0
    method, post_file = res.posterior.method, res.files["posterior"]
    figures = [p.name for k, p in res.files.items() if k not in ("posterior", "map")]
    print(f"probinv invert: {method} posterior in {post_file.resolve()}"
          + (f"; figures: {', '.join(figures)}" if figures else ""))
    if res.verdict is not None:  # whether to trust it: the checks that failed say what to change
        print(f"\n{res.verdict}")
    return 0


def _cmd_report(args) -> int:
    post, files = _commands().report(args.result, args.out)
    print(f"{args.result}: method {post.method}, {post.num_chains} chain(s) x {post.num_draws} draw(s), fields "
          f"{list(post.field_names)}")
    print(files["summary"].read_text())
    print(f"figures and tables in {files['summary'].parent.resolve()}/: {', '.join(p.name for p in files.values())}")
    return 0


def _cmd_train_fno(args) -> int:
    res = _commands("surrogate.pipeline").run(args, command="probinv " + " ".join(args.argv))
    print(f"FNO training: step {res['step']} of {res['steps_total']}, validation relative L2 "
          f"{res['val_rel_l2']:.4f} (homogeneous-medium baseline {res['baseline_rel_l2']})")
    if "exported" in res:
        print(f"exported network: {res['exported']} ({res['export_mb']:.1f} MB)")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``probinv`` argument parser (standard library only: building it imports nothing heavy)."""
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
    i.add_argument("--backend", choices=["torch", "jax"],
                   help="where NUTS runs (jax: NumPyro, needs the jax extra); overrides [inference].backend")
    i.add_argument("--resume", action="store_true", help="continue from the checkpoints in the output folder")
    i.add_argument("--out", help="output folder (default: [output].directory)")
    i.add_argument("--no-figures", action="store_true", help="write posterior.nc only (figures later: probinv report)")
    i.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # test hook: kill after N MAP checkpoints
    i.set_defaults(func=_cmd_invert)

    r = sub.add_parser("report", help="summary, diagnostics and figures of a posterior NetCDF file")
    r.add_argument("result", help="posterior file (posterior.nc)")
    r.add_argument("--out", help="output folder (default: <result>_report next to the file)")
    r.set_defaults(func=_cmd_report)

    # train-fno's options come from probinv.surrogate.pipeline, which imports torch: they are added to this
    # placeholder (add_help=False, so that its --help reaches the full parser) only when the command is train-fno
    f = sub.add_parser("train-fno", help=_FNO_HELP, add_help=False)
    f.set_defaults(func=_cmd_train_fno)
    return p


_FNO_HELP = "simulate paper 1's training data and train the FNO surrogate (resumable)"


def _train_fno_parser() -> argparse.ArgumentParser:
    pipeline = _commands("surrogate.pipeline")
    f = argparse.ArgumentParser(prog="probinv train-fno", description=pipeline.__doc__.splitlines()[0],
                                epilog=pipeline.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pipeline.add_arguments(f)
    return f


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``probinv`` console script; returns the exit status."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "train-fno":
        args = _train_fno_parser().parse_args(rest, namespace=args)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        hint = " (rerun with --resume to continue from the last checkpoint)" if args.command == "invert" else ""
        print(f"probinv {args.command}: interrupted{hint}" + (f": {exc}" if str(exc) else ""), file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as exc:
        # bad input (a configuration, an input file, an output folder), checked before anything runs: status 2
        if isinstance(exc, (_commands("io").InputError, *_BAD_PATH)):
            hint = " (check the folder's permissions or pass another --out)" if isinstance(exc, PermissionError) else ""
            print(f"probinv {args.command}: {exc}{hint}", file=sys.stderr)
            return 2
        print(f"probinv {args.command}: error: {exc}", file=sys.stderr)
        return 1


# an input path that does not exist or has the wrong kind, an output that cannot be written
_BAD_PATH = (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
