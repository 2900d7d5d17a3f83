"""The units of work that the distributed layers schedule: one grid point, one Gram block.

Both are plain functions of file paths and small dicts, so the same code runs in-process, in a
Ray task on any node, or in a Dask task; they read their inputs from the Zarr stores and write
their results there (atomically), and return a small summary.  Both are idempotent: work already
complete in the store is skipped, which makes retries after a killed worker safe.
"""
from __future__ import annotations

import os
import socket
import time
from functools import lru_cache
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch

from . import store
from .config import model_spec, run_id, train_config
from .provenance import provenance


@lru_cache(maxsize=8)
def _dataset(path: str, mtime_ns: int):
    return store.read_dataset(path)


def load_dataset_cached(path: str):
    """A per-process cache of dataset stores (keyed by path and modification time)."""
    return _dataset(str(path), os.stat(os.path.join(path, "zarr.json")).st_mtime_ns)


def _accuracy_eval(spec, X, labels, X_test, labels_test):
    """Train/test accuracy of argmax f(X) (for classification datasets such as MNIST)."""
    from .model import forward

    scales = spec.scales()
    Xt = torch.as_tensor(X, dtype=spec.torch_dtype)
    Xte = torch.as_tensor(X_test, dtype=spec.torch_dtype) if X_test is not None else None

    def accuracy(params, X_, lab):
        dev = next(iter(params.values())).device
        return float((forward(params, X_.to(dev), scales).argmax(1).cpu().numpy() == lab).mean())

    def eval_fn(params, epoch):
        with torch.no_grad():
            out = {"train_accuracy": accuracy(params, Xt, labels)}
            if Xte is not None:
                out["test_accuracy"] = accuracy(params, Xte, labels_test)
        return out

    return eval_fn


def train_point(
    experiment: str,
    exp: Mapping[str, Any],
    point: Mapping[str, Any],
    data_store: str,
    train_store: str,
    threads: int = 1,
    config: Optional[Mapping[str, Any]] = None,
    eval_every: int = 10,
) -> Dict[str, Any]:
    """Train one grid point and write it to the experiment's train store (skipped if complete)."""
    from .train import train_gd

    rid = run_id(point)
    summary = {"run_id": rid, "host": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray  # only to report where the task ran; the computation does not use Ray

        if ray.is_initialized():
            summary["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        pass
    if store.run_complete(train_store, rid):
        summary.update(skipped=True, status=store.read_run(train_store, rid)["attrs"]["status"])
        return summary
    torch.set_num_threads(int(threads))
    ds = load_dataset_cached(data_store)
    if "n_samples" in point:
        ds = ds.subset(int(point["n_samples"]))
    spec = model_spec(exp, point, ds.d_s, ds.d, ds.n_outputs)
    tcfg = train_config(exp)
    eval_fn = None
    extra = ds.extra
    if ds.meta.get("kind") == "mnist" and "labels" in extra:
        n = ds.n_samples
        # labels are stored as digits; the one-hot column order is the configured class order
        classes = list(ds.meta.get("classes", range(ds.n_outputs)))
        col = {c: j for j, c in enumerate(classes)}
        lab_train = np.array([col[int(v)] for v in extra["labels"][:n]])
        lab_test = np.array([col[int(v)] for v in extra["labels_test"]]) if "labels_test" in extra else None
        acc = _accuracy_eval(spec, ds.X, lab_train, ds.X_test, lab_test)
        eval_fn = lambda params, epoch: acc(params, epoch) if (epoch % eval_every == 0 or epoch == tcfg.epochs) else {}  # noqa: E731
    device = None
    try:  # a Ray task that was given GPUs trains on one; everything else stays on the CPU
        import ray

        if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available():
            device = "cuda"
    except Exception:  # noqa: BLE001
        pass
    t0 = time.perf_counter()
    result = train_gd(spec, ds.X, ds.y, int(point.get("seed", 0)), tcfg, eval_fn=eval_fn, device=device)
    prov = provenance(None, experiment=experiment, run_id=rid, seed=int(point.get("seed", 0)),
                      dataset_sha256=ds.meta.get("content_hash"), threads=int(threads))
    store.write_run(train_store, rid, point, result, prov)
    summary.update(skipped=False, status=result.status, final_loss=result.final_loss,
                   seconds=time.perf_counter() - t0)
    return summary


@lru_cache(maxsize=4)
def _checkpoint(train_store: str, rid: str, epoch: int):
    run = store.read_run(train_store, rid)
    return run["attrs"], run["checkpoints"][epoch]


def gram_block(
    exp: Mapping[str, Any],
    point: Mapping[str, Any],
    data_store: str,
    train_store: str,
    gram_store: str,
    epoch: int,
    bi: int,
    bj: int,
    engine: str = "structured",
    block_size: int = 64,
    chunk_size: int = 64,
    threads: int = 1,
) -> Dict[str, Any]:
    """Compute block (bi, bj) of the NTK of one run at one checkpoint epoch and write it (idempotent)."""
    from .ntk import ntk_block, params_from_numpy

    rid = run_id(point)
    import zarr

    g = zarr.open_group(str(store.gram_path(gram_store, rid, epoch)), mode="a")
    if store.blocks_done(g)[bi, bj]:
        return {"run_id": rid, "epoch": epoch, "block": (bi, bj), "skipped": True}
    torch.set_num_threads(int(threads))
    ds = load_dataset_cached(data_store)
    if "n_samples" in point:
        ds = ds.subset(int(point["n_samples"]))
    attrs, arrays = _checkpoint(str(train_store), rid, int(epoch))
    spec = model_spec(exp, point, ds.d_s, ds.d, ds.n_outputs)
    params = params_from_numpy(arrays, dtype=spec.torch_dtype)
    ranges = store.block_ranges(ds.n_samples, block_size)
    (r0, r1), (c0, c1) = ranges[bi], ranges[bj]
    X_cols = None if bi == bj else ds.X[c0:c1]
    block = ntk_block(params, spec, ds.X[r0:r1], X_cols, engine=engine, chunk_size=chunk_size)
    store.write_block(g, bi, bj, block, block_size)
    return {"run_id": rid, "epoch": epoch, "block": (bi, bj), "skipped": False, "host": socket.gethostname()}


def train_group(
    experiment: str,
    exp: Mapping[str, Any],
    points: list,
    data_store: str,
    train_store: str,
    threads: int = 1,
) -> list:
    """Train grid points that share width (and n_samples) in one vectorised computation
    (`tfconv.train_batched`); each run is written to the store as by `train_point`."""
    from .train_batched import train_gd_vectorised

    todo = [p for p in points if not store.run_complete(train_store, run_id(p))]
    summaries = [{"run_id": run_id(p), "skipped": True} for p in points if p not in todo]
    if not todo:
        return summaries
    torch.set_num_threads(int(threads))
    ds = load_dataset_cached(data_store)
    if "n_samples" in todo[0]:
        ds = ds.subset(int(todo[0]["n_samples"]))
    specs = [model_spec(exp, p, ds.d_s, ds.d, ds.n_outputs) for p in todo]
    t0 = time.perf_counter()
    results = train_gd_vectorised(specs, ds.X, ds.y, [int(p.get("seed", 0)) for p in todo], train_config(exp))
    node = None
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        pass
    for p, res in zip(todo, results):
        rid = run_id(p)
        prov = provenance(None, experiment=experiment, run_id=rid, seed=int(p.get("seed", 0)),
                          dataset_sha256=ds.meta.get("content_hash"), threads=int(threads), vectorised=len(todo))
        store.write_run(train_store, rid, p, res, prov)
        summaries.append({"run_id": rid, "skipped": False, "status": res.status, "final_loss": res.final_loss,
                          "seconds": time.perf_counter() - t0, "node_id": node, "host": socket.gethostname()})
    return summaries
