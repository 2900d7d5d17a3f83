"""Full-batch gradient descent with a fixed step size, and the per-epoch records the paper plots.

Loss (``loss="mean"``, the default):   L(theta) = 1/(2N) * sum_n |f(X_n) - y_n|^2
Loss (``loss="sum"``):                 L(theta) = 1/2    * sum_n |f(X_n) - y_n|^2
Loss (``loss="cross_entropy"``):       L(theta) = -1/N   * sum_n <y_n, log softmax(f(X_n))>  (one-hot y)

Epoch t's record is taken at theta_t, *before* the t-th update; there are epochs + 1 records
(epoch 0 is initialisation, epoch E the final parameters).  Recorded per epoch:

* ``loss``
* ``weight_change``: |theta_t - theta_0|_F / |theta_0|_F over all weights, and per weight matrix;
* ``attention_deviation_mean`` / ``_max``: mean and max of |A - 1/d_s| over samples and entries.

A run whose loss becomes non-finite or exceeds ``divergence_factor * loss_0`` stops: its status is
``"diverged"``, the epoch is recorded and later records are NaN.  It never raises to the caller.
With ``stop_ratio`` set (the workflow uses `tfconv.core.linearised.FLOAT_FLOOR`), a run whose loss
reaches ``stop_ratio * loss_0`` has converged to float precision and stops there: its status stays
``"complete"``, ``stop_epoch`` records the epoch, later records are NaN and the checkpoints after it
hold the parameters at the stop (gradient descent no longer moves them measurably).
Determinism: same spec, data, seed and thread count give bitwise identical records.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from .model import ModelSpec, Params, attention_deviation, forward, init_params
from .status import STATUS_COMPLETE, STATUS_DIVERGED, STATUS_KERNEL_ONLY

LOSSES = ("mean", "sum", "cross_entropy")


@dataclass(frozen=True)
class TrainConfig:
    step_size: float = 1.0
    epochs: int = 400
    loss: str = "mean"
    checkpoint_epochs: Sequence[int] = (0,)
    divergence_factor: float = 1e6
    stop_ratio: Optional[float] = None

    def __post_init__(self):
        if not (isinstance(self.step_size, (int, float)) and self.step_size > 0 and math.isfinite(self.step_size)):
            raise ValueError(f"TrainConfig.step_size must be a positive number, got {self.step_size!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs <= 0:
            raise ValueError(f"TrainConfig.epochs must be a positive integer, got {self.epochs!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"TrainConfig.loss must be one of {list(LOSSES)}, got {self.loss!r}")
        for e in self.checkpoint_epochs:
            if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e <= self.epochs:
                raise ValueError(
                    f"TrainConfig.checkpoint_epochs: {e!r} is outside 0..epochs={self.epochs}"
                )
        if not self.divergence_factor > 1:
            raise ValueError(f"TrainConfig.divergence_factor must be > 1, got {self.divergence_factor!r}")
        if self.stop_ratio is not None and not 0 < self.stop_ratio < 1:
            raise ValueError(f"TrainConfig.stop_ratio must be in (0, 1) or None, got {self.stop_ratio!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checkpoint_epochs"] = list(self.checkpoint_epochs)
        return d


@dataclass
class RunResult:
    """Everything one training run produces.  Arrays have length epochs + 1."""

    spec: ModelSpec
    train: TrainConfig
    seed: int
    status: str
    loss: np.ndarray
    weight_change: np.ndarray
    weight_change_per: Dict[str, np.ndarray]
    attention_deviation_mean: np.ndarray
    attention_deviation_max: np.ndarray
    checkpoints: Dict[int, Dict[str, np.ndarray]]
    diverged_epoch: int = -1
    stop_epoch: int = -1  # epoch at which the loss reached stop_ratio * loss_0 (-1: trained the whole budget)
    wall_seconds: float = 0.0
    curves: Dict[str, np.ndarray] = field(default_factory=dict)  # optional extra curves (e.g. accuracy)

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])


def loss_fn(pred: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    """The training loss of (N, C) predictions against (N, C) targets; see the module docstring."""
    if reduction == "cross_entropy":
        return -(y * torch.log_softmax(pred, dim=-1)).sum() / pred.shape[0]
    sq = 0.5 * ((pred - y) ** 2).sum()
    return sq / pred.shape[0] if reduction == "mean" else sq


def _norm(params: Dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((p.double() ** 2).sum()) for p in params.values()))


def train_gd(
    spec: ModelSpec,
    X,
    y,
    seed: int,
    train: TrainConfig,
    params: Optional[Params] = None,
    progress: Optional[Callable[[int, float], None]] = None,
    eval_fn: Optional[Callable[[Params, int], Dict[str, float]]] = None,
    device: Optional[str] = None,
    gd: bool = True,
) -> RunResult:
    """Train one model by full-batch GD and record the per-epoch diagnostics.

    X: (N, d_s, d), y: (N, C) arrays (numpy or torch).  `params` overrides the seeded init.
    `progress(epoch, loss)` is called every epoch; `eval_fn(params, epoch)` may return extra scalar
    curves (for example test accuracy), recorded in ``RunResult.curves``.  `device` ("cuda", ...)
    moves the computation to an accelerator; records and checkpoints come back as CPU arrays.
    ``gd=False`` records epoch 0 only (status ``"kernel_only"``): the initial diagnostics of a run
    whose GD is not run (wider than ``train.max_gd_width``).
    """
    t_start = time.perf_counter()
    dt = spec.torch_dtype
    X = torch.as_tensor(np.asarray(X), dtype=dt, device=device)
    y = torch.as_tensor(np.asarray(y), dtype=dt, device=device)
    if X.ndim != 3 or X.shape[1:] != (spec.d_s, spec.d):
        raise ValueError(f"X has shape {tuple(X.shape)}, expected (N, d_s={spec.d_s}, d={spec.d})")
    if y.shape != (X.shape[0], spec.n_outputs):
        raise ValueError(f"y has shape {tuple(y.shape)}, expected (N={X.shape[0]}, n_outputs={spec.n_outputs})")
    scales = spec.scales()
    theta0 = {k: v.detach().clone().to(device) for k, v in (params or init_params(spec, seed)).items()}
    theta = {k: v.clone().requires_grad_(True) for k, v in theta0.items()}
    names = list(theta)
    E = train.epochs
    nan = lambda: np.full(E + 1, np.nan)  # noqa: E731
    loss_rec, wc, dev_mean, dev_max = nan(), nan(), nan(), nan()
    wc_per = {k: nan() for k in names}
    norm0 = _norm(theta0)
    norm0_per = {k: math.sqrt(float((theta0[k].double() ** 2).sum())) for k in names}
    ckpt_epochs = set(int(e) for e in train.checkpoint_epochs)
    checkpoints: Dict[int, Dict[str, np.ndarray]] = {}
    extra: Dict[str, np.ndarray] = {}
    status, diverged_epoch, stop_epoch = STATUS_COMPLETE, -1, -1
    loss0 = None

    for epoch in range(E + 1):
        pred, A = forward(theta, X, scales, return_attention=True)
        L = loss_fn(pred, y, train.loss)
        lval = float(L.detach())
        if loss0 is None:
            loss0 = lval
        if not math.isfinite(lval) or lval > train.divergence_factor * max(loss0, 1e-300):
            status, diverged_epoch = STATUS_DIVERGED, epoch
            break
        with torch.no_grad():
            loss_rec[epoch] = lval
            diff_sq = {k: float(((theta[k] - theta0[k]).double() ** 2).sum()) for k in names}
            wc[epoch] = math.sqrt(sum(diff_sq.values())) / norm0
            for k in names:
                wc_per[k][epoch] = math.sqrt(diff_sq[k]) / norm0_per[k]
            dev_mean[epoch], dev_max[epoch] = attention_deviation(A)
            if epoch in ckpt_epochs:
                checkpoints[epoch] = {k: v.detach().cpu().numpy().copy() for k, v in theta.items()}
            if eval_fn is not None:
                for key, val in eval_fn({k: v.detach() for k, v in theta.items()}, epoch).items():
                    extra.setdefault(key, nan())[epoch] = val
        if progress is not None:
            progress(epoch, lval)
        if not gd:
            status = STATUS_KERNEL_ONLY
            break
        if epoch == E:
            break
        if train.stop_ratio is not None and lval <= train.stop_ratio * loss0:
            stop_epoch = epoch
            frozen = {k: v.detach().cpu().numpy().copy() for k, v in theta.items()}
            for e in ckpt_epochs:
                if e > epoch:
                    checkpoints[e] = frozen
            break
        grads = torch.autograd.grad(L, [theta[k] for k in names])
        with torch.no_grad():
            for k, g in zip(names, grads):
                theta[k] -= train.step_size * g

    return RunResult(
        spec=spec, train=train, seed=int(seed), status=status, loss=loss_rec, weight_change=wc,
        weight_change_per=wc_per, attention_deviation_mean=dev_mean, attention_deviation_max=dev_max,
        checkpoints=checkpoints, diverged_epoch=diverged_epoch, stop_epoch=stop_epoch,
        wall_seconds=time.perf_counter() - t_start, curves=extra,
    )
