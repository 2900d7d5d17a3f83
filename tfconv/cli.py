"""Command line: `tfconv verify PATH` and `tfconv validate CONFIG`."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tfconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check a results folder's content: digests of every run, Gram block, aggregate and table")
    v.add_argument("path", help="results folder (or one train/<experiment>.zarr store)")
    v.add_argument("--config", help="the workflow's config file: also check every run's settings against it")
    v.add_argument("--repair", action="store_true",
                   help="remove the damaged items and the manifests that vouch for them, so that the next run recomputes them")
    c = sub.add_parser("validate", help="validate a config file against the schema and print it with defaults")
    c.add_argument("config", help="YAML config file")
    args = parser.parse_args(argv)
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
