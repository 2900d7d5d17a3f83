"""The kernel regime of one run: K_0, its spectrum, the step it allows, the linearised prediction, and
how far the kernel moves during training.

Every run of the workflow records these (tfconv.runner), so that every loss curve is drawn beside the
kernel's prediction and every claim test has the kernel quantities it needs, with or without the
Dask-assembled Gram matrices:

    ik = init_kernel(spec, X, y, params0, step="0.5limit", loss="mean")   # K_0 = J_0 J_0^T
    ik.step_size, ik.limit          # eta and the stability limit 2N / lambda_max(K_0)
    ik.linearised(epochs)           # the exact loss curve of the linearised model
    kernel_change(spec, X, params_t, ik.K0)   # |K_t - K_0|_F / |K_0|_F

K is the output-averaged empirical NTK of `tfconv.core.ntk` (structured engine), computed in the Gram
precision (config ``gram.precision``, float64 by default, whatever the training dtype: the parameters are
cast once and every matmul runs in it), stored in float64; the step, the linearised curve and the kernel
change all use that one K_0.  lambda_min comes with its error and verdict against the precision of K
(`tfconv.core.spectra.assess_lambda_min`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

from .linearised import linearised_loss, mode_projection, parse_step, resolve_step
from .model import ModelSpec, forward
from .ntk import ntk_matrix
from .spectra import EigenRecord, assess_lambda_min, precision_eps, rounding_level

#: The precision of every kernel unless a caller says otherwise (config ``gram.precision``'s default).
DEFAULT_PRECISION = "float64"


def precision_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a Gram precision ("float64" or "float32"; a clear error for anything else)."""
    precision_eps(precision)
    return getattr(torch, precision)


@dataclass
class InitKernel:
    """K_0 of one run with its eigen-decomposition, the initial residual and the step."""

    K0: np.ndarray  # (N, N) float64
    eigenvalues: np.ndarray  # ascending
    eigenvectors: np.ndarray  # columns
    residual0: np.ndarray  # (N, C) f_0(X) - y
    step: object  # the specification (fixed number or "<c>limit")
    step_size: float  # eta of this run
    limit: float  # stability limit of the linearised dynamics
    loss: str
    precision: str = DEFAULT_PRECISION  # the arithmetic K_0 was computed in

    @property
    def lambda_min_record(self) -> EigenRecord:
        """lambda_min of K_0 (dense eigh) with its error and verdict against the precision of K_0."""
        rec = EigenRecord(self.lambda_min, "dense", 0, float("nan"))
        rounding = rounding_level(float(np.max(np.diag(self.K0))), self.n_samples, self.precision)
        return assess_lambda_min(rec, rounding, self.lambda_max)

    @property
    def n_samples(self) -> int:
        return int(self.K0.shape[0])

    @property
    def lambda_min(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def exceeds_limit(self) -> bool:
        """A fixed step above the stability limit (the top mode of the linearised dynamics grows)."""
        return bool(np.isfinite(self.limit) and self.step_size > self.limit)

    @property
    def projection(self) -> np.ndarray:
        """p_i = sum_c (u_i^T r_0c)^2, the initial residual's weight on each eigenvector (ascending)."""
        return mode_projection(self.eigenvectors, self.residual0)

    def modes(self) -> dict:
        """The arrays a run records over K_0's modes: eigenvalues and the residual's weights."""
        return {"k0_eigenvalues": np.asarray(self.eigenvalues, dtype=np.float64), "k0_projection": self.projection}

    def linearised(self, epochs: int) -> np.ndarray:
        """The linearised loss curve at this run's step, epochs 0..epochs."""
        return linearised_loss(self.eigenvalues, self.eigenvectors, self.residual0, self.step_size, epochs,
                               self.n_samples, self.loss)

    def summary(self) -> dict:
        """The scalars a run records (JSON-able)."""
        kind, value = parse_step(self.step)
        rec = self.lambda_min_record
        return {"lambda_min0": self.lambda_min, "lambda_max0": self.lambda_max, "step_limit": self.limit,
                "eta": self.step_size, "step": self.step if kind in ("limit", "common") else float(value),
                "step_exceeds_limit": self.exceeds_limit, "kernel_precision": self.precision,
                "lambda_min0_error": rec.error, "lambda_min0_verdict": rec.verdict}


def _kernel(spec: ModelSpec, X, params: Mapping[str, torch.Tensor], precision: str = DEFAULT_PRECISION,
            chunk_size: int = 64) -> np.ndarray:
    """K at ``params`` in ``precision``: the parameters cast once, every matmul of the engine in it."""
    dtype = precision_dtype(precision)
    with torch.no_grad():
        return ntk_matrix({k: torch.as_tensor(v).to(dtype) for k, v in params.items()}, spec, X, engine="structured",
                          chunk_size=chunk_size)


def init_kernel(spec: ModelSpec, X, y, params0: Mapping[str, torch.Tensor], step, loss: str,
                common_lambda_max: Optional[float] = None, precision: str = DEFAULT_PRECISION) -> InitKernel:
    """K_0 in ``precision`` (config ``gram.precision``), its spectrum, the initial residual and the
    resolved step of one run; the step and the linearised curve both come from this K_0 (a '<c>common'
    step needs `common_lambda_max`: the largest lambda_max(K_0) among the settings compared)."""
    K0 = _kernel(spec, X, params0, precision)
    lam, U = np.linalg.eigh(K0)
    with torch.no_grad():
        f0 = forward({k: torch.as_tensor(v) for k, v in params0.items()},
                     torch.as_tensor(np.asarray(X), dtype=spec.torch_dtype), spec.scales())
    r0 = f0.double().numpy() - np.asarray(y, dtype=np.float64)
    eta, limit = resolve_step(step, float(lam[-1]), int(K0.shape[0]), loss, common_lambda_max)
    return InitKernel(K0, lam, U, r0, step, eta, limit, loss, precision)


def largest_eigenvalue(spec: ModelSpec, X, params: Mapping[str, torch.Tensor],
                       precision: str = DEFAULT_PRECISION) -> float:
    """lambda_max of the empirical NTK at `params` (a '<c>common' step compares the settings' K_0)."""
    return float(np.linalg.eigvalsh(_kernel(spec, X, params, precision))[-1])


def kernel_change(spec: ModelSpec, X, params: Mapping[str, np.ndarray], K0: np.ndarray,
                  precision: str = DEFAULT_PRECISION) -> float:
    """|K_t - K_0|_F / |K_0|_F of the kernel at `params` (a checkpoint) against K_0, K_t in ``precision``
    (that of K_0)."""
    K = _kernel(spec, X, {k: np.asarray(v) for k, v in params.items()}, precision)
    return float(np.linalg.norm(K - K0) / np.linalg.norm(K0))


def kernel_changes(spec: ModelSpec, X, checkpoints: Mapping[int, Mapping[str, np.ndarray]], K0: np.ndarray,
                   epochs: Optional[list] = None, precision: str = DEFAULT_PRECISION) -> np.ndarray:
    """kernel_change at each epoch of `epochs` (default: the sorted checkpoints); NaN where absent."""
    epochs = sorted(checkpoints) if epochs is None else list(epochs)
    out = np.full(len(epochs), np.nan)
    for i, e in enumerate(epochs):
        if e in checkpoints:
            out[i] = 0.0 if e == 0 else kernel_change(spec, X, checkpoints[e], K0, precision)
    return out
