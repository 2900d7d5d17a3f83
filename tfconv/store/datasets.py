"""The dataset store: ``results/data/<dataset>.zarr`` (one owner of the format).

Arrays X (sample, token, feature), y (sample, output) and, for classification data, X_test,
y_test, labels, labels_test; attributes ``meta`` (the generator's settings), ``content_hash``
(sha256 over every array, `tfconv.data.content_hash`), ``arrays``, ``provenance``, ``complete``.
Written atomically (staging folder + rename).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from ..data.dataset import Dataset, check_arrays, content_hash
from ._zarr import StoreError, commit, json_safe, staging_dir, write_array, zarr_module

DATASET_ARRAYS = ("X", "y", "X_test", "y_test", "labels", "labels_test")


def write_dataset(path, data: Dataset, provenance: Optional[Mapping] = None, extra: Optional[Mapping[str, np.ndarray]] = None) -> str:
    """Write a dataset store atomically; returns its content hash."""
    zarr = zarr_module()
    check_arrays(data.X, data.y, name=str(path))
    final = Path(path)
    staging = staging_dir(final)
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
        write_array(root, k, v, dims.get(k, [f"dim_{i}" for i in range(v.ndim)]))
    root.attrs.update(json_safe({"meta": data.meta, "content_hash": digest, "arrays": sorted(arrays),
                                  "provenance": dict(provenance or {})}))
    root.attrs["complete"] = True
    commit(staging, final)
    return digest


def read_dataset(path, verify: bool = True) -> Dataset:
    """Read a dataset store; refuses incomplete stores and (with verify) content that does not match its hash."""
    zarr = zarr_module()
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
    zarr = zarr_module()
    return str(zarr.open_group(str(path), mode="r").attrs.get("content_hash"))
