"""Unpickling data files without running their code: a numpy-only unpickler behind a size cap.

    arrays = load_numpy_pickle_gz(gz_bytes, max_bytes=512 * 2**20)   # gzip-compressed Python-2 pickle

`NumpyOnlyUnpickler` resolves only the globals a plain numpy array needs (under the numpy-1 and
numpy-2 module names); any other global (``os.system``, ``builtins.eval``, ...) is refused with
`RefusedGlobalError` before it can be called.  `CappedReader` stops a stream that decompresses to
more than its limit (a decompression bomb).  Neither checks a hash: callers check the bytes first.
"""
from __future__ import annotations

import gzip
import io
import pickle

import numpy as np

__all__ = ["RefusedGlobalError", "NumpyOnlyUnpickler", "CappedReader", "load_numpy_pickle_gz"]


def _numpy_multiarray():
    try:  # numpy >= 2 (numpy 1.26 also ships this alias)
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - older numpy
        from numpy.core import multiarray
    return multiarray


ALLOWED_GLOBALS = {
    # What a pickled numpy.ndarray needs, under both the numpy-1 and numpy-2 module names.
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_multiarray()._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_multiarray()._reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class RefusedGlobalError(pickle.UnpicklingError):
    """The restricted unpickler met a global outside its allow-list (nothing was called)."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild plain numpy arrays.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``...) is refused with
    :class:`RefusedGlobalError` (a :class:`pickle.UnpicklingError`) before it can be called.
    Extension-registry opcodes also go through :meth:`find_class`, and persistent ids are refused
    by the base class.  ``what`` names the data in the refusal.
    """

    def __init__(self, file, *, what: str = "data", **kwargs):
        super().__init__(file, **kwargs)
        self._what = what

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        factory = ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise RefusedGlobalError(
                f"refused global '{module}.{name}' while unpickling {self._what}: only "
                + ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS))
                + " are allowed"
            )
        return factory()


class CappedReader:
    """A binary stream that refuses to deliver more than `limit` bytes (a decompression cap)."""

    def __init__(self, fh, limit: int):
        self._fh, self._left, self._limit = fh, int(limit), int(limit)

    def _count(self, n: int) -> None:
        self._left -= n
        if self._left < 0:
            raise ValueError(f"the stream decompresses to more than {self._limit:,} bytes; stopped reading "
                             "(a corrupt file or a decompression bomb)")

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(self._left + 1 if n is None or n < 0 else min(n, self._left + 1))
        self._count(len(data))
        return data

    def readline(self, n: int = -1) -> bytes:
        data = self._fh.readline(self._left + 1 if n is None or n < 0 else min(n, self._left + 1))
        self._count(len(data))
        return data

    def readinto(self, buf) -> int:
        view = memoryview(buf)[: self._left + 1]
        n = self._fh.readinto(view)
        self._count(n)
        return n


def load_numpy_pickle_gz(gz_bytes: bytes, max_bytes: int, what: str = "data"):
    """Unpickle gzip-compressed (Python-2, latin1) pickle bytes with `NumpyOnlyUnpickler`, reading at
    most `max_bytes` decompressed bytes.  Checks no hash (callers do)."""
    with gzip.GzipFile(fileobj=io.BytesIO(gz_bytes), mode="rb") as fh:
        return NumpyOnlyUnpickler(CappedReader(fh, max_bytes), what=what, encoding="latin1").load()
