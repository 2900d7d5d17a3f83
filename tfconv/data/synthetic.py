"""The synthetic generator (the paper's is not published; docs/science.md section 4 "ours"):

* tokens: i.i.d. standard Gaussian vectors in R^d, each rescaled to norm ``token_norm``; the default
  ``"sqrt_d"`` gives norm sqrt(d), i.e. entries of order 1, so that under LeCun/He initialisation the
  attention logits are O(1) with tau0 = width^-1/2 (docs/science.md section 6).  ``token_norm=1.0`` gives
  unit-norm tokens, for which the logits are O(1/d) and attention is uniform under both tau0 (the
  control experiment);
* labels: i.i.d. standard Gaussian, one per output (``label_kind="gaussian"``), or a random sign
  (``"sign"``);
* everything drawn from one ``numpy.random.default_rng(seed)`` in a fixed order (X first, then y),
  so a dataset is reproducible from (n_samples, d_s, d, n_outputs, token_norm, label_kind, seed) alone,
  and the first n samples of a larger dataset are *not* the n-sample dataset (use `subset` for nesting).
"""
from __future__ import annotations

import numpy as np

from .dataset import Dataset

LABEL_KINDS = ("gaussian", "sign")


def token_norm_value(token_norm, d: int) -> float:
    """The norm of every token: ``"sqrt_d"`` (or None) means sqrt(d); otherwise a positive number."""
    if token_norm is None or token_norm == "sqrt_d":
        return float(np.sqrt(d))
    if isinstance(token_norm, bool) or not isinstance(token_norm, (int, float)) or not token_norm > 0:
        raise ValueError(f"synthetic data: token_norm must be 'sqrt_d' or a positive number, got {token_norm!r}")
    return float(token_norm)


def make_synthetic(
    n_samples: int,
    d_s: int = 8,
    d: int = 32,
    n_outputs: int = 1,
    token_norm="sqrt_d",
    label_kind: str = "gaussian",
    seed: int = 0,
) -> Dataset:
    """Seeded synthetic regression data; see the module docstring for the distribution."""
    for key, v in (("n_samples", n_samples), ("d_s", d_s), ("d", d), ("n_outputs", n_outputs)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"synthetic data: {key} must be a positive integer, got {v!r}")
    token_norm = token_norm_value(token_norm, d)
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
