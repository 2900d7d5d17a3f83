"""Provenance carried by every result: config, seed, package versions, git revision, host, time."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

PACKAGES = ("tfconv", "torch", "numpy", "zarr", "xarray", "dask", "distributed", "ray", "snakemake")


@lru_cache(maxsize=1)
def git_revision() -> str:
    """`git describe`-like revision of the tfconv checkout ('+dirty' when uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@lru_cache(maxsize=1)
def versions() -> Dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def config_hash(cfg: Optional[Mapping[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(cfg or {}, sort_keys=True, default=str).encode()).hexdigest()


def provenance(config: Optional[Mapping[str, Any]] = None, **extra: Any) -> Dict[str, Any]:
    """A JSON-able record of where a result came from.  `extra` adds e.g. seed, run_id, dataset hash."""
    rec: Dict[str, Any] = {
        "git_revision": git_revision(),
        "versions": versions(),
        "host": socket.gethostname(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if config is not None:
        rec["config_sha256"] = config_hash(config)
        rec["config"] = json.loads(json.dumps(config, default=str))
    rec.update(extra)
    return rec
