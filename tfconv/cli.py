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


def _status(args) -> int:
    from .config import ConfigError, load_config
    from .pipeline.grid_status import (StatusError, apply_filters, failed_points, grid_status, parse_where,
                                       render, render_failed, to_json)

    try:
        cfg = load_config(args.config) if args.config else None
        where = list(args.where or [])
        for key in ("width", "scaling", "init", "seed", "n_samples", "state"):
            for v in getattr(args, key) or []:
                where.append(f"{key}={v}")
        tables = apply_filters(grid_status(args.results, cfg, experiments=args.experiment), parse_where(where))
    except (ConfigError, StatusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(to_json(tables))
    elif args.failed:
        print(render_failed(tables, args.results))
    else:
        print(render(tables))
    return 1 if args.failed and failed_points(tables) else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tfconv", description=__doc__)
    parser.add_argument("--version", action=_Version,
                        help="print the versions of tfconv, torch, ray, dask, zarr, snakemake and the git revision")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check a results folder's content: digests of every run, Gram block, aggregate and table")
    v.add_argument("path", help="results folder (or one train/<experiment>.zarr store)")
    v.add_argument("--config", help="the workflow's config file: also check every run's settings against it")
    v.add_argument("--repair", action="store_true",
                   help="remove the damaged items and the manifests that vouch for them, so that the next run recomputes them")
    c = sub.add_parser("validate", help="validate a config file against the schema and print it with defaults")
    c.add_argument("config", help="YAML config file")
    s = sub.add_parser("status", help="a table per experiment of its grid points: done / running / failed / diverged / missing",
                       description="Where every grid point stands (read from the results folder): state, latest loss, "
                                   "lambda_min(K_0), kernel change. Filters combine (AND); a filter's values are "
                                   "comma-separated (OR). Exit code with --failed: 1 when any point failed.")
    s.add_argument("results", nargs="?", default="results", help="results folder (default: results)")
    s.add_argument("--config", help="the workflow's config: list its grids (planned points show as missing)")
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
    if args.command == "status":
        return _status(args)
    if args.command == "verify":
        from .config import ConfigError, load_config
        from .pipeline.verify import verify_results

        try:
            cfg = load_config(args.config) if args.config else None
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 1 if verify_results(cfg, results=args.path, repair_damage=args.repair) else 0
    if args.command == "validate":
        import yaml

        from .config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        from .config.estimate import estimate, estimate_lines

        # the size of the work first, as YAML comments (the output stays a valid config)
        print("\n".join(f"# {line}" for line in estimate_lines(estimate(cfg))))
        print(yaml.safe_dump(cfg, sort_keys=False))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
