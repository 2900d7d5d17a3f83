"""Zarr building blocks shared by every store of tfconv: atomic publication, metadata, manifests.

Rules that keep results trustworthy (every store module follows them):

* A dataset, a run or an aggregate is written into a staging folder beside its final place and
  moved into place with one ``os.rename`` after its ``complete`` attribute is set: a reader sees all
  of it or nothing.
* Writers that share a store write disjoint chunks (one writer per chunk, never two; see
  platform.md on zarr concurrency), and mark their own completion last.
* The small JSON manifests that Snakemake tracks are written last and atomically.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable

import numpy as np


class StoreError(RuntimeError):
    """A store is missing, incomplete or does not match what it should hold; the message names it."""


def zarr_module():
    import zarr

    return zarr


def json_safe(obj):
    return json.loads(json.dumps(obj, default=_default))


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def staging_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"


def commit(staging: Path, final: Path) -> None:
    """Move a finished staging folder into place atomically (replacing an incomplete leftover)."""
    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)


def clean_staging(parent: Path) -> int:
    """Remove leftover staging folders of interrupted writers; returns how many."""
    n = 0
    if parent.is_dir():
        for p in parent.glob(".staging-*"):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
    return n


def write_array(group, name: str, data: np.ndarray, dims: Iterable[str], chunks=None):
    zarr = zarr_module()
    data = np.asarray(data)
    arr = zarr.create_array(
        store=group.store, name=f"{group.path}/{name}" if group.path else name,
        shape=data.shape, dtype=data.dtype, chunks=chunks or (data.shape if data.size else None),
        dimension_names=list(dims), overwrite=True,
    )
    if data.size:
        arr[...] = data
    return arr


def block_digest(block: np.ndarray) -> int:
    """A non-zero 62-bit digest of a Gram block's float64 bytes (what `blocks_done` records)."""
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(np.asarray(block, dtype=np.float64)).tobytes()).digest()
    return (int.from_bytes(h[:8], "little") >> 2) | 1


def metadata_file(path) -> Path:
    """The file that holds the metadata (and attributes) of the Zarr group or array at `path`."""
    return Path(path) / "zarr.json"


def exists(path) -> bool:
    """Whether a Zarr group or array is at `path` (its metadata is written).  For the stores published
    by one rename (datasets, aggregates) this means published, whole."""
    return metadata_file(path).exists()


def modified_ns(path) -> int:
    """When the metadata of the Zarr node at `path` last changed (ns): a cache key that changes when
    the node is re-created in place."""
    return os.stat(metadata_file(path)).st_mtime_ns


def group_attrs(path) -> Dict[str, Any]:
    """Attributes of a Zarr group read from its metadata file ({} when absent or unreadable)."""
    try:
        return dict(json.loads(metadata_file(path).read_text()).get("attributes", {}))
    except (OSError, ValueError):
        return {}


#: The attributes of the Zarr group or array at a path (`group_attrs`): ``store.attrs(path)``.
attrs = group_attrs


def marked_complete(group_dir) -> bool:
    """Whether a group's metadata carries complete=True (written last by every writer here)."""
    return bool(group_attrs(group_dir).get("complete"))


def write_text_atomic(path, text: str) -> None:
    """Write a text file whole or not at all (a staging file renamed over the target)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(text)
    os.replace(tmp, p)


def write_json_atomic(path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(json_safe(obj), indent=2, sort_keys=True))
