"""The train store: ``results/train/<experiment>.zarr/runs/<run_id>.zip`` (one owner of the format).

Each run is one file: a Zarr group in a zip archive (uncompressed zip of zstd-compressed chunks,
readable with ``zarr.storage.ZipStore``), so that a grid of thousands of runs does not put tens of
thousands of small files on a cluster file system.

Per run: curves over dim ``epoch`` (loss, weight_change, weight_change_<W>, attention_deviation_*,
extra curves such as train_accuracy), checkpoints ``ckpt/epoch=<e>/<W>`` (an epoch-0 checkpoint equal to
the seeded initialisation that the writer passes in is not stored: the reader re-derives it with the
function it passes in, ``checkpoint0_is_init``; the store never calls the model); attributes point, run_id,
status, diverged_epoch, spec, train, seed, wall_seconds, curves, checkpoint_epochs, provenance and
``complete`` (last).  Each run is written into a staging folder, zipped into a staging file and
renamed into place (``os.replace``): a reader sees a whole run or none.  The
store's own attributes declare the experiment's grid points, dataset hash and Gram settings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import json
import os
import shutil
import zipfile

from ..core.status import STATUS_DIVERGED, STATUS_KERNEL_ONLY
from ._zarr import (StoreError, clean_staging, exists, group_attrs, json_safe, staging_dir, write_array,
                    zarr_module)

RUN_SUFFIX = ".zip"

#: Given a run's attributes (its ``spec`` and ``seed``), its seeded initial parameters (name -> array):
#: how a reader re-derives an epoch-0 checkpoint that the store did not keep.
InitParams = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def runs_dir(train_store) -> Path:
    return Path(train_store) / "runs"


def run_path(train_store, rid: str) -> Path:
    """The file that holds run `rid` (a zipped Zarr group)."""
    return runs_dir(train_store) / f"{rid}{RUN_SUFFIX}"


def run_attrs(train_store, rid: str) -> Dict[str, Any]:
    """A run's attributes, read from its metadata alone ({} when the run is absent or unreadable)."""
    p = run_path(train_store, rid)
    try:
        with zipfile.ZipFile(p) as zf:
            return dict(json.loads(zf.read("zarr.json")).get("attributes", {}))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}


def _zip_folder(folder: Path, target: Path) -> None:
    """Write every file under `folder` into the zip `target` (stored: Zarr chunks are compressed)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())


def ensure_train_store(train_store, attrs: Optional[Mapping] = None) -> None:
    """Create the experiment's train store (idempotent); clears staging leftovers of killed writers."""
    zarr = zarr_module()
    p = Path(train_store)
    root = zarr.open_group(str(p), mode="a")
    if attrs:
        root.attrs.update(json_safe(dict(attrs)))
    if not exists(runs_dir(p)):
        zarr.open_group(str(p), mode="a").require_group("runs")
    clean_staging(runs_dir(p))




def check_train_store(train_store, dataset_sha256: str, train_settings: Optional[Mapping] = None,
                      required: bool = False, steps: Optional[Mapping[str, Any]] = None) -> None:
    """Refuse a train store whose runs were made from other data or other training settings.

    Runs already complete are skipped by a rerun, so a store trained on another dataset (or with
    another step size, epoch budget, ...) would silently mix old and new results: raise instead,
    naming the store, the run and what differs.  `required`: the store must exist.  `train_settings`:
    the shared settings (epochs, loss, checkpoint_epochs, ...); `steps`: run id -> the configured step
    (a fixed number or '<c>limit'), compared with the step each run recorded.
    """
    p = Path(train_store)
    if not exists(p):
        if required:
            raise StoreError(f"train store {p} does not exist; run the `train_grid` step first")
        return
    declared = group_attrs(p).get("dataset_sha256")
    fix = f"delete {p} (and the experiment's gram store) to retrain, or restore the earlier input"
    if declared and declared != dataset_sha256:
        raise StoreError(f"train store {p} was trained on dataset sha256 {str(declared)[:16]}..., but the dataset "
                         f"store now has {str(dataset_sha256)[:16]}...; {fix}")
    want = json_safe(dict(train_settings)) if train_settings else None
    for rid in list_runs(p):
        a = run_attrs(p, rid)
        if not a.get("complete"):
            continue
        h = (a.get("provenance") or {}).get("dataset_sha256")
        if h and h != dataset_sha256:
            raise StoreError(f"train store {p}: run {rid} was trained on dataset sha256 {str(h)[:16]}..., but the "
                             f"dataset store now has {str(dataset_sha256)[:16]}...; {fix}")
        have = dict(a.get("train") or {})
        kernel = a.get("kernel") or {}
        if "step" in kernel:  # the step as configured (the resolved eta of a '<c>limit' step is per run)
            have["step_size"] = kernel["step"]
        if want and have:
            diff = [f"{k}={have.get(k)!r} (config: {want[k]!r})" for k in sorted(want) if k in have and have.get(k) != want[k]]
            if steps is not None and rid in steps and have.get("step_size") != json_safe(steps[rid]):
                diff.append(f"step_size={have.get('step_size')!r} (config: {steps[rid]!r})")
            if diff:
                raise StoreError(f"train store {p}: run {rid} was trained with {', '.join(diff)}; {fix}")


def run_complete(train_store, rid: str) -> bool:
    return bool(run_attrs(train_store, rid).get("complete"))


def write_run(train_store, rid: str, point: Mapping, result, provenance: Optional[Mapping] = None,
              kernel: Optional[Mapping] = None, checkpoint_curves: Optional[Mapping[str, np.ndarray]] = None,
              initial: Optional[Mapping[str, Any]] = None, mode_curves: Optional[Mapping[str, np.ndarray]] = None) -> None:
    """Write one finished run (a `tfconv.core.train.RunResult`) atomically as runs/<rid>.zip.

    `kernel`: the run's kernel scalars (`tfconv.core.kernel.InitKernel.summary`: lambda_min0,
    lambda_max0, step_limit, eta, step, step_exceeds_limit), kept in the attribute ``kernel``;
    `checkpoint_curves`: arrays over the run's sorted checkpoint epochs (dim ``checkpoint_epoch``),
    e.g. ``kernel_change``; `mode_curves`: arrays over the eigenvalues of K_0 (dim ``mode``, ascending),
    ``k0_eigenvalues`` and ``k0_projection`` (the initial residual's weight on each eigenvector: with the
    step they give the linearised loss at any epoch); `initial`: the seeded initialisation of the run's spec and seed
    (name -> tensor or array, computed by the caller): an epoch-0 checkpoint equal to it byte for
    byte is not stored but re-derived on reading (``checkpoint0_is_init``; `read_run`'s ``init``)."""
    zarr = zarr_module()
    final = run_path(train_store, rid)
    staging = staging_dir(final)
    g = zarr.open_group(str(staging), mode="w")
    curves = {
        "loss": result.loss, "weight_change": result.weight_change,
        "attention_deviation_mean": result.attention_deviation_mean,
        "attention_deviation_max": result.attention_deviation_max,
    }
    curves.update({f"weight_change_{k}": v for k, v in result.weight_change_per.items()})
    curves.update(result.curves)
    arrays = {}  # name -> the exact array written (for the run's content digest)
    for k, v in curves.items():
        arrays[k] = np.asarray(v, dtype=np.float64)
        write_array(g, k, arrays[k], ["epoch"])
    for k, v in (checkpoint_curves or {}).items():
        arrays[k] = np.asarray(v, dtype=np.float64)
        write_array(g, k, arrays[k], ["checkpoint_epoch"])
    for k, v in (mode_curves or {}).items():
        arrays[k] = np.asarray(v, dtype=np.float64)
        write_array(g, k, arrays[k], ["mode"])
    ck = g.require_group("ckpt")
    init_stored = True
    if 0 in result.checkpoints and initial is not None:  # the seeded initialisation is re-derived on reading
        ref = initial
        init_stored = not (set(ref) == set(result.checkpoints[0]) and all(
            np.asarray(result.checkpoints[0][k]).tobytes() == _numpy(ref[k]).tobytes() for k in ref))
    for e, params in sorted(result.checkpoints.items()):
        if e == 0 and not init_stored:
            continue
        eg = ck.require_group(f"epoch={e}")
        for name, w in params.items():
            arrays[f"ckpt/epoch={e}/{name}"] = np.asarray(w)
            write_array(eg, name, w, [f"{name}_row", f"{name}_col"])
    g.attrs.update(json_safe({
        "point": dict(point), "run_id": rid, "status": result.status,
        "diverged_epoch": result.diverged_epoch, "stop_epoch": int(getattr(result, "stop_epoch", -1)),
        "spec": result.spec.to_dict(),
        "train": result.train.to_dict(), "seed": result.seed, "wall_seconds": result.wall_seconds,
        "curves": sorted(curves), "checkpoint_epochs": sorted(int(e) for e in result.checkpoints),
        "checkpoint_curves": sorted(checkpoint_curves or {}), "mode_curves": sorted(mode_curves or {}),
        "kernel": dict(kernel or {}),
        "content_sha256": run_digest(arrays), "checkpoint0_is_init": not init_stored,
        "provenance": dict(provenance or {}),
    }))
    g.attrs["complete"] = True  # last attribute; the rename below publishes the whole run at once
    packed = staging.with_name(staging.name + RUN_SUFFIX)
    try:
        _zip_folder(staging, packed)
        os.replace(packed, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        packed.unlink(missing_ok=True)


def run_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over every array of a run (curves, checkpoint curves, checkpoints), in name order."""
    from ..data.dataset import content_hash

    return content_hash(*(np.asarray(arrays[k]) for k in sorted(arrays)))


def run_arrays(run: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """The arrays of a read run keyed as `write_run` digests them (a re-derived initialisation is not
    stored, so it is not digested)."""
    out = dict(run["curves"])
    out.update(run.get("checkpoint_curves", {}))
    out.update(run.get("mode_curves", {}))
    for e, params in run["checkpoints"].items():
        if e == 0 and run["attrs"].get("checkpoint0_is_init"):
            continue
        out.update({f"ckpt/epoch={e}/{k}": v for k, v in params.items()})
    return out


def read_run(train_store, rid: str, init: Optional[InitParams] = None) -> Dict[str, Any]:
    """A stored run: {"attrs", "curves": {name: array over epoch}, "checkpoint_curves": {name: array over
    the sorted checkpoint epochs}, "checkpoints": {epoch: {W: array}}}.

    A run whose epoch-0 checkpoint is its seeded initialisation did not store it
    (``attrs["checkpoint0_is_init"]``): ``init(attrs)`` re-derives it (the model's initialisation of
    the recorded spec and seed, `tfconv.runner.initial_checkpoint`); without ``init`` that
    checkpoint is left out of "checkpoints"."""
    zarr = zarr_module()
    if not run_complete(train_store, rid):
        raise StoreError(f"run {rid} is missing or incomplete in {train_store}")
    zs = zarr.storage.ZipStore(run_path(train_store, rid), mode="r")
    try:
        return _read_group(zarr.open_group(store=zs, mode="r"), init)
    finally:
        zs.close()


def read_curves(train_store, rid: str, names) -> Dict[str, np.ndarray]:
    """Some curves of a complete run (by name; absent names are left out), without its checkpoints."""
    zarr = zarr_module()
    if not run_complete(train_store, rid):
        raise StoreError(f"run {rid} is missing or incomplete in {train_store}")
    zs = zarr.storage.ZipStore(run_path(train_store, rid), mode="r")
    try:
        g = zarr.open_group(store=zs, mode="r")
        have = set(g.array_keys())
        return {k: np.asarray(g[k][...]) for k in names if k in have}
    finally:
        zs.close()


def check_run(train_store, rid: str, run_id_of: Optional[Callable[[Mapping[str, Any]], str]] = None,
              dataset_sha256: Optional[str] = None, checkpoint_epochs: Sequence[int] = (),
              init: Optional[InitParams] = None) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """The content checks of one stored run: (the run as `read_run` gives it, problems).

    When the run cannot be read (absent, incomplete, a symbolic link, unreadable) the run is None
    and the one problem is a sentence naming it; otherwise the problems are reasons ([] when none):
    its file name, recorded run id and grid point (``run_id_of(point)``, the config's run id) agree;
    every array matches the digest recorded when it was written; it was trained on the dataset
    ``dataset_sha256``; loss, weight change and attention deviation are finite where they must be
    (up to a divergence); it holds every declared checkpoint epoch (``checkpoint_epochs``).
    ``init`` as for `read_run`.
    """
    path = run_path(train_store, rid)
    if path.is_symlink():
        return None, [f"run {rid} is a symbolic link to {path.resolve()}, not a run file"]
    if not run_complete(train_store, rid):
        return None, [f"run {rid} is missing or incomplete"]
    try:
        run = read_run(train_store, rid, init=init)
    except Exception as exc:  # noqa: BLE001 - a run marked complete that cannot be read
        return None, [f"run {rid} is marked complete but cannot be read: {exc}"]
    ra = run["attrs"]
    why = []
    point_id = run_id_of(ra.get("point", {})) if run_id_of is not None else rid
    if ra.get("run_id") != rid or point_id != rid:
        why.append(f"its folder, recorded run id ({ra.get('run_id')}) and grid point ({point_id}) disagree")
    digest = ra.get("content_sha256")
    if digest and run_digest(run_arrays(run)) != digest:
        why.append("its arrays no longer match the digest recorded when it was written (curves or checkpoints changed)")
    h = (ra.get("provenance") or {}).get("dataset_sha256")
    if dataset_sha256 and h and h != dataset_sha256:
        why.append(f"it was trained on dataset {h[:16]}..., the dataset is {dataset_sha256[:16]}...")
    upto = {STATUS_DIVERGED: ra["diverged_epoch"], STATUS_KERNEL_ONLY: 1}.get(ra["status"])
    for name in ("loss", "weight_change", "attention_deviation_mean"):
        v = run["curves"][name][:upto]
        if not np.all(np.isfinite(v)):
            why.append(f"curve {name} has {int(np.sum(~np.isfinite(v)))} NaN/inf values where none may be")
    if ra["status"] not in (STATUS_DIVERGED, STATUS_KERNEL_ONLY):
        missing = sorted(set(int(x) for x in checkpoint_epochs) - set(int(x) for x in ra["checkpoint_epochs"]))
        if missing:
            why.append(f"it lacks the declared checkpoint epoch(s) {missing}")
    return run, why


def _numpy(x) -> np.ndarray:
    """A tensor or an array as a numpy array (without importing torch)."""
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _read_group(g, init: Optional[InitParams] = None) -> Dict[str, Any]:
    attrs = dict(g.attrs)
    curves = {k: np.asarray(g[k][...]) for k in attrs["curves"]}
    ckpts = {}
    for e in attrs["checkpoint_epochs"]:
        if int(e) == 0 and attrs.get("checkpoint0_is_init"):
            if init is not None:
                ckpts[0] = {k: _numpy(v) for k, v in sorted(init(attrs).items())}
            continue
        eg = g[f"ckpt/epoch={e}"]
        # sorted: zarr lists a group's arrays in no fixed order, and the order of the parameters is
        # the order in which the exact NTK engine sums over them (bitwise reproducible Gram blocks)
        ckpts[int(e)] = {name: np.asarray(eg[name][...]) for name in sorted(eg.array_keys())}
    ck_curves = {k: np.asarray(g[k][...]) for k in attrs.get("checkpoint_curves", [])}
    modes = {k: np.asarray(g[k][...]) for k in attrs.get("mode_curves", [])}
    return {"attrs": attrs, "curves": curves, "checkpoint_curves": ck_curves, "mode_curves": modes, "checkpoints": ckpts}


def list_runs(train_store) -> List[str]:
    """Ids of the run files present (complete or not; staging files of killed writers excluded)."""
    d = runs_dir(train_store)
    if not d.is_dir():
        return []
    return sorted(p.name[: -len(RUN_SUFFIX)] for p in d.iterdir()
                  if p.name.endswith(RUN_SUFFIX) and not p.name.startswith("."))
