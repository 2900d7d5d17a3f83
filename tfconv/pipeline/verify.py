"""`tfconv verify PATH`: check that a results folder is complete and consistent.

Checks, with one line per problem:
* every dataset store is complete and its content matches its recorded sha256;
* every train store holds every declared grid point, complete, trained on the dataset whose hash
  it records, with finite curves (up to the divergence epoch for diverged runs);
* every Gram declared by those runs (each stored checkpoint, when the experiment has Gram
  matrices) is complete, every upper block is done, K is finite and symmetric, eigenvalues exist;
* every aggregate store opens.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Mapping, Optional

import numpy as np

from .. import store
from ..config import run_id
from ..store import Results


def _attrs(path: Path) -> dict:
    f = path / "zarr.json"
    if not f.exists():
        return {}
    return json.loads(f.read_text()).get("attributes", {})


def _check_gram(gs: Path, rid: str, e: int) -> List[str]:
    """Problems of one Gram marked complete: blocks not done, non-finite or asymmetric K, eigenvalues."""
    import zarr

    out: List[str] = []
    g = zarr.open_group(str(store.gram_path(gs, rid, e)), mode="r")
    done = store.blocks_done(g)
    iu = np.triu_indices(done.shape[0])
    if not done[iu].all():
        out.append(f"{gs}: Gram of {rid} at epoch {e} is marked complete but has {int((~done[iu]).sum())} block(s) not done")
    K = np.asarray(g["K"][...])
    if not np.all(np.isfinite(K)):
        out.append(f"{gs}: Gram of {rid} at epoch {e} has {int(np.sum(~np.isfinite(K)))} non-finite entries")
    elif not np.allclose(K, K.T, rtol=1e-10, atol=0):
        out.append(f"{gs}: Gram of {rid} at epoch {e} is not symmetric")
    if "eigenvalues" not in g:
        out.append(f"{gs}: Gram of {rid} at epoch {e} has no eigenvalues")
    else:
        ev = np.asarray(g["eigenvalues"][...])
        if ev.shape != (K.shape[0],) or not np.all(np.isfinite(ev)):
            out.append(f"{gs}: Gram of {rid} at epoch {e} has eigenvalues of shape {ev.shape} or non-finite ones")
    return out


def verify_path(results: str) -> List[str]:
    """All problems found under a results folder (or a single train store); empty means verified."""
    root = Path(results)
    problems: List[str] = []
    if not root.exists():
        return [f"{root}: does not exist"]
    single = root.name.endswith(".zarr") and root.parent.name == "train"  # one train store
    res = Results(root.parent.parent if single else root)
    data_dir = res.data("x").parent
    train_stores = [root] if single else [res.train(e) for e in res.stores("train")]
    hashes, unreadable = {}, set()
    for ds_path in sorted(data_dir.glob("*.zarr")) if data_dir.is_dir() else []:
        try:
            ds = store.read_dataset(ds_path, verify=True)
            hashes[str(ds_path.resolve())] = ds.meta["content_hash"]
        except Exception as exc:  # noqa: BLE001
            unreadable.add(str(ds_path.resolve()))
            problems.append(f"{ds_path}: {exc}")
    if not train_stores:
        problems.append(f"{root}: no training stores found (expected train/<experiment>.zarr)")
    for ts in train_stores:
        a = _attrs(ts)
        points = a.get("points")
        if not points:
            problems.append(f"{ts}: no declared grid points in its attributes")
            continue
        recorded = Path(a.get("dataset_store", ""))
        ds_hash = a.get("dataset_sha256")
        # the recorded path is relative to the workflow's folder: look in this results folder first
        ds_store = next((c for c in (data_dir / recorded.name, recorded) if recorded.name and c.exists()), None)
        cur = None
        if ds_store is None:
            problems.append(f"{ts}: its dataset store {recorded} was not found (looked in {data_dir} too)")
        else:
            cur = hashes.get(str(ds_store.resolve()))
            if cur is None and str(ds_store.resolve()) not in unreadable:
                try:
                    cur = store.read_dataset(ds_store, verify=True).meta["content_hash"]
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"{ds_store}: {exc}")
        if cur is not None and ds_hash != cur:
            problems.append(f"{ts}: trained on dataset sha256 {str(ds_hash)[:16]}..., but {ds_store} now has {cur[:16]}...")
        gs = res.gram(ts.name[: -len(".zarr")])
        for p in points:
            rid = run_id(p)
            if not store.run_complete(ts, rid):
                problems.append(f"{ts}: run {rid} is missing or incomplete")
                continue
            try:
                run = store.read_run(ts, rid)
            except Exception as exc:  # noqa: BLE001 - a run marked complete that cannot be read
                problems.append(f"{ts}: run {rid} is marked complete but cannot be read: {exc}")
                continue
            ra = run["attrs"]
            run_hash = ra.get("provenance", {}).get("dataset_sha256")
            if ds_hash and run_hash and run_hash != ds_hash:
                problems.append(f"{ts}: run {rid} was trained on dataset {run_hash[:16]}..., store declares {ds_hash[:16]}...")
            upto = {"diverged": ra["diverged_epoch"], "kernel_only": 1}.get(ra["status"])  # records that exist
            for name in ("loss", "weight_change", "attention_deviation_mean"):
                v = run["curves"][name][:upto]
                if not np.all(np.isfinite(v)):
                    problems.append(f"{ts}: run {rid} curve {name} has {int(np.sum(~np.isfinite(v)))} NaN/inf values where none may be")
            if ra["status"] not in ("diverged", "kernel_only"):
                missing_ck = sorted(set(int(x) for x in a.get("checkpoint_epochs", []))
                                    - set(int(x) for x in ra["checkpoint_epochs"]))
                if missing_ck:
                    problems.append(f"{ts}: run {rid} lacks the declared checkpoint epoch(s) {missing_ck}")
            if not a.get("gram", False):
                continue
            for e in ra["checkpoint_epochs"]:
                if not store.gram_complete(gs, rid, e):
                    problems.append(f"{gs}: Gram of {rid} at epoch {e} is missing or incomplete")
                    continue
                try:
                    problems += _check_gram(gs, rid, e)
                except Exception as exc:  # noqa: BLE001 - marked complete but unreadable
                    problems.append(f"{gs}: Gram of {rid} at epoch {e} is marked complete but cannot be read: {exc}")
    for ag in [res.aggregate(e) for e in res.stores("aggregate")]:
        try:
            import xarray as xr

            xr.open_zarr(str(ag), consolidated=False)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{ag}: aggregate does not open: {exc}")
    return problems


def verify_results(cfg: Optional[Mapping] = None, results: Optional[str] = None, report_path: Optional[str] = None) -> List[str]:
    """Verify the results folder of a config (or `results`); write a report file; return problems."""
    path = results or (cfg or {}).get("results", "results")
    problems = verify_path(path)
    lines = [f"tfconv verify {path}: " + ("OK" if not problems else f"{len(problems)} problem(s)")]
    lines += [f"  - {p}" for p in problems]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if report_path and not problems:
        store.write_json_atomic(str(report_path) + ".json", {"path": str(path), "problems": problems})
        Path(report_path).write_text(text)
    return problems
