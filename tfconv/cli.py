"""Command line: `tfconv verify PATH`, `tfconv validate CONFIG`, `tfconv status [RESULTS]` and `tfconv --version`."""
from __future__ import annotations

import argparse
import sys


def versions() -> str:
    """tfconv's version and git revision, and the versions of the libraries it runs on."""
    import importlib.metadata as md
    import subprocess
    from pathlib import Path

    from . import __version__

    parts = [f"tfconv {__version__}"]
    for dist in ("torch", "ray", "dask", "distributed", "zarr", "xarray", "snakemake"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    here = Path(__file__).resolve().parent.parent
    def git(*args):
        out = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        rev = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        git_rev = (rev + ("-dirty" if dirty else "")) if rev else "unknown (not a git checkout)"
    except (OSError, subprocess.SubprocessError):
        git_rev = "unknown (git not found)"
    return "\n".join(parts + [f"git revision {git_rev}"])


class _Version(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(versions())
        parser.exit()


def _load(path, what: str = "--config"):
    """A config file as the workflow runs it (merged over the default like `snakemake --configfile`)."""
    from .config.loader import load_user_config

    return load_user_config(path) if path else None


def _status(args) -> int:
    from .config import ConfigError
    from .pipeline.grid_status import (StatusError, apply_filters, failed_points, grid_status, parse_where,
                                       render, render_failed, render_summary, to_json)

    try:
        cfg = _load(args.config)
        where = list(args.where or [])
        for key in ("width", "scaling", "init", "seed", "n_samples", "state"):
            for v in getattr(args, key) or []:
                where.append(f"{key}={v}")
        results = args.results if args.results is not None else (cfg["results"] if cfg else "results")
        tables = apply_filters(grid_status(results, cfg, experiments=args.experiment), parse_where(where))
    except (ConfigError, StatusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(to_json(tables))
    elif args.failed:
        print(render_failed(tables, results))
    elif args.full:
        print(render(tables))
    else:
        print(render_summary(tables))
    return 1 if args.failed and failed_points(tables) else 0


def _validate(args) -> int:
    import yaml

    from .config import ConfigError, Workflow
    from .config.estimate import estimate, estimate_lines
    from .config.loader import default_config_path, load_user_config

    try:
        default = args.default or default_config_path()
        cfg = load_user_config(args.config, default)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wf = Workflow.from_config(cfg)
    est = estimate(cfg)
    lines = [f"{args.config}: merged over {default} as `snakemake --configfile {args.config}` merges it "
             "(its experiments replace the default's; every other section is the default's unless it sets it)",
             f"results folder: {cfg['results']}/"]
    lines += estimate_lines(est)
    n_runs = sum(len(e.points) for e in wf.experiments.values())
    n_figs = len(wf.figure_targets())
    ok = (f"OK: {args.config} is valid: {len(wf.experiments)} experiment(s), {n_runs} runs, {n_figs} figure(s) "
          f"-> {cfg['results']}/")
    if args.print:
        # the merged config first, then what was said as YAML comments (the output stays a valid config)
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        print("\n".join(f"# {ln}" for ln in lines + [ok]))
    else:
        print("\n".join(lines + [ok]))
    return 0


def main(argv=None) -> int:
    from .pipeline.logs import setup_logging

    parser = argparse.ArgumentParser(prog="tfconv", description=__doc__)
    parser.add_argument("--version", action=_Version,
                        help="print the versions of tfconv, torch, ray, dask, zarr, snakemake and the git revision")
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    loud.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only (no progress)")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check a results folder's content: digests of every run, Gram block, aggregate and table")
    v.add_argument("path", help="results folder (or one train/<experiment>.zarr store)")
    v.add_argument("--config", help="the workflow's config file: also check every run's settings against it")
    v.add_argument("--repair", action="store_true",
                   help="remove the damaged items and the manifests that vouch for them, so that the next run recomputes them")
    c = sub.add_parser("validate", help="check a config as the workflow would run it (merged over the default); "
                                        "ends with one OK line",
                       description="Read CONFIG, merge it over the default config exactly as `snakemake --configfile "
                                   "CONFIG` does, validate it, and print its results folder, the size of the work and "
                                   "one OK line (exit 0), or the errors (exit 2).")
    c.add_argument("config", help="YAML config file")
    c.add_argument("--default", help="the default config it is merged over (default: config/config.yaml beside the Snakefile)")
    c.add_argument("--print", action="store_true", help="also print the merged config with every default filled in")
    s = sub.add_parser("status", help="where the grid points of every experiment stand: one line per experiment "
                                      "(--full: every grid point)",
                       description="Where every grid point stands (read from the results folder): one line per "
                                   "experiment with its points by state (done / running / failed / diverged / missing) "
                                   "and its stages; --full lists every grid point with its state, latest loss, "
                                   "lambda_min(K_0) and kernel change. Filters combine (AND); a filter's values are "
                                   "comma-separated (OR). Exit code with --failed: 1 when any point failed.")
    s.add_argument("results", nargs="?", default=None,
                   help="results folder (default: the --config's results folder, else results)")
    s.add_argument("--config", help="the workflow's config: list its grids (planned points show as missing)")
    s.add_argument("--full", "--runs", dest="full", action="store_true",
                   help="one table per experiment with every grid point (default: one line per experiment)")
    s.add_argument("--experiment", action="append", metavar="NAME", help="only this experiment (repeatable)")
    s.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="keep points whose KEY (a grid axis: n_samples, width, scaling, init, step_size, seed; "
                        "or state) is VALUE (comma-separated: any of them); repeatable")
    for key, what in (("width", "width d_m"), ("scaling", "softmax scaling"), ("init", "initialisation"),
                      ("seed", "seed"), ("n_samples", "n_samples"), ("state", "state (done, diverged, running, failed, missing)")):
        s.add_argument(f"--{key.replace('_', '-')}", dest=key, action="append", metavar="V",
                       help=f"shorthand for --where {key}=V: {what}")
    s.add_argument("--failed", action="store_true", help="list the failed grid points and their errors (a rerun retries them)")
    s.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else 1 if args.verbose else 0)
    if args.command == "status":
        return _status(args)
    if args.command == "verify":
        from .config import ConfigError
        from .pipeline.verify import verify_results

        try:
            cfg = _load(args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 1 if verify_results(cfg, results=args.path, repair_damage=args.repair) else 0
    if args.command == "validate":
        return _validate(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
