"""Datasets as plain arrays: X of shape (N, d_s, d) and targets y of shape (N, C), with their identity.

`Dataset` holds the training (and optional test) arrays and the settings that made them;
`content_hash` is the sha256 that identifies a dataset's content everywhere (stores, runs,
verification); `check_arrays` refuses malformed or non-finite data with a message naming it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

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

    @property
    def is_classification(self) -> bool:
        """Whether the targets are one-hot classes with their labels stored (MNIST; not its parity target)."""
        return self.meta.get("kind") == "mnist" and "labels" in self.extra and self.meta.get("targets", "onehot") == "onehot"

    def class_columns(self, split: str = "train") -> Optional[np.ndarray]:
        """The one-hot column of every sample's class (labels are stored as digits; column j is the
        j-th of the configured ``classes``), for accuracy; None when the split has no labels."""
        key = "labels" if split == "train" else "labels_test"
        if key not in self.extra:
            return None
        classes = list(self.meta.get("classes", range(self.n_outputs)))
        col = {int(c): j for j, c in enumerate(classes)}
        labels = self.extra[key][: self.n_samples] if split == "train" else self.extra[key]
        return np.array([col[int(v)] for v in labels])

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
