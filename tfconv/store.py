"""Zarr 3 stores of tfconv: datasets, training runs and Gram matrices; written so nothing is half-written.

Layout under ``results/``::

    data/<dataset>.zarr                 X, y [, X_test, y_test, labels, labels_test]; attrs: meta,
                                        content_hash, provenance, complete
    train/<experiment>.zarr/runs/<run_id>/
                                        loss, weight_change, weight_change_<W>, attention_deviation_*
                                        (dim "epoch"), extra curves, ckpt/epoch=<e>/<W>;
                                        attrs: point, status, diverged_epoch, spec, train, provenance, complete
    gram/<experiment>.zarr/<run_id>/epoch=<e>/
                                        K (N x N, chunks block_size x block_size, dims i, j),
                                        blocks_done (n_blocks x n_blocks, one chunk per block),
                                        eigenvalues (N,); attrs: complete, engine, block_size, provenance

Rules that keep results trustworthy:

* A dataset or a run is written into a staging folder beside its final place and moved into place
  with one ``os.rename`` after its ``complete`` attribute is set: a reader sees all of it or nothing.
* A Gram block task writes only its own chunks (K[I, J] and the mirror K[J, I], one chunk each) and
  then its own ``blocks_done`` element: one writer per chunk, never two (see platform.md on zarr
  concurrency).  ``complete`` and the eigenvalues are written by one finalising step after every
  block is done, so an interrupted assembly resumes block by block.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from .data import Dataset, check_arrays, content_hash

DATASET_ARRAYS = ("X", "y", "X_test", "y_test", "labels", "labels_test")


class StoreError(RuntimeError):
    """A store is missing, incomplete or does not match what it should hold; the message names it."""


def _zarr():
    import zarr

    return zarr


def _json_safe(obj):
    return json.loads(json.dumps(obj, default=_default))


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _staging(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"


def _commit(staging: Path, final: Path) -> None:
    """Move a finished staging folder into place atomically (replacing an incomplete leftover)."""
    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)


def clean_staging(parent: Path) -> int:
    """Remove leftover staging folders of interrupted writers; returns how many."""
    n = 0
    if parent.is_dir():
        for p in parent.glob(".staging-*"):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


def _write_array(group, name: str, data: np.ndarray, dims: Iterable[str], chunks=None):
    zarr = _zarr()
    data = np.asarray(data)
    arr = zarr.create_array(
        store=group.store, name=f"{group.path}/{name}" if group.path else name,
        shape=data.shape, dtype=data.dtype, chunks=chunks or (data.shape if data.size else None),
        dimension_names=list(dims), overwrite=True,
    )
    if data.size:
        arr[...] = data
    return arr


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------

def write_dataset(path, data: Dataset, provenance: Optional[Mapping] = None, extra: Optional[Mapping[str, np.ndarray]] = None) -> str:
    """Write a dataset store atomically; returns its content hash."""
    zarr = _zarr()
    check_arrays(data.X, data.y, name=str(path))
    final = Path(path)
    staging = _staging(final)
    arrays = {"X": data.X, "y": data.y, "X_test": data.X_test, "y_test": data.y_test}
    arrays.update(dict(data.extra or {}))
    arrays.update(dict(extra or {}))
    arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    digest = content_hash(*(arrays[k] for k in sorted(arrays)))
    root = zarr.open_group(str(staging), mode="w")
    dims = {"X": ("sample", "token", "feature"), "y": ("sample", "output"),
            "X_test": ("test_sample", "token", "feature"), "y_test": ("test_sample", "output"),
            "labels": ("sample",), "labels_test": ("test_sample",)}
    for k, v in arrays.items():
        _write_array(root, k, v, dims.get(k, [f"dim_{i}" for i in range(v.ndim)]))
    root.attrs.update(_json_safe({"meta": data.meta, "content_hash": digest, "arrays": sorted(arrays),
                                  "provenance": dict(provenance or {})}))
    root.attrs["complete"] = True
    _commit(staging, final)
    return digest


def read_dataset(path, verify: bool = True) -> Dataset:
    """Read a dataset store; refuses incomplete stores and (with verify) content that does not match its hash."""
    zarr = _zarr()
    p = Path(path)
    if not p.exists():
        raise StoreError(f"dataset store {p} does not exist; run the `simulate_data` step first")
    try:
        root = zarr.open_group(str(p), mode="r")
    except Exception as exc:  # noqa: BLE001
        raise StoreError(f"dataset store {p} is not a readable Zarr group: {exc}") from exc
    attrs = dict(root.attrs)
    if not attrs.get("complete"):
        raise StoreError(f"dataset store {p} is incomplete (no 'complete' attribute); delete it and rerun")
    names = attrs.get("arrays", ["X", "y"])
    arrays = {k: np.asarray(root[k][...]) for k in names}
    if verify:
        digest = content_hash(*(arrays[k] for k in sorted(arrays)))
        if digest != attrs.get("content_hash"):
            raise StoreError(
                f"dataset store {p}: content hash {digest[:16]}... does not match the recorded "
                f"{str(attrs.get('content_hash'))[:16]}...; the data was modified or corrupted"
            )
    check_arrays(arrays["X"], arrays["y"], name=str(p))
    extra = {k: v for k, v in arrays.items() if k not in ("X", "y", "X_test", "y_test")}
    ds = Dataset(arrays["X"], arrays["y"], dict(attrs.get("meta", {})), arrays.get("X_test"), arrays.get("y_test"), extra)
    ds.meta["content_hash"] = attrs.get("content_hash")
    return ds


def dataset_hash(path) -> str:
    zarr = _zarr()
    return str(zarr.open_group(str(path), mode="r").attrs.get("content_hash"))


# --------------------------------------------------------------------------------------------
# training runs
# --------------------------------------------------------------------------------------------

def runs_dir(train_store) -> Path:
    return Path(train_store) / "runs"


def ensure_train_store(train_store, attrs: Optional[Mapping] = None) -> None:
    """Create the experiment's train store (idempotent); clears staging leftovers of killed writers."""
    zarr = _zarr()
    p = Path(train_store)
    root = zarr.open_group(str(p), mode="a")
    if attrs:
        root.attrs.update(_json_safe(dict(attrs)))
    if not (runs_dir(p) / "zarr.json").exists():
        zarr.open_group(str(p), mode="a").require_group("runs")
    clean_staging(runs_dir(p))


def _group_attrs(path: Path) -> Dict[str, Any]:
    f = Path(path) / "zarr.json"
    try:
        return dict(json.loads(f.read_text()).get("attributes", {}))
    except (OSError, ValueError):
        return {}


def check_train_store(train_store, dataset_sha256: str, train_settings: Optional[Mapping] = None,
                      required: bool = False) -> None:
    """Refuse a train store whose runs were made from other data or other training settings.

    Runs already complete are skipped by a rerun, so a store trained on another dataset (or with
    another step size, epoch budget, ...) would silently mix old and new results: raise instead,
    naming the store, the run and what differs.  `required`: the store must exist.
    """
    p = Path(train_store)
    if not (p / "zarr.json").exists():
        if required:
            raise StoreError(f"train store {p} does not exist; run the `train_grid` step first")
        return
    declared = _group_attrs(p).get("dataset_sha256")
    fix = f"delete {p} (and the experiment's gram store) to retrain, or restore the earlier input"
    if declared and declared != dataset_sha256:
        raise StoreError(f"train store {p} was trained on dataset sha256 {str(declared)[:16]}..., but the dataset "
                         f"store now has {str(dataset_sha256)[:16]}...; {fix}")
    want = _json_safe(dict(train_settings)) if train_settings else None
    for rid in list_runs(p):
        a = _group_attrs(runs_dir(p) / rid)
        if not a.get("complete"):
            continue
        h = (a.get("provenance") or {}).get("dataset_sha256")
        if h and h != dataset_sha256:
            raise StoreError(f"train store {p}: run {rid} was trained on dataset sha256 {str(h)[:16]}..., but the "
                             f"dataset store now has {str(dataset_sha256)[:16]}...; {fix}")
        have = a.get("train") or {}
        if want and have:
            diff = [f"{k}={have.get(k)!r} (config: {want[k]!r})" for k in sorted(want) if have.get(k) != want[k]]
            if diff:
                raise StoreError(f"train store {p}: run {rid} was trained with {', '.join(diff)}; {fix}")


def _marked_complete(group_dir: Path) -> bool:
    """Whether a group's metadata carries complete=True (written last by every writer here)."""
    f = Path(group_dir) / "zarr.json"
    if not f.exists():
        return False
    try:
        return bool(json.loads(f.read_text()).get("attributes", {}).get("complete"))
    except (OSError, ValueError):
        return False


def run_complete(train_store, rid: str) -> bool:
    return _marked_complete(runs_dir(train_store) / rid)


def write_run(train_store, rid: str, point: Mapping, result, provenance: Optional[Mapping] = None) -> None:
    """Write one finished run (a `tfconv.train.RunResult`) atomically under runs/<rid>."""
    zarr = _zarr()
    final = runs_dir(train_store) / rid
    staging = _staging(final)
    g = zarr.open_group(str(staging), mode="w")
    curves = {
        "loss": result.loss, "weight_change": result.weight_change,
        "attention_deviation_mean": result.attention_deviation_mean,
        "attention_deviation_max": result.attention_deviation_max,
    }
    curves.update({f"weight_change_{k}": v for k, v in result.weight_change_per.items()})
    curves.update(result.curves)
    for k, v in curves.items():
        _write_array(g, k, np.asarray(v, dtype=np.float64), ["epoch"])
    ck = g.require_group("ckpt")
    for e, params in sorted(result.checkpoints.items()):
        eg = ck.require_group(f"epoch={e}")
        for name, w in params.items():
            _write_array(eg, name, w, [f"{name}_row", f"{name}_col"])
    g.attrs.update(_json_safe({
        "point": dict(point), "run_id": rid, "status": result.status,
        "diverged_epoch": result.diverged_epoch, "spec": result.spec.to_dict(),
        "train": result.train.to_dict(), "seed": result.seed, "wall_seconds": result.wall_seconds,
        "curves": sorted(curves), "checkpoint_epochs": sorted(int(e) for e in result.checkpoints),
        "provenance": dict(provenance or {}),
    }))
    g.attrs["complete"] = True  # last attribute; the rename below publishes the whole run at once
    _commit(staging, final)


def read_run(train_store, rid: str) -> Dict[str, Any]:
    """A stored run: {"attrs", "curves": {name: array}, "checkpoints": {epoch: {W: array}}}."""
    zarr = _zarr()
    if not run_complete(train_store, rid):
        raise StoreError(f"run {rid} is missing or incomplete in {train_store}")
    g = zarr.open_group(str(runs_dir(train_store) / rid), mode="r")
    attrs = dict(g.attrs)
    curves = {k: np.asarray(g[k][...]) for k in attrs["curves"]}
    ckpts = {}
    for e in attrs["checkpoint_epochs"]:
        eg = g[f"ckpt/epoch={e}"]
        # sorted: zarr lists a group's arrays in no fixed order, and the order of the parameters is
        # the order in which the exact NTK engine sums over them (bitwise reproducible Gram blocks)
        ckpts[int(e)] = {name: np.asarray(eg[name][...]) for name in sorted(eg.array_keys())}
    return {"attrs": attrs, "curves": curves, "checkpoints": ckpts}


def list_runs(train_store) -> List[str]:
    d = runs_dir(train_store)
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []


# --------------------------------------------------------------------------------------------
# Gram matrices
# --------------------------------------------------------------------------------------------

def gram_path(gram_store, rid: str, epoch: int) -> Path:
    return Path(gram_store) / rid / f"epoch={epoch}"


def block_ranges(n: int, block_size: int) -> List[Tuple[int, int]]:
    return [(s, min(s + block_size, n)) for s in range(0, n, block_size)]


def upper_blocks(n: int, block_size: int) -> List[Tuple[int, int]]:
    nb = len(block_ranges(n, block_size))
    return [(bi, bj) for bi in range(nb) for bj in range(bi, nb)]


def ensure_gram(gram_store, rid: str, epoch: int, n: int, block_size: int, attrs: Optional[Mapping] = None):
    """Create (idempotently) the arrays of one Gram matrix; returns the zarr group.

    An existing group with another shape or block size is an error rather than silently reused.
    """
    zarr = _zarr()
    p = gram_path(gram_store, rid, epoch)
    nb = len(block_ranges(n, block_size))
    if (p / "K" / "zarr.json").exists() and (p / "blocks_done" / "zarr.json").exists():
        g = zarr.open_group(str(p), mode="a")
        if g["K"].shape != (n, n) or tuple(g["K"].chunks) != (block_size, block_size):
            raise StoreError(
                f"{p}: existing Gram has shape {g['K'].shape} and chunks {g['K'].chunks}; expected "
                f"({n}, {n}) and ({block_size}, {block_size}). Delete it to rebuild with the new block size."
            )
        return g
    for parent in (Path(gram_store), Path(gram_store) / rid):
        if not (parent / "zarr.json").exists():
            zarr.open_group(str(parent), mode="a")
    g = zarr.open_group(str(p), mode="a")
    zarr.create_array(store=g.store, name=f"{g.path}/K" if g.path else "K", shape=(n, n), chunks=(block_size, block_size),
                      dtype="float64", dimension_names=["i", "j"], fill_value=np.nan, overwrite=True)
    zarr.create_array(store=g.store, name=f"{g.path}/blocks_done" if g.path else "blocks_done", shape=(nb, nb), chunks=(1, 1),
                      dtype="uint8", dimension_names=["block_i", "block_j"], fill_value=0, overwrite=True)
    g.attrs.update(_json_safe(dict(attrs or {}, block_size=block_size, n=n, complete=False)))
    return g


def check_gram_store(gram_store, block_size: int) -> None:
    """Refuse to resume unfinished Grams that were started with another block size (before any
    cluster starts); finished ones are kept whatever their block size."""
    p = Path(gram_store)
    if not p.is_dir():
        return
    for kz in sorted(p.glob("*/epoch=*/K/zarr.json")):
        g = kz.parent.parent
        if _group_attrs(g).get("complete"):
            continue
        try:
            chunks = json.loads(kz.read_text())["chunk_grid"]["configuration"]["chunk_shape"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable leftover is recreated by ensure_gram
        if list(chunks) != [int(block_size)] * 2:
            raise StoreError(
                f"{g}: this unfinished Gram was started with gram.block_size={chunks[0]}, the config now says "
                f"{block_size}; set gram.block_size back to {chunks[0]} to resume it, or delete {g} to start it again"
            )


def write_block(gram_group, bi: int, bj: int, block: np.ndarray, block_size: int) -> None:
    """Write block (bi, bj) and its mirror, then mark it done (data first, marker last)."""
    n = gram_group["K"].shape[0]
    (r0, r1), (c0, c1) = block_ranges(n, block_size)[bi], block_ranges(n, block_size)[bj]
    K = gram_group["K"]
    K[r0:r1, c0:c1] = block
    if bi != bj:
        K[c0:c1, r0:r1] = block.T
    gram_group["blocks_done"][bi, bj] = 1


def blocks_done(gram_group) -> np.ndarray:
    return np.asarray(gram_group["blocks_done"][...], dtype=bool)


def gram_complete(gram_store, rid: str, epoch: int) -> bool:
    return _marked_complete(gram_path(gram_store, rid, epoch))


def finalize_gram(gram_group, provenance: Optional[Mapping] = None) -> np.ndarray:
    """After every upper block is done: float64 eigenvalues, then `complete` (last)."""
    from .ntk import gram_eigenvalues

    done = blocks_done(gram_group)
    iu = np.triu_indices(done.shape[0])
    if not done[iu].all():
        missing = [(int(a), int(b)) for a, b in zip(*iu) if not done[a, b]]
        raise StoreError(f"Gram {gram_group.store}/{gram_group.path}: blocks {missing[:10]} are not done")
    K = np.asarray(gram_group["K"][...])
    if not np.all(np.isfinite(K)):
        raise StoreError(f"Gram {gram_group.path}: K has non-finite entries although every block is marked done")
    ev = gram_eigenvalues(K)
    _write_array(gram_group, "eigenvalues", ev, ["eigen_index"])
    if provenance:
        gram_group.attrs["provenance"] = _json_safe(dict(provenance))
    gram_group.attrs["complete"] = True
    return ev


def read_gram(gram_store, rid: str, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
    zarr = _zarr()
    if not gram_complete(gram_store, rid, epoch):
        raise StoreError(f"Gram {rid} epoch {epoch} is missing or incomplete in {gram_store}")
    g = zarr.open_group(str(gram_path(gram_store, rid, epoch)), mode="r")
    return np.asarray(g["K"][...]), np.asarray(g["eigenvalues"][...])


# --------------------------------------------------------------------------------------------
# manifests: the small files Snakemake tracks; written last and atomically
# --------------------------------------------------------------------------------------------

def write_json_atomic(path, obj: Any) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(json.dumps(_json_safe(obj), indent=2, sort_keys=True))
    os.replace(tmp, p)
