#!/usr/bin/env python
"""Compare two results folders bitwise: every Zarr array, every table, every finding.

    python scripts/compare_results.py RESULTS_A RESULTS_B [--ignore-figure-csv]

Used to show that a refactoring leaves the workflow's outputs unchanged: run the same config
before and after, then compare.  What is compared:

* every Zarr array under data/, train/, gram/ and aggregate/ (found by its ``zarr.json``): shape,
  dtype and bytes, NaN in the same places (``np.array_equal(equal_nan=True)``, so bitwise for
  finite values);
* the attributes of every Zarr group and array, except those that record *when/where/how fast*
  a result was made (``provenance``, ``wall_seconds``, ``created``, ``seconds*``) and paths;
* every CSV and text file under tables/ and figures/ byte for byte (PNG files are not compared:
  matplotlib output is not part of the contract);
* the JSON manifests under train/, gram/ with the same exclusions.

Exit status 0 when everything matches, 1 otherwise; one line per difference.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

VOLATILE = {"provenance", "wall_seconds", "created", "seconds", "seconds_blocks", "seconds_eigenvalues",
            "host", "pid", "nodes", "node_id", "trained_now", "dataset_store", "store", "timings",
            "blocks_computed", "blocks_skipped", "finalized"}  # what this run did, not what it holds


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _zarr_nodes(root: Path):
    """Relative paths of every Zarr node (group or array) below root."""
    return {str(p.parent.relative_to(root)): p for p in root.rglob("zarr.json")}


def compare(a: Path, b: Path, ignore_figure_csv: bool = False) -> list:
    import zarr

    problems = []
    na, nb = _zarr_nodes(a), _zarr_nodes(b)
    for missing in sorted(set(na) ^ set(nb)):
        where = "only in A" if missing in na else "only in B"
        if "/.staging" in missing or missing.startswith(".staging"):
            continue
        problems.append(f"zarr node {missing}: {where}")
    n_arrays = 0
    for rel in sorted(set(na) & set(nb)):
        ma = json.loads(na[rel].read_text())
        mb = json.loads(nb[rel].read_text())
        if _strip(ma.get("attributes", {})) != _strip(mb.get("attributes", {})):
            problems.append(f"{rel}: attributes differ")
        if ma.get("node_type") == "array":
            n_arrays += 1
            xa = np.asarray(zarr.open_array(str(a / rel), mode="r")[...])
            xb = np.asarray(zarr.open_array(str(b / rel), mode="r")[...])
            if xa.shape != xb.shape or xa.dtype != xb.dtype:
                problems.append(f"{rel}: shape/dtype {xa.shape}/{xa.dtype} vs {xb.shape}/{xb.dtype}")
                continue
            eq_nan = xa.dtype.kind in "fc"
            if not np.array_equal(xa, xb, equal_nan=eq_nan):
                if eq_nan:
                    diff = np.nanmax(np.abs(xa.astype(float) - xb.astype(float)))
                    problems.append(f"{rel}: values differ (max abs difference {diff:.3g})")
                else:
                    problems.append(f"{rel}: values differ")
    files = 0
    for sub in ("tables", "figures"):
        fa = {str(p.relative_to(a)): p for p in (a / sub).rglob("*") if p.is_file() and p.suffix in (".csv", ".txt")}
        fb = {str(p.relative_to(b)): p for p in (b / sub).rglob("*") if p.is_file() and p.suffix in (".csv", ".txt")}
        for rel in sorted(set(fa) ^ set(fb)):
            problems.append(f"{rel}: only in {'A' if rel in fa else 'B'}")
        for rel in sorted(set(fa) & set(fb)):
            if ignore_figure_csv and rel.startswith("figures/") and rel.endswith(".csv") and not rel.endswith(".slopes.csv"):
                continue
            files += 1
            if fa[rel].read_bytes() != fb[rel].read_bytes():
                problems.append(f"{rel}: contents differ")
    for sub in ("train", "gram"):
        for pa in sorted((a / sub).glob("*.json")):
            pb = b / sub / pa.name
            files += 1
            if not pb.exists():
                problems.append(f"{sub}/{pa.name}: only in A")
            elif _strip(json.loads(pa.read_text())) != _strip(json.loads(pb.read_text())):
                problems.append(f"{sub}/{pa.name}: manifest differs")
    print(f"compared {len(set(na) & set(nb))} Zarr nodes ({n_arrays} arrays) and {files} files")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--ignore-figure-csv", action="store_true", help="skip the per-figure CSVs (drawing data)")
    args = p.parse_args(argv)
    problems = compare(Path(args.a), Path(args.b), args.ignore_figure_csv)
    for line in problems:
        print("DIFF", line)
    print("IDENTICAL" if not problems else f"{len(problems)} difference(s)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
