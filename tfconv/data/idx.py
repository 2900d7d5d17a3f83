"""The IDX file format (unsigned-byte IDX, as MNIST is published): write, parse, read safely.

    idx_bytes(array)                   # the bytes of an IDX file holding a uint8 array
    read_idx(path, expected_magic)     # an IDX file (``.gz`` accepted) as a read-only uint8 array
    parse_idx(data, path)              # the same from bytes in memory

A file's header is ``0x00 0x00 0x08 ndim`` followed by the big-endian uint32 dimensions, then the
raw bytes in C order.  Magic number, header and size are validated; a ``.gz`` is decompressed as a
stream, never beyond the size its own header implies (nor `MAX_IDX_BYTES`).
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "MAX_IDX_BYTES", "idx_bytes", "parse_idx", "read_idx",
           "read_idx_bytes"]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dims
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dim


def idx_bytes(array: np.ndarray) -> bytes:
    """Content of an IDX file (unsigned-byte type) holding ``array``.

    MNIST images must be passed as ``(n, 28, 28)`` (magic 2051), labels as ``(n,)`` (magic 2049);
    the header is ``0x00 0x00 0x08 ndim`` followed by the big-endian uint32 dimensions, then the
    raw bytes in C order. Integer arrays are accepted if every value fits in 0..255.
    """
    a = np.asarray(array)
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"idx_bytes needs an integer array, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError("idx_bytes: values outside 0..255 cannot be stored as unsigned bytes")
        a = a.astype(np.uint8)
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"idx_bytes: unsupported number of dimensions {a.ndim}")
    header = bytes([0, 0, 0x08, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(a).tobytes()


def parse_idx(data: bytes, path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """The uint8 array an IDX file's bytes hold (a read-only view on `data`); `path` names the file
    in errors (magic number, truncated header, size that disagrees with the header)."""
    name = str(path)
    if len(data) < 4:
        raise ValueError(f"IDX file {name} is too short ({len(data)} bytes) to hold a header")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"IDX file {name} has magic number {magic} (0x{magic:08x}); expected {expected_magic} "
            f"(0x{expected_magic:08x}). Is it the right file (images vs labels) and uncompressed?"
        )
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(
            f"IDX file {name} has magic number {magic} (0x{magic:08x}); only unsigned-byte IDX "
            "files (0x000008NN) are supported"
        )
    ndim = data[3]
    header_len = 4 + 4 * ndim
    if ndim == 0 or len(data) < header_len:
        raise ValueError(f"IDX file {name} has a truncated or empty header (ndim={ndim})")
    dims = tuple(int(v) for v in np.frombuffer(data[4:header_len], dtype=">u4"))
    expected = header_len + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise ValueError(
            f"IDX file {name} has {len(data)} bytes but its header (dims {dims}) implies {expected}"
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)
    return arr  # read-only view on ``data``


#: Most bytes an IDX file may hold (after decompression): MNIST's largest, train-images, has
#: 47,040,016; a ``.gz`` is decompressed only up to the size its own header implies, at most this.
MAX_IDX_BYTES = 256 * 1024 * 1024


def idx_size_from_header(head: bytes) -> int | None:
    """Bytes an unsigned-byte IDX file with this header (magic + dims) must have; None if unreadable."""
    if len(head) < 4 or head[:3] != b"\x00\x00\x08" or head[3] == 0 or len(head) < 4 + 4 * head[3]:
        return None
    dims = np.frombuffer(head[4:4 + 4 * head[3]], dtype=">u4").astype(object)
    return 4 + 4 * head[3] + int(np.prod(dims))


def read_idx_bytes(path: Path, limit: int = MAX_IDX_BYTES) -> bytes:
    """The bytes of an IDX file, decompressing ``.gz`` as a stream: never more than the size the
    file's own header implies (nor `limit`), so a decompression bomb fails after reading its header."""
    if not path.name.endswith(".gz"):
        size = path.stat().st_size
        if size > limit:
            raise ValueError(f"IDX file {path} has {size:,} bytes, more than the {limit:,} an IDX file may have")
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as fh:
            head = fh.read(4)
            head += fh.read(4 * head[3]) if len(head) == 4 else b""
            implied = idx_size_from_header(head)
            cap = limit if implied is None else min(implied, limit)
            data = head + fh.read(max(cap - len(head), 0) + 1)  # one byte beyond the cap tells
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"cannot gunzip {path}: {exc}") from exc
    if len(data) > cap:
        if implied is not None and implied <= limit:
            why = f"the {implied:,} bytes its header implies"
        elif implied is not None:
            why = f"the {limit:,} bytes an IDX file may have (its header claims {implied:,})"
        else:
            why = f"the {limit:,} bytes an IDX file may have"
        raise ValueError(f"IDX file {path} decompresses to more than {why}; stopped reading "
                         "(a corrupt file or a decompression bomb)")
    return data


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (``.gz`` accepted) into a read-only uint8 array."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"IDX file not found: {p}")
    return parse_idx(read_idx_bytes(p), p, expected_magic)
