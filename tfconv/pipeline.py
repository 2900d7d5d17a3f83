"""The workflow's steps as plain functions of (config, names, paths): what each `tasks/*.py` calls.

Orchestration only: which points, which stores, which cluster, progress and manifests.  The
science lives in model/train/ntk/analysis; the cluster code in `tfconv.cluster`.  Every step
validates its inputs before any expensive work and writes its outputs atomically.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import numpy as np

from . import store
from .config import ConfigError, expand_grid, load_config, run_id, train_config
from .provenance import provenance


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
            st.flush()

    def flush(self):
        for st in self.streams:
            st.flush()

    def fileno(self):  # libraries that need a real descriptor (faulthandler) get the log file's
        return self.streams[0].fileno()

    def isatty(self):
        return False


@contextlib.contextmanager
def task_log(path: Optional[str]) -> Iterator[None]:
    """Send everything the step prints to its log file, and to stderr so progress shows on screen."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = _Tee(fh, old_err)
        sys.stderr = _Tee(fh, old_err)
        try:
            yield
        except BaseException:
            import traceback

            traceback.print_exc()
            raise
        finally:
            sys.stdout, sys.stderr = old_out, old_err


def _log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def _check_writable(path) -> None:
    """Fail early, naming the folder, when outputs cannot be written under `path`."""
    probe = Path(path).resolve().parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {probe} is a file, not a folder; choose another `results` folder")
    if not os.access(probe, os.W_OK):
        raise PermissionError(f"cannot write {path}: folder {probe} is not writable; choose another `results` folder")


def experiment(cfg: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    if name not in cfg["experiments"]:
        raise ConfigError(f"experiment '{name}' is not in the config; defined: {', '.join(cfg['experiments'])}")
    return cfg["experiments"][name]


# ------------------------------------------------------------------------------------------------

def simulate_data(cfg: Mapping[str, Any], name: str, out: str) -> str:
    """Write dataset `name` to the Zarr store `out` (generator settings, seed, content hash in attrs)."""
    from .datasets import build_dataset

    if name not in cfg["datasets"]:
        raise ConfigError(f"dataset '{name}' is not in the config; defined: {', '.join(cfg['datasets'])}")
    _check_writable(out)
    t0 = time.time()
    ds = build_dataset(name, cfg["datasets"][name])
    digest = store.write_dataset(out, ds, provenance(cfg["datasets"][name], dataset=name))
    _log(f"[simulate_data] {name}: X {ds.X.shape}, y {ds.y.shape}, sha256 {digest[:16]}..., {time.time() - t0:.1f}s")
    return digest


def _points(cfg, exp) -> List[Dict[str, Any]]:
    return expand_grid(exp)


def train_grid(cfg: Mapping[str, Any], name: str, data_store: str, train_store: str, manifest: str,
               threads: int = 1) -> Dict[str, Any]:
    """Train every grid point of experiment `name` on Ray (resuming), then write the manifest last."""
    from .cluster.ray_grid import run_grid

    exp = experiment(cfg, name)
    ds_meta = store.read_dataset(data_store).meta  # validates the data store before Ray starts
    _check_writable(train_store)
    store.check_train_store(train_store, ds_meta["content_hash"], train_config(exp).to_dict())
    points = _points(cfg, exp)
    n = ds_meta.get("n_samples") or ds_meta.get("n_train")
    for p in points:
        if "n_samples" in p and n is not None and p["n_samples"] > n:
            raise ConfigError(f"experiments.{name}.grid.n_samples: {p['n_samples']} exceeds the dataset's {n} samples")
    store.ensure_train_store(train_store, {
        "experiment": name, "points": points, "dataset_store": str(data_store),
        "dataset_sha256": store.dataset_hash(data_store),
        "checkpoint_epochs": sorted(int(e) for e in exp["train"]["checkpoint_epochs"]),
        "gram": bool(exp["gram"]), "epochs": int(exp["train"]["epochs"]),
    })
    rc = cfg["ray"]
    t0 = time.time()
    from .cluster.ray_slurm import ray_cluster_address

    # ray.slurm_allocation inside a SLURM job: a Ray cluster over the job's nodes, stopped on exit
    needed = not all(store.run_complete(train_store, run_id(p)) for p in points)
    with ray_cluster_address(rc, needed=needed, log=_log) as address:
        results = run_grid(
            name, exp, points, data_store, train_store, address=address, num_cpus=max(1, int(threads)),
            cpus_per_task=rc["cpus_per_task"], gpus_per_task=rc["gpus_per_task"], max_retries=rc["max_retries"],
            threads_per_run=cfg["threads_per_run"], log=_log, vectorise=rc["vectorise"],
        )
    runs = {}
    for p in points:
        rid = run_id(p)
        if not store.run_complete(train_store, rid):
            raise store.StoreError(f"run {rid} did not complete; see the log above")
        attrs = store.read_run(train_store, rid)["attrs"]
        runs[rid] = {"point": p, "status": attrs["status"], "diverged_epoch": attrs["diverged_epoch"]}
    n_div = sum(r["status"] == "diverged" for r in runs.values())
    summary = {
        "experiment": name, "store": str(train_store), "n_runs": len(runs), "n_diverged": n_div,
        "trained_now": sorted(r["run_id"] for r in results if not r.get("skipped")),
        "nodes": sorted({str(r.get("node_id")) for r in results if r.get("node_id")}),
        "seconds": time.time() - t0, "runs": runs,
        "dataset_sha256": store.dataset_hash(data_store), "provenance": provenance(exp, experiment=name),
    }
    store.write_json_atomic(manifest, summary)
    _log(f"[train_grid] {name}: {len(runs)} runs ({n_div} diverged), trained {len(summary['trained_now'])} now, "
         f"{summary['seconds']:.0f}s")
    return summary


def assemble_gram(cfg: Mapping[str, Any], name: str, data_store: str, train_store: str, gram_store: str,
                  manifest: str) -> Dict[str, Any]:
    """Assemble every Gram of experiment `name` with Dask into Zarr (resuming), then the manifest."""
    from .cluster.dask_gram import assemble_grams, dask_client

    exp = experiment(cfg, name)
    ds = store.read_dataset(data_store)
    _check_writable(gram_store)
    store.check_train_store(train_store, ds.meta["content_hash"], train_config(exp).to_dict(), required=True)
    store.check_gram_store(gram_store, cfg["gram"]["block_size"])
    points = _points(cfg, exp)
    gcfg = cfg["gram"]

    def n_of(point):
        return int(point.get("n_samples", ds.n_samples))

    with dask_client(cfg["dask"], log=_log) as client:
        info = assemble_grams(
            exp, points, n_of, data_store, train_store, gram_store, client, engine=gcfg["engine"],
            block_size=gcfg["block_size"], chunk_size=gcfg["chunk_size"], retries=cfg["dask"]["retries"],
            threads=cfg["threads_per_run"], provenance=provenance(None, experiment=name), log=_log,
        )
    info.update(experiment=name, store=str(gram_store), engine=gcfg["engine"], block_size=gcfg["block_size"])
    _warn_step_sizes(cfg, name, exp, points, gram_store, n_of)
    store.write_json_atomic(manifest, info)
    return info


def _warn_step_sizes(cfg, name, exp, points, gram_store, n_of) -> List[str]:
    """Warn when the configured step size exceeds the stable one, 2N/lambda_max(K_0) (mean loss)."""
    from .analysis import stable_step_size

    eta = float(exp["train"]["step_size"])
    warnings = []
    for p in points:
        rid = run_id(p)
        if not store.gram_complete(gram_store, rid, 0):
            continue
        _, ev = store.read_gram(gram_store, rid, 0)
        s = stable_step_size(float(ev[-1]), n_of(p), exp["train"]["loss"])
        if eta > s:
            warnings.append(rid)
            _log(f"WARNING [{name}] {rid}: step_size {eta:g} exceeds the stable step size 2/lambda_max "
                 f"= {s:.3g} (loss '{exp['train']['loss']}'); gradient descent may diverge or oscillate")
    return warnings


def aggregate(cfg: Mapping[str, Any], name: str, data_store: str, train_store: str, gram_store: Optional[str],
              out: str) -> None:
    """Gather runs and Gram statistics of experiment `name` into one xarray dataset in Zarr."""
    from .aggregate import build_dataset, gram_statistics

    exp = experiment(cfg, name)
    ds_meta = dict(store.read_dataset(data_store).meta)
    points = _points(cfg, exp)
    runs, grams = {}, {}
    extra_vars: Dict[str, Any] = {}
    for p in points:
        rid = run_id(p)
        r = store.read_run(train_store, rid)
        runs[rid] = {"status": r["attrs"]["status"], "diverged_epoch": r["attrs"]["diverged_epoch"], "curves": r["curves"]}
        if gram_store and exp["gram"]:
            K0 = None
            for e in sorted(int(x) for x in exp["train"]["checkpoint_epochs"]):
                if not store.gram_complete(gram_store, rid, e):
                    continue
                K, ev = store.read_gram(gram_store, rid, e)
                if e == 0:
                    K0 = K
                grams[(rid, e)] = gram_statistics(K, ev, K0)
    xds = build_dataset(name, exp, runs, grams, ds_meta, provenance(cfg, experiment=name))
    if "text_assumption" in exp["analyses"] and "n_samples" in exp["grid"]:
        xds = _add_data_kernel(xds, store.read_dataset(data_store), exp)
    final = Path(out)
    staging = final.parent / f".staging-{final.name}"
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    xds.to_zarr(str(staging), mode="w", consolidated=False, zarr_format=3)
    import shutil

    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)
    _log(f"[aggregate] {name}: {len(runs)} runs, {len(grams)} Gram matrices -> {out}")


def _add_data_kernel(xds, ds, exp):
    """lambda_min of the data kernel <vec X_i, vec X_j> / d_s of the first n samples, over n_samples."""
    from .ntk import gram_eigenvalues

    vals = []
    for n in exp["grid"]["n_samples"]:
        F = ds.X[:n].reshape(n, -1)
        vals.append(float(gram_eigenvalues(F @ F.T / ds.d_s)[0]))
    xds["data_kernel_lambda_min"] = (("n_samples",), np.asarray(vals))
    xds["data_kernel_lambda_min"].attrs["definition"] = "lambda_min of G_ij = <vec X_i, vec X_j> / d_s"
    return xds


def plot(cfg: Mapping[str, Any], name: str, analysis: str, aggregate_store: str, png: str, csv: str,
         slopes_csv: str, finding_txt: str) -> Dict[str, Any]:
    """Draw one analysis figure of experiment `name` (PNG + the CSV of its numbers + its slopes)."""
    import pandas as pd
    import xarray as xr

    from .plots import make_figure

    exp = experiment(cfg, name)
    xds = xr.open_zarr(aggregate_store, consolidated=False).load()
    settings = dict(cfg["analysis"], experiment=name, description=exp.get("description", ""))
    res = make_figure(analysis, xds, png, csv, settings)
    rows = [dict(r, experiment=name, analysis=analysis) for r in res.get("slopes", [])]
    pd.DataFrame(rows, columns=sorted({k for r in rows for k in r}) or ["experiment", "analysis"]).to_csv(slopes_csv, index=False)
    Path(finding_txt).write_text(res.get("finding", "") + "\n")
    _log(f"[plot] {name}/{analysis}: {res.get('finding', '')}")
    return res


def tables(cfg: Mapping[str, Any], aggregates: Mapping[str, str], slope_files: List[str], claims_csv: str,
           slopes_csv: str) -> None:
    """The claims table (each claim of the paper, measured, with a verdict) and all fitted slopes."""
    import pandas as pd
    import xarray as xr

    from .claims import evaluate_claims

    xdss = {name: xr.open_zarr(p, consolidated=False).load() for name, p in aggregates.items()}
    claims = evaluate_claims(xdss, cfg["analysis"])
    claims.to_csv(claims_csv, index=False)
    frames = [pd.read_csv(f) for f in slope_files if os.path.getsize(f) > 0]
    frames = [f for f in frames if len(f)]
    (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()).to_csv(slopes_csv, index=False)
    _log(f"[tables] claims:\n{claims.to_string(index=False)}")
