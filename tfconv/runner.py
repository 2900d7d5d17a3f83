"""The units of work the cluster layers schedule: train one grid point, train a group of points in
one vectorised computation, compute one Gram block.

Plain functions of the typed experiment, its grid points and the store paths: the same code runs
in-process, in a Ray task on any node or in a Dask task.  Nothing here imports a scheduler; the
cluster layer passes in the ``device`` a task may use and the ``node_id`` it runs on (recorded in the
summary).  Every unit reads its inputs from the Zarr stores, writes its results there atomically
and returns a small summary; work already complete in the store is skipped (idempotent), which
makes retries after a killed worker safe.  `prepare` is the one place that turns a grid point into
what training needs (dataset subset, ModelSpec, accuracy curves, torch threads), for every unit.
A Gram's spectrum, computed once all its blocks are done, is not a unit of work here: the cluster
layer finalises it (`tfconv.cluster.dask_spectra.finalize_gram`, numerics in `tfconv.core.spectra`).
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from . import store
from .provenance import provenance

#: Epochs between two evaluations of the accuracy curves (and the last epoch).
EVAL_EVERY = 10


@lru_cache(maxsize=8)
def _dataset(path: str, mtime_ns: int):
    # the driver of the step verified the content hash; workers check the recorded hash only
    return store.read_dataset(path, verify=False)


def load_dataset_cached(path, expected_hash: Optional[str] = None):
    """A per-process cache of dataset stores (keyed by path and modification time).

    The content hash is verified once per job by the step's driver; a worker compares the store's
    recorded hash with the one the driver saw (`expected_hash`), which is cheap.
    """
    ds = _dataset(str(path), store.modified_ns(path))
    if expected_hash is not None and ds.meta.get("content_hash") != expected_hash:
        raise store.StoreError(f"dataset store {path} changed during the job: its hash is "
                               f"{str(ds.meta.get('content_hash'))[:16]}..., the step started with {expected_hash[:16]}...")
    return ds


def _accuracy_eval(spec, X, labels, X_test, labels_test, device=None):
    """Train/test accuracy of argmax f(X) (for classification datasets such as MNIST)."""
    from .core.model import forward

    scales = spec.scales()
    Xt = torch.as_tensor(X, dtype=spec.torch_dtype, device=device)
    Xte = torch.as_tensor(X_test, dtype=spec.torch_dtype, device=device) if X_test is not None else None

    def accuracy(params, X_, lab):
        return float((forward(params, X_, scales).argmax(1).cpu().numpy() == lab).mean())

    def eval_fn(params, epoch):
        with torch.no_grad():
            out = {"train_accuracy": accuracy(params, Xt, labels)}
            if Xte is not None:
                out["test_accuracy"] = accuracy(params, Xte, labels_test)
        return out

    return eval_fn


@dataclass
class Prepared:
    """What training one or more points of the same shape needs."""

    data: Any  # tfconv.data.Dataset (subset to the points' n_samples)
    specs: List[Any]  # ModelSpec per point
    eval_fn: Optional[Callable[[Dict[str, torch.Tensor], int], Dict[str, float]]]


def prepare(exp, points: Sequence[Any], data_store, threads: int = 1, device: Optional[str] = None,
            expected_hash: Optional[str] = None, eval_every: int = EVAL_EVERY, accuracy: bool = True) -> Prepared:
    """Dataset subset, ModelSpecs and (for classification data) the accuracy curves of `points`
    (which share n_samples), with torch's thread count set; the same for every unit of work."""
    torch.set_num_threads(int(threads))
    ds = load_dataset_cached(data_store, expected_hash)
    if "n_samples" in exp.grid:
        ds = ds.subset(points[0].n_samples)
    specs = [p.spec(ds) for p in points]
    eval_fn = None
    if accuracy and ds.is_classification:
        acc = _accuracy_eval(specs[0], ds.X, ds.class_columns("train"), ds.X_test, ds.class_columns("test"), device)
        last = exp.train.epochs

        def eval_fn(params, epoch):
            return acc(params, epoch) if (epoch % eval_every == 0 or epoch == last) else {}
    return Prepared(ds, specs, eval_fn)


def _summary(rid: str, node_id: Optional[str]) -> Dict[str, Any]:
    return {"run_id": rid, "host": socket.gethostname(), "pid": os.getpid(), "node_id": node_id}


class StepSizeError(ValueError):
    """A fixed step size above a run's stability limit, refused (train.step_check: refuse)."""


def init_run(exp, point, prep: Prepared, spec, log: Optional[Callable[[str], None]] = None):
    """The initial parameters and the kernel regime of one run (`tfconv.core.kernel.InitKernel`):
    K_0, its spectrum, the resolved step and its stability limit; a fixed step above the limit is
    refused or warned about (``train.step_check``) before the run trains."""
    from .core.kernel import init_kernel
    from .core.linearised import parse_step
    from .core.model import init_params

    params0 = init_params(spec, point.seed)
    common = (common_lambda_max(exp, point, prep, spec) if parse_step(point.step)[0] == "common" else None)
    ik = init_kernel(spec, prep.data.X, prep.data.y, params0, point.step, exp.train.loss, common,
                     precision=exp.gram_precision)
    if ik.exceeds_limit:
        msg = (f"run {point.run_id} of experiment {exp.name}: the fixed step {ik.step_size:g} exceeds its stability "
               f"limit 2N/lambda_max(K_0) = {ik.limit:.4g} (lambda_max = {ik.lambda_max:.4g}, N = {ik.n_samples})")
        if exp.train.step_check == "refuse":
            raise StepSizeError(msg + "; lower the step, give it as a fraction of the limit ('0.5limit'), or set "
                                "train.step_check: warn")
        (log or print)(f"WARNING {msg}; gradient descent may oscillate or diverge")
    return params0, ik


def common_lambda_max(exp, point, prep: Prepared, spec) -> float:
    """The largest lambda_max(K_0) among the experiment's scalings and inits at this run's width, seed
    and samples: the setting whose stability limit is smallest sets a '<c>common' step for all of them
    (each setting's K_0 is computed here from its own seeded initialisation, in this process)."""
    from dataclasses import replace

    from .core.kernel import largest_eigenvalue
    from .core.model import init_params

    out = 0.0
    for sc in exp.grid.get("scaling", (spec.scaling,)):
        for ini in exp.grid.get("init", (spec.init,)):
            other = replace(spec, scaling=sc, init=ini)
            out = max(out, largest_eigenvalue(other, prep.data.X, init_params(other, point.seed),
                                              exp.gram_precision))
    return out


def _finish_run(exp, point, prep: Prepared, spec, ik, result, train_store, threads, node_id, **prov) -> None:
    """Add the kernel's prediction and the kernel change at the checkpoints, then publish the run."""
    from .core.kernel import kernel_changes
    from .core.model import init_params

    result.curves["loss_linearised"] = ik.linearised(exp.train.epochs)
    kc = kernel_changes(spec, prep.data.X, result.checkpoints, ik.K0, exp.checkpoint_epochs, precision=ik.precision)
    provn = provenance(None, experiment=exp.name, run_id=point.run_id, seed=point.seed,
                       dataset_sha256=prep.data.meta.get("content_hash"), threads=int(threads), node_id=node_id, **prov)
    initial = init_params(result.spec, result.seed) if 0 in result.checkpoints else None
    store.write_run(train_store, point.run_id, point.as_dict(), result, provn, kernel=ik.summary(),
                    checkpoint_curves={"kernel_change": kc}, initial=initial, mode_curves=ik.modes())


def train_point(exp, point, data_store, train_store, threads: int = 1, device: Optional[str] = None,
                node_id: Optional[str] = None, expected_hash: Optional[str] = None) -> Dict[str, Any]:
    """Train one grid point (after its kernel regime: step, limit, linearised prediction) and write
    it to the experiment's train store (skipped if complete)."""
    from .core.train import train_gd

    rid = point.run_id
    summary = _summary(rid, node_id)
    if store.run_complete(train_store, rid):
        summary.update(skipped=True, status=store.run_attrs(train_store, rid)["status"])
        return summary
    prep = prepare(exp, [point], data_store, threads, device, expected_hash)
    spec = prep.specs[0]
    t0 = time.perf_counter()
    warnings: List[str] = []
    params0, ik = init_run(exp, point, prep, spec, log=warnings.append)
    result = train_gd(spec, prep.data.X, prep.data.y, point.seed, exp.train.config(ik.step_size), params=params0,
                      eval_fn=prep.eval_fn, device=device, gd=not point.kernel_only)
    _finish_run(exp, point, prep, spec, ik, result, train_store, threads, node_id)
    summary.update(skipped=False, status=result.status, final_loss=result.final_loss, step_size=ik.step_size,
                   step_limit=ik.limit, warnings=warnings, seconds=time.perf_counter() - t0)
    return summary


def train_group(exp, points: Sequence[Any], data_store, train_store, threads: int = 1, device: Optional[str] = None,
                node_id: Optional[str] = None, expected_hash: Optional[str] = None) -> List[Dict[str, Any]]:
    """Train grid points that share width (and n_samples) in one vectorised computation
    (`tfconv.core.train_vectorised`, each run at its own step); each run is written to the store as by
    `train_point`.  Kernel-only points go one by one."""
    from .core.train_vectorised import train_gd_vectorised

    todo = [p for p in points if not store.run_complete(train_store, p.run_id)]
    summaries = [dict(_summary(p.run_id, node_id), skipped=True) for p in points if p not in todo]
    one_by_one = [p for p in todo if p.kernel_only or exp.model.get("embed") or exp.model.get("positional")
                  or exp.model.get("class_token")]  # kernel-only runs and the ViT variant
    summaries += [train_point(exp, p, data_store, train_store, threads, device, node_id, expected_hash)
                  for p in one_by_one]
    todo = [p for p in todo if p not in one_by_one]
    if not todo:
        return summaries
    prep = prepare(exp, todo, data_store, threads, device, expected_hash)
    t0 = time.perf_counter()
    warnings: List[str] = []
    inits = [init_run(exp, p, prep, spec, log=warnings.append) for p, spec in zip(todo, prep.specs)]
    results = train_gd_vectorised(prep.specs, prep.data.X, prep.data.y, [p.seed for p in todo],
                                  exp.train.config(inits[0][1].step_size), eval_fn=prep.eval_fn, device=device,
                                  step_sizes=[ik.step_size for _, ik in inits])
    for p, spec, (_, ik), res in zip(todo, prep.specs, inits, results):
        _finish_run(exp, p, prep, spec, ik, res, train_store, threads, node_id, vectorised=len(todo))
        summaries.append(dict(_summary(p.run_id, node_id), skipped=False, status=res.status,
                              final_loss=res.final_loss, step_size=ik.step_size, step_limit=ik.limit,
                              warnings=[w for w in warnings if p.run_id in w], seconds=time.perf_counter() - t0))
    return summaries


def initial_checkpoint(attrs: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """The seeded initialisation of a stored run (its recorded ``spec`` and ``seed``), as arrays: the
    epoch-0 checkpoint the train store does not keep (`tfconv.store.read_run`'s ``init``)."""
    from .core.model import ModelSpec, init_params

    return {k: v.numpy() for k, v in sorted(init_params(ModelSpec(**attrs["spec"]), int(attrs["seed"])).items())}


def load_run(train_store, rid: str) -> Dict[str, Any]:
    """A stored run (`tfconv.store.read_run`) with every checkpoint, the re-derived initialisation included."""
    return store.read_run(train_store, rid, init=initial_checkpoint)


@lru_cache(maxsize=4)
def _checkpoint(train_store: str, rid: str, epoch: int):
    run = load_run(train_store, rid)
    return run["attrs"], run["checkpoints"][epoch]


#: From this many samples, a Gram's block tasks share their samples' NTK factor rows through the store
#: (`ntk_block_shared`) instead of computing them per block.  At N = 50,000 (width 256, 2,000-row blocks)
#: the factors were ~30% of a block task; below a few thousand samples a Gram takes minutes and the
#: kept files (G numbers per sample: ~240 KB at width 256) would cost more than they save.
FACTOR_CACHE_MIN_SAMPLES = 4096


@dataclass(frozen=True)
class GramSettings:
    """How the blocks of a Gram are computed: the NTK ``engine`` (`tfconv.core.ntk.ntk_block`),
    ``block_size`` (rows and columns of a block: the Zarr chunk of K), ``chunk_size`` (samples per
    engine call), the torch ``threads`` of one block task (config ``gram`` and ``threads_per_run``) and
    ``factor_cache_min_samples`` (`FACTOR_CACHE_MIN_SAMPLES`)."""

    engine: str = "structured"
    block_size: int = 64
    chunk_size: int = 64
    threads: int = 1
    factor_cache_min_samples: int = FACTOR_CACHE_MIN_SAMPLES


@dataclass(frozen=True)
class GramJob:
    """What every Gram block of one experiment shares: the experiment, its stores (the dataset, the
    trained runs, the Gram store written), how blocks are computed, and the dataset hash the step's
    driver verified (``expected_hash``; workers compare the store's recorded one)."""

    exp: Any
    data_store: str
    train_store: str
    gram_store: str
    settings: GramSettings = GramSettings()
    expected_hash: Optional[str] = None


def gram_block(job: GramJob, point, epoch: int, bi: int, bj: int) -> Dict[str, Any]:
    """Compute block (bi, bj) of the NTK of one run at one checkpoint epoch and write it (idempotent),
    in the experiment's Gram precision (the checkpoint's parameters cast once, whatever the training dtype)."""
    from .core.kernel import precision_dtype
    from .core.ntk import ntk_block, params_from_numpy

    rid = point.run_id
    gs = job.settings
    g = store.open_gram(job.gram_store, rid, epoch)
    if store.blocks_done(g)[bi, bj]:
        return {"run_id": rid, "epoch": epoch, "block": (bi, bj), "skipped": True}
    prep = prepare(job.exp, [point], job.data_store, gs.threads, None, job.expected_hash, accuracy=False)
    ds, spec = prep.data, prep.specs[0]
    attrs, arrays = _checkpoint(str(job.train_store), rid, int(epoch))
    params = params_from_numpy(arrays, dtype=precision_dtype(job.exp.gram_precision))  # cast once: every matmul in it
    ranges = store.block_ranges(ds.n_samples, gs.block_size)
    (r0, r1), (c0, c1) = ranges[bi], ranges[bj]
    if shares_factors(spec, gs, ds.n_samples):
        block, _ = ntk_block_shared(params, spec, ds.X, ranges, bi, bj, g, gs.chunk_size)
    else:
        X_cols = None if bi == bj else ds.X[c0:c1]
        block = ntk_block(params, spec, ds.X[r0:r1], X_cols, engine=gs.engine, chunk_size=gs.chunk_size)
    store.write_block(g, bi, bj, block, gs.block_size)
    return {"run_id": rid, "epoch": epoch, "block": (bi, bj), "skipped": False, "host": socket.gethostname()}


def shares_factors(spec, settings: GramSettings, n: int) -> bool:
    """Whether the block tasks of an n-sample Gram share factor rows (`ntk_block_shared`): the structured
    engine on the encoder alone (no ViT front end) with every kernel term a GEMM (the default forms),
    at least ``settings.factor_cache_min_samples`` samples and three block rows."""
    from .core.ntk_structured import factor_width

    return (settings.engine == "structured" and not spec.vit and not spec.class_token
            and n >= settings.factor_cache_min_samples and len(store.block_ranges(n, settings.block_size)) >= 3
            and factor_width(spec) is not None)


def ntk_block_shared(params, spec, X, ranges, bi: int, bj: int, gram_group, chunk_size: int = 64):
    """Block (bi, bj) of the structured NTK (equal to `tfconv.core.ntk.ntk_block` up to the order of the
    GEMMs' sums) from its samples' factor rows, K[I, J] = F_I F_J^T: read from the Gram's store when an
    earlier task kept them (`store.read_factors`), else computed (`factor_rows`) and kept for the
    others (`store.write_factors`).  Each block row's factors are computed about once per Gram instead
    of once per block.  Returns (block, samples whose factors this call computed).  CPU parameters."""
    from .core import ntk_structured as NS

    G = NS.factor_width(spec)
    dtype = next(iter(params.values())).dtype
    F, computed = [], 0
    for b, slot in ((bi, "rows"),) if bi == bj else ((bi, "rows"), (bj, "cols")):
        r0, r1 = ranges[b]
        buf = NS.factor_buffer(r1 - r0, G, dtype, slot)
        if not store.read_factors(gram_group, b, buf.numpy()):
            buf = NS.factor_rows(params, spec, X[r0:r1], chunk_size, slot=slot)
            store.write_factors(gram_group, b, buf.numpy())
            computed += r1 - r0
        F.append(buf)
    block = NS.ntk_block_from_factors(*F)
    NS.trim_workspace(NS.DEFAULT_CACHE_BYTES)  # kept for the next block: no more than one engine call may use
    return block, computed
