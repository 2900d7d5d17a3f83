"""Empirical neural tangent kernel K = J J^T over all trained parameters.

Definition used everywhere in tfconv (code, Zarr store, figures):

    K[i, j] = (1 / C) * sum_c  < d f_c(X_i) / d theta ,  d f_c(X_j) / d theta >

i.e. the Gram matrix of per-sample Jacobians over *all* trained parameters, averaged over the C
outputs (for C = 1, exactly J J^T).  For C > 1 this is the output-averaged kernel, not the full
(N C) x (N C) kernel; with independent outputs it has the same spectrum scale.

Two engines compute the same quantity:

* ``"exact"``: per-sample Jacobians by ``torch.func.jacrev`` + ``vmap``, contracted block by block.
  The reference: simple, slow, memory ``chunk_size x n_params``.
* ``"structured"`` (see `tfconv.ntk_structured`): contracts cotangents and inputs token-wise without
  ever forming a Jacobian.  Faster by orders of magnitude; tested against ``"exact"``.

Any block ``rows x cols`` of samples can be computed on its own: that is the unit the Dask
assembly distributes.  Memory is bounded by ``chunk_size`` rather than by N.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np
import torch
from torch.func import jacrev, vmap

from .model import ModelSpec, forward

ENGINES = ("structured", "exact")


def per_sample_jacobians(params: Mapping[str, torch.Tensor], X: torch.Tensor, scales: Mapping[str, float]) -> torch.Tensor:
    """Flattened per-sample Jacobians, shape (N, C, n_params), parameters in dict order."""
    names = list(params)

    def f_single(p, x):
        return forward(p, x[None], scales)[0]  # (C,)

    jac = vmap(jacrev(f_single), in_dims=(None, 0))(dict(params), X)  # name -> (N, C, *shape)
    return torch.cat([jac[k].reshape(X.shape[0], jac[k].shape[1], -1) for k in names], dim=-1)


def _as_tensor(X, dtype, device=None) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        return X.to(dtype=dtype, device=device)
    return torch.as_tensor(np.asarray(X), dtype=dtype, device=device)


def ntk_block_exact(
    params: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    X_rows,
    X_cols=None,
    chunk_size: int = 64,
) -> np.ndarray:
    """K[rows, cols] by Jacobian contraction; memory O(chunk_size * n_params).  float64 result (computed in
    the parameters' dtype, on their device)."""
    first = next(iter(params.values()))
    dtype, device = first.dtype, first.device
    scales = spec.scales()
    Xr = _as_tensor(X_rows, dtype, device)
    Xc = Xr if X_cols is None else _as_tensor(X_cols, dtype, device)
    C = spec.n_outputs
    out = np.empty((Xr.shape[0], Xc.shape[0]), dtype=np.float64)
    with torch.no_grad():
        for c0 in range(0, Xc.shape[0], chunk_size):
            Jc = per_sample_jacobians(params, Xc[c0:c0 + chunk_size], scales).to(torch.float64)
            for r0 in range(0, Xr.shape[0], chunk_size):
                Jr = Jc if (X_cols is None and r0 == c0) else per_sample_jacobians(
                    params, Xr[r0:r0 + chunk_size], scales).to(torch.float64)
                # (nr, C, P) x (nc, C, P) -> (nr, nc), averaged over outputs
                blk = torch.einsum("icp,jcp->ij", Jr, Jc) / C
                out[r0:r0 + Jr.shape[0], c0:c0 + Jc.shape[0]] = blk.cpu().numpy()
    return out


def _front_end_jacobians(params, X: torch.Tensor, scales, front) -> torch.Tensor:
    """Per-sample Jacobians (N, C, P_front) with respect to the ViT front-end parameters only."""
    rest = {k: v for k, v in params.items() if k not in front}

    def f_single(pf, x):
        return forward({**rest, **pf}, x[None], scales)[0]

    jac = vmap(jacrev(f_single), in_dims=(None, 0))({k: params[k] for k in front}, X)
    return torch.cat([jac[k].reshape(X.shape[0], jac[k].shape[1], -1) for k in front], dim=-1)


def ntk_block_vit(params, spec: ModelSpec, X_rows, X_cols=None, chunk_size: int = 64) -> np.ndarray:
    """K[rows, cols] of the ViT variant with mean pooling: the structured engine contracts the encoder's
    parameters on the embedded tokens, and the exact engine the front end's (patch embedding,
    positional embeddings), whose Jacobians are small; the two parts add up to the whole NTK."""
    from .model import ENCODER_PARAMS, embed_tokens
    from .ntk_structured import ntk_block_structured

    first = next(iter(params.values()))
    dtype, device = first.dtype, first.device
    scales = spec.scales()
    Xr = _as_tensor(X_rows, dtype, device)
    Xc = Xr if X_cols is None else _as_tensor(X_cols, dtype, device)
    front = [k for k in params if k not in ENCODER_PARAMS]
    enc = {k: params[k] for k in params if k in ENCODER_PARAMS}
    with torch.no_grad():
        Er = embed_tokens(params, Xr, scales)
        Ec = None if X_cols is None else embed_tokens(params, Xc, scales)
    out = ntk_block_structured(enc, spec.encoder_spec(), Er, Ec, chunk_size=chunk_size)
    C = spec.n_outputs
    with torch.no_grad():
        for c0 in range(0, Xc.shape[0], chunk_size):
            Jc = _front_end_jacobians(params, Xc[c0:c0 + chunk_size], scales, front).to(torch.float64)
            for r0 in range(0, Xr.shape[0], chunk_size):
                Jr = Jc if (X_cols is None and r0 == c0) else _front_end_jacobians(
                    params, Xr[r0:r0 + chunk_size], scales, front).to(torch.float64)
                out[r0:r0 + Jr.shape[0], c0:c0 + Jc.shape[0]] += (torch.einsum("icp,jcp->ij", Jr, Jc) / C).cpu().numpy()
    return out


def ntk_block(
    params: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    X_rows,
    X_cols=None,
    engine: str = "structured",
    chunk_size: int = 64,
) -> np.ndarray:
    """One block K[rows, cols] of the empirical NTK (float64 numpy array), by the chosen engine.

    For the ViT variant the structured engine covers the encoder and falls back to exact Jacobians
    for the front end (`ntk_block_vit`); with a class token (pooling by one token, which the structured
    engine does not model) the whole block is computed by the exact engine."""
    if engine not in ENGINES:
        raise ValueError(f"NTK engine must be one of {list(ENGINES)}, got {engine!r}")
    if engine == "exact" or spec.class_token:
        return ntk_block_exact(params, spec, X_rows, X_cols, chunk_size=chunk_size)
    if spec.vit:
        return ntk_block_vit(params, spec, X_rows, X_cols, chunk_size=chunk_size)
    from .ntk_structured import ntk_block_structured

    return ntk_block_structured(params, spec, X_rows, X_cols, chunk_size=chunk_size)


def ntk_matrix(params, spec: ModelSpec, X, engine: str = "structured", chunk_size: int = 64) -> np.ndarray:
    """The full N x N empirical NTK (for small N), symmetrised to remove rounding asymmetry."""
    K = ntk_block(params, spec, X, None, engine=engine, chunk_size=chunk_size)
    return 0.5 * (K + K.T)


def gram_eigenvalues(K: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric Gram matrix in ascending order, computed in float64."""
    K = np.asarray(K, dtype=np.float64)
    return np.linalg.eigvalsh(0.5 * (K + K.T))


def params_from_numpy(arrays: Mapping[str, np.ndarray], dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """Checkpoint arrays (as stored in Zarr) back to a parameter dict."""
    return {k: torch.as_tensor(np.asarray(v), dtype=dtype) for k, v in arrays.items()}


def gram_statistics(K: np.ndarray, eigenvalues: np.ndarray, K0: Optional[np.ndarray]) -> Dict[str, float]:
    """lambda_min, lambda_max, trace and change |K - K_0|_F / |K_0|_F of one Gram matrix."""
    out = {
        "lambda_min": float(eigenvalues[0]),
        "lambda_max": float(eigenvalues[-1]),
        "kernel_trace": float(np.trace(K)),
        "kernel_change": np.nan,
    }
    if K0 is not None:
        out["kernel_change"] = float(np.linalg.norm(K - K0) / np.linalg.norm(K0))
    return out
