"""Datasets as plain arrays: X of shape (N, d_s, d) and targets y of shape (N, C).

The synthetic generator (the paper's is not published; science.md section 4 "ours"):

* tokens: i.i.d. standard Gaussian vectors in R^d, each rescaled to norm ``token_norm`` (default 1),
  so every sample is a (d_s, d) matrix of unit-norm rows;
* labels: i.i.d. standard Gaussian, one per output (``label_kind="gaussian"``), or a random sign
  (``"sign"``);
* everything drawn from one ``numpy.random.default_rng(seed)`` in a fixed order (X first, then y),
  so a dataset is reproducible from (n_samples, d_s, d, n_outputs, token_norm, label_kind, seed) alone,
  and the first n samples of a larger dataset are *not* the n-sample dataset (use `subset` for nesting).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

LABEL_KINDS = ("gaussian", "sign")


@dataclass
class Dataset:
    """Training (and optional test) arrays plus the settings that made them."""

    X: np.ndarray  # (N, d_s, d)
    y: np.ndarray  # (N, C)
    meta: Dict = field(default_factory=dict)
    X_test: Optional[np.ndarray] = None
    y_test: Optional[np.ndarray] = None
    #: further per-sample arrays (e.g. "labels" with the training axis first, "labels_test")
    extra: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def d_s(self) -> int:
        return int(self.X.shape[1])

    @property
    def d(self) -> int:
        return int(self.X.shape[2])

    @property
    def n_outputs(self) -> int:
        return int(self.y.shape[1])

    def subset(self, n: int) -> "Dataset":
        """The first n training samples (nested subsets for experiments over n_samples)."""
        if not 0 < n <= self.n_samples:
            raise ValueError(f"n_samples={n} is outside 1..{self.n_samples} (the dataset's size)")
        extra = {k: (v if k.endswith("_test") else v[:n]) for k, v in self.extra.items()}
        return Dataset(self.X[:n], self.y[:n], dict(self.meta, n_samples=n), self.X_test, self.y_test, extra)


def content_hash(*arrays: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes of the arrays: the identity of a dataset's content."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            continue
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_arrays(X: np.ndarray, y: np.ndarray, name: str = "dataset") -> None:
    """Raise a ValueError naming `name` unless X is (N, d_s, d), y is (N, C), both finite."""
    if X.ndim != 3:
        raise ValueError(f"{name}: X must have shape (N, d_s, d), got shape {X.shape}")
    if y.ndim != 2 or y.shape[0] != X.shape[0]:
        raise ValueError(f"{name}: y must have shape (N, C) with N = {X.shape[0]}, got shape {y.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name}: the dataset is empty")
    for arr, which in ((X, "X"), (y, "y")):
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.isfinite(arr).sum())
            raise ValueError(f"{name}: {which} contains {bad} NaN/inf values; every value must be finite")


def make_synthetic(
    n_samples: int,
    d_s: int = 8,
    d: int = 32,
    n_outputs: int = 1,
    token_norm: float = 1.0,
    label_kind: str = "gaussian",
    seed: int = 0,
) -> Dataset:
    """Seeded synthetic regression data; see the module docstring for the distribution."""
    for key, v in (("n_samples", n_samples), ("d_s", d_s), ("d", d), ("n_outputs", n_outputs)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"synthetic data: {key} must be a positive integer, got {v!r}")
    if not token_norm > 0:
        raise ValueError(f"synthetic data: token_norm must be positive, got {token_norm!r}")
    if label_kind not in LABEL_KINDS:
        raise ValueError(f"synthetic data: label_kind must be one of {list(LABEL_KINDS)}, got {label_kind!r}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, d_s, d))
    X *= token_norm / np.linalg.norm(X, axis=-1, keepdims=True)
    if label_kind == "gaussian":
        y = rng.standard_normal((n_samples, n_outputs))
    else:
        y = rng.choice([-1.0, 1.0], size=(n_samples, n_outputs))
    meta = dict(kind="synthetic", n_samples=n_samples, d_s=d_s, d=d, n_outputs=n_outputs,
                token_norm=float(token_norm), label_kind=label_kind, seed=int(seed))
    return Dataset(X, y, meta)
