"""Vectorised full-batch GD: R runs of the same width (different seeds, inits, tau0) in one computation.

Same loss, records, divergence rule and stop at ``stop_ratio`` as `tfconv.core.train.train_gd` (see its docstring); the runs are
stacked along a leading axis and one batched forward/backward serves them all (einsum over the run
axis), so small
models pay one Python/dispatch overhead per epoch instead of R.  A run that diverges is frozen (its
update is masked out) and its later records are NaN, while the others go on.

Results agree with `train_gd` to float rounding, not bitwise (batched kernels may sum in another order):
the workflow uses this only when `ray.vectorise: true`.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .model import ModelSpec, init_params
from .train import STATUS_COMPLETE, STATUS_DIVERGED, RunResult, TrainConfig


def _check_group(specs: Sequence[ModelSpec]) -> None:
    s0 = specs[0]
    if any(s.vit for s in specs):
        raise ValueError("vectorised training covers the paper's model only, not the ViT variant; "
                         "train ViT runs one by one (the workflow does this by itself)")
    for s in specs[1:]:
        for key in ("width", "d", "d_s", "n_outputs", "hidden", "dtype"):
            if getattr(s, key) != getattr(s0, key):
                raise ValueError(f"vectorised runs must share {key}: {getattr(s0, key)!r} != {getattr(s, key)!r}")


def train_gd_vectorised(specs: Sequence[ModelSpec], X, y, seeds: Sequence[int], train: TrainConfig,
                        eval_fn: Optional[Callable[[Dict[str, torch.Tensor], int], Dict[str, float]]] = None,
                        device: Optional[str] = None, step_sizes: Optional[Sequence[float]] = None) -> List[RunResult]:
    """Train len(specs) runs together; returns one RunResult per (spec, seed), in order.

    `eval_fn(params, epoch)` is called for every active run with that run's parameters (as in
    `train_gd`) and may return extra scalar curves; `device` moves the computation to an accelerator;
    `step_sizes` gives each run its own step (default: ``train.step_size`` for all).
    """
    if len(specs) != len(seeds) or not specs:
        raise ValueError("specs and seeds must be non-empty and of equal length")
    _check_group(specs)
    t_start = time.perf_counter()
    spec0 = specs[0]
    dt = spec0.torch_dtype
    X = torch.as_tensor(np.asarray(X), dtype=dt, device=device)
    y = torch.as_tensor(np.asarray(y), dtype=dt, device=device)
    R, E = len(specs), train.epochs
    inits = [init_params(s, int(seed)) for s, seed in zip(specs, seeds)]
    names = list(inits[0])
    theta = {k: torch.stack([p[k] for p in inits]).to(device) for k in names}  # (R, ...)
    theta0 = {k: v.clone() for k, v in theta.items()}
    scales = {k: torch.tensor([s.scales()[k] for s in specs], dtype=dt, device=device) for k in specs[0].scales()}

    def b(v, nd):  # per-run scalars broadcast against (R, ...) tensors of nd trailing dims
        return v.view(-1, *([1] * nd))

    def step(th, sc):
        """Batched forward + backward of all runs: the sum of per-run losses has per-run gradients."""
        Q = b(sc["m_qkv"], 3) * torch.einsum("nsd,rmd->rnsm", X, th["Wq"])  # (R, N, d_s, width)
        K = b(sc["m_qkv"], 3) * torch.einsum("nsd,rmd->rnsm", X, th["Wk"])
        V = b(sc["m_qkv"], 3) * torch.einsum("nsd,rmd->rnsm", X, th["Wv"])
        A = torch.softmax(b(sc["tau0"], 3) * (Q @ K.transpose(-1, -2)), dim=-1)  # (R, N, d_s, d_s)
        Z = A @ V
        if "Wh" in th:
            Z = b(sc["m_h"], 3) * torch.einsum("rnsm,rkm->rnsk", Z, th["Wh"])
        pooled = torch.relu(Z).mean(dim=2)  # (R, N, width)
        pred = b(sc["tau1"], 2) * (pooled @ th["wo"])  # (R, N, C)
        if train.loss == "cross_entropy":
            per_run = -(y * torch.log_softmax(pred, dim=-1)).flatten(1).sum(1) / X.shape[0]
        else:
            per_run = 0.5 * ((pred - y) ** 2).flatten(1).sum(1)
            if train.loss == "mean":
                per_run = per_run / X.shape[0]
        g = torch.autograd.grad(per_run.sum(), [th[k] for k in names])
        return dict(zip(names, g)), (per_run.detach(), A.detach())

    nan = lambda: np.full((R, E + 1), np.nan)  # noqa: E731
    loss_rec, wc, dev_mean, dev_max = nan(), nan(), nan(), nan()
    wc_per = {k: nan() for k in names}
    sq = lambda d: {k: (v.double() ** 2).flatten(1).sum(1) for k, v in d.items()}  # noqa: E731
    norm0_per = {k: torch.sqrt(v) for k, v in sq(theta0).items()}
    norm0 = torch.sqrt(sum(sq(theta0).values()))
    active = torch.ones(R, dtype=torch.bool, device=device)
    etas = torch.tensor(list(step_sizes) if step_sizes is not None else [train.step_size] * R, dtype=dt, device=device)
    extra: List[Dict[str, np.ndarray]] = [dict() for _ in range(R)]
    diverged_epoch = np.full(R, -1)
    stop_epoch = np.full(R, -1)
    loss0 = None
    ckpt_epochs = set(int(e) for e in train.checkpoint_epochs)
    checkpoints: List[Dict[int, Dict[str, np.ndarray]]] = [dict() for _ in range(R)]

    for k in names:
        theta[k].requires_grad_(True)
    for epoch in range(E + 1):
        grads, (L, A) = step(theta, scales)  # L: (R,), A: (R, N, d_s, d_s)
        Ld = L.detach().double()
        if loss0 is None:
            loss0 = Ld.clone()
        bad = active & (~torch.isfinite(Ld) | (Ld > train.divergence_factor * loss0.clamp_min(1e-300)))
        for r in torch.nonzero(bad).flatten().tolist():
            diverged_epoch[r] = epoch
        active &= ~bad
        with torch.no_grad():
            act = active.cpu().numpy()
            loss_rec[act, epoch] = Ld.cpu().numpy()[act]
            d2 = sq({k: theta[k] - theta0[k] for k in names})
            wc[act, epoch] = (torch.sqrt(sum(d2.values())) / norm0).cpu().numpy()[act]
            for k in names:
                wc_per[k][act, epoch] = (torch.sqrt(d2[k]) / norm0_per[k]).cpu().numpy()[act]
            dev = (A - 1.0 / A.shape[-1]).abs().flatten(1)
            dev_mean[act, epoch] = dev.mean(1).double().cpu().numpy()[act]
            dev_max[act, epoch] = dev.max(1).values.double().cpu().numpy()[act]
            if epoch in ckpt_epochs:
                for r in np.nonzero(act)[0]:
                    checkpoints[r][epoch] = {k: theta[k][r].detach().cpu().numpy().copy() for k in names}
            if eval_fn is not None:
                for r in np.nonzero(act)[0]:
                    for key, val in eval_fn({k: theta[k][r].detach() for k in names}, epoch).items():
                        extra[r].setdefault(key, np.full(E + 1, np.nan))[epoch] = val
            if epoch == E:
                break
            if train.stop_ratio is not None:  # converged to float precision: freeze, as train_gd stops
                done = active & (Ld <= train.stop_ratio * loss0)
                for r in torch.nonzero(done).flatten().tolist():
                    stop_epoch[r] = epoch
                    frozen = {k: theta[k][r].detach().cpu().numpy().copy() for k in names}
                    for e in ckpt_epochs:
                        if e > epoch:
                            checkpoints[r][e] = frozen
                active &= ~done
            if not active.any():
                break
            mask = active.to(dt) * etas
            for k in names:
                theta[k] -= grads[k] * mask.view(-1, *([1] * (theta[k].ndim - 1)))

    wall = time.perf_counter() - t_start
    out = []
    for r, (s, seed) in enumerate(zip(specs, seeds)):
        tr = train if step_sizes is None else replace(train, step_size=float(step_sizes[r]))
        out.append(RunResult(
            spec=s, train=tr, seed=int(seed),
            status=STATUS_DIVERGED if diverged_epoch[r] >= 0 else STATUS_COMPLETE,
            loss=loss_rec[r], weight_change=wc[r], weight_change_per={k: v[r] for k, v in wc_per.items()},
            attention_deviation_mean=dev_mean[r], attention_deviation_max=dev_max[r],
            checkpoints=checkpoints[r], diverged_epoch=int(diverged_epoch[r]), stop_epoch=int(stop_epoch[r]),
            wall_seconds=wall / R,
            curves=extra[r],
        ))
    return out
