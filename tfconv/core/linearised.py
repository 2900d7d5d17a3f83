"""The linearised (kernel) dynamics of gradient descent around theta_0: the theory's rate and step.

Linearising f around theta_0, GD with step eta on the mean loss L = 1/(2N) sum_n |f_n - y_n|^2
moves the residual r = f - y as r_{t+1} = (I - eta K_0 / N) r_t (for the sum loss replace eta / N by
eta), with K_0 the empirical NTK at initialisation (`tfconv.core.ntk`).  Numpy only.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np



def _step_per_sample(step_size: float, n_samples, loss: str):
    if loss == "mean":
        return np.asarray(step_size, dtype=float) / np.asarray(n_samples, dtype=float)
    if loss == "sum":
        return np.asarray(step_size, dtype=float) * np.ones_like(np.asarray(n_samples, dtype=float))
    if loss == "cross_entropy":  # the linear-rate theory is for the squared loss: no prediction
        return np.full_like(np.asarray(n_samples, dtype=float), np.nan)
    raise ValueError(f"loss must be 'mean', 'sum' or 'cross_entropy', got {loss!r}")


def predicted_rate(lambda_min, step_size: float, n_samples, loss: str = "mean"):
    """The theory's linear rate of the loss per epoch from lambda_min(K_0).

    Linearised GD on L = 1/(2N) sum |f - y|^2 (``loss="mean"``) maps the residual r = f - y to
    (I - eta K_0 / N) r, hence L_t <= L_0 (1 - eta lambda_min / N)^(2t) and

        rate = -2 log(1 - eta lambda_min / N)            (mean loss)
        rate = -2 log(1 - eta lambda_min)                (sum loss, L = 1/2 sum |f - y|^2)

    The bound (and the equality of the asymptotic rate) needs the step to be stable with
    lambda_min the slowest mode: eta (lambda_min + lambda_max) / N <= 2.  Where
    eta lambda_min / N >= 1 the expression is undefined and NaN is returned.  Works elementwise.
    """
    x = _step_per_sample(step_size, n_samples, loss) * np.asarray(lambda_min, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where((x >= 0) & (x < 1), -2.0 * np.log1p(-np.where(x < 1, x, 0.0)), np.nan)
    return float(rate) if np.ndim(rate) == 0 else rate


def stable_step_size(lambda_max, n_samples, loss: str = "mean"):
    """Largest stable GD step of the linearised dynamics: 2N / lambda_max (mean) or 2 / lambda_max (sum).

    Above it the mode of lambda_max has |1 - eta lambda_max / N| > 1 and the residual grows.
    Non-positive lambda_max gives NaN.  Works elementwise.
    """
    lam = np.asarray(lambda_max, dtype=float)
    per = _step_per_sample(1.0, n_samples, loss)  # 1/N or 1
    with np.errstate(invalid="ignore", divide="ignore"):
        eta = np.where(lam > 0, 2.0 / (per * np.where(lam > 0, lam, 1.0)), np.nan)
    return float(eta) if np.ndim(eta) == 0 else eta


# ---------------------------------------------------------------------------------------------
# The step size: fixed, or a fraction of the stability limit of K_0
# ---------------------------------------------------------------------------------------------

_LIMIT_SUFFIX = "limit"
_COMMON_SUFFIX = "common"


def parse_step(step) -> Tuple[str, float]:
    """A step specification as ("fixed", eta), ("limit", c) or ("common", c).

    A positive number is a fixed step size eta (the paper's Algorithm 1).  A string ``"<c>limit"``
    (e.g. ``"0.5limit"``) is the fraction c of the stability limit of the linearised dynamics,
    eta = c * stable_step_size(lambda_max(K_0), N, loss), computed per run from its K_0; 0 < c < 1
    keeps every mode stable (c = 1 is the edge).  ``"<c>common"`` is c times the smallest stability
    limit among the experiment's settings compared at the run's width and seed (its scalings and
    inits): one step for all of them, stable for each (the framing of a common step)."""
    if isinstance(step, bool):
        raise ValueError(f"step size {step!r}: give a positive number or a string like '0.5limit'")
    if isinstance(step, (int, float, np.integer, np.floating)):
        if not (np.isfinite(step) and step > 0):
            raise ValueError(f"step size {step!r} must be a positive finite number")
        return "fixed", float(step)
    s = str(step).strip()
    for suffix in (_LIMIT_SUFFIX, _COMMON_SUFFIX):
        if s.endswith(suffix):
            try:
                c = float(s[: -len(suffix)])
            except ValueError:
                c = float("nan")
            if np.isfinite(c) and 0 < c < 2:
                return suffix, c
    raise ValueError(f"step size {step!r}: give a positive number (a fixed step), '<c>limit' or '<c>common' with "
                     "0 < c < 2, e.g. '0.5limit' (half the stability limit 2N/lambda_max(K_0) of each run) or "
                     "'0.5common' (half the smallest limit among the settings compared)")


def format_step(step) -> str:
    """The label of a step specification in figures: 'eta = 0.05', 'eta = 0.5 x limit' or
    'eta = 0.5 x common limit'."""
    kind, v = parse_step(step)
    return {"fixed": f"eta = {v:g}", "limit": f"eta = {v:g} x limit"}.get(kind, f"eta = {v:g} x common limit")


def step_framing(step) -> str:
    """Which framing a step specification puts a comparison in: "common step" (a fixed number, or
    '<c>common': every setting compared gets the same step) or "own limit" ('<c>limit': each setting at
    c times its own stability limit)."""
    return "own limit" if parse_step(step)[0] == "limit" else "common step"


def resolve_step(step, lambda_max: float, n_samples: int, loss: str,
                 common_lambda_max: Optional[float] = None) -> Tuple[float, float]:
    """(eta, limit): the step size of one run and its stability limit 2N/lambda_max (mean loss).

    A '<c>common' step needs `common_lambda_max`, the largest lambda_max(K_0) among the settings
    compared (the smallest limit); its eta is c times that setting's limit."""
    kind, v = parse_step(step)
    limit = float(stable_step_size(lambda_max, n_samples, loss))
    if kind == "fixed":
        return v, limit
    if kind == "common":
        if common_lambda_max is None:
            raise ValueError(f"step size '{step}' needs the K_0 of every setting compared (common_lambda_max)")
        common = float(stable_step_size(max(float(common_lambda_max), float(lambda_max)), n_samples, loss))
        if not np.isfinite(common):
            raise ValueError(f"step size '{step}' needs a stability limit, which is not defined for the '{loss}' loss")
        return v * common, limit
    if not np.isfinite(limit):
        raise ValueError(f"step size '{step}' needs the stability limit of K_0, which is not defined for the "
                         f"'{loss}' loss or a kernel with lambda_max = {lambda_max:g}; give a fixed step instead")
    return v * limit, limit


# ---------------------------------------------------------------------------------------------
# The whole linearised loss curve, and the lambda_min bound
# ---------------------------------------------------------------------------------------------

def linearised_loss(eigenvalues, eigenvectors, residual0, step_size: float, epochs: int,
                    n_samples: int, loss: str = "mean") -> np.ndarray:
    """The loss curve of GD on the model linearised at theta_0, epochs 0..epochs.

    With K_0 = U diag(lambda) U^T and the initial residual r_0 = f_0(X) - y (N x C; K is the
    output-averaged kernel, exact for C = 1), the linearised residual is r_t = (I - eta K_0/N)^t r_0,
    so for the mean loss

        L_t = 1/(2N) sum_c sum_i (1 - eta lambda_i / N)^(2t) (u_i^T r_0c)^2

    (sum loss: eta instead of eta/N and 1/2 instead of 1/(2N)).  Exact for the linearised model;
    the gap to the measured curve measures how far from lazy a run is.  NaN for cross-entropy.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    U = np.asarray(eigenvectors, dtype=np.float64)
    r0 = np.asarray(residual0, dtype=np.float64).reshape(U.shape[0], -1)
    t = np.arange(int(epochs) + 1, dtype=np.float64)
    if loss == "cross_entropy":
        return np.full(t.shape, np.nan)
    per = _step_per_sample(step_size, n_samples, loss)  # eta / N or eta
    norm = 1.0 / (2.0 * n_samples) if loss == "mean" else 0.5
    proj = ((U.T @ r0) ** 2).sum(axis=1)  # (N,): sum over outputs of (u_i^T r_0c)^2
    factor = np.abs(1.0 - float(per) * lam)  # per mode, |1 - eta lambda_i / N|
    # a power, not exp(2t log f): a mode with f = 0 exactly (c = 0.5 puts the top mode there) must give
    # f^0 = 1 at t = 0, not 0 * log 0 = NaN; underflow to 0 later is what the mode does
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):  # above the limit the curve grows to inf
        powers = np.power(factor[:, None], (2.0 * t)[None, :])
        return norm * (proj[:, None] * powers).sum(axis=0)


def geometric_bound(loss0: float, step_size: float, lambda_min: float, epochs: int, n_samples: int,
                    loss: str = "mean", constant: float = 1.0) -> np.ndarray:
    """L_0 (1 - c eta lambda_min(K_0)/N)^(2t), t = 0..epochs: the theory's linear-rate bound.

    c = 1 is the slowest mode of the linearised dynamics (an upper bound on its loss when
    eta (lambda_min + lambda_max)/N <= 2); a smaller c asks for a fraction of that rate.  NaN where
    c eta lambda_min / N is outside [0, 1)."""
    x = constant * float(_step_per_sample(step_size, n_samples, loss)) * float(lambda_min)
    t = np.arange(int(epochs) + 1, dtype=np.float64)
    if not (0 <= x < 1):
        return np.full(t.shape, np.nan)
    return float(loss0) * np.exp(2.0 * t * np.log1p(-x))


# ---------------------------------------------------------------------------------------------
# The linearised loss from K_0's modes: any epoch, how long it takes, where lambda_min governs
# ---------------------------------------------------------------------------------------------

#: The loss ratio L_t / L_0 at which a run has converged to float precision (float32 residuals of
#: O(1) outputs stall near 1e-7, a loss ratio near 1e-14): training may stop there, rates stop there.
FLOAT_FLOOR = 1e-10


def mode_projection(eigenvectors, residual0) -> np.ndarray:
    """p_i = sum_c (u_i^T r_0c)^2: the initial residual's weight on each eigenvector of K_0."""
    U = np.asarray(eigenvectors, dtype=np.float64)
    r0 = np.asarray(residual0, dtype=np.float64).reshape(U.shape[0], -1)
    return ((U.T @ r0) ** 2).sum(axis=1)


def mode_loss(eigenvalues, projection, step_size: float, n_samples: int, loss: str, epochs) -> np.ndarray:
    """The linearised loss L_t = norm * sum_i p_i |1 - eta lambda_i / N|^(2t) at the epochs given
    (any non-negative numbers, an array); NaN entries of the modes (padding) are ignored."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    proj = np.asarray(projection, dtype=np.float64)
    ok = np.isfinite(lam) & np.isfinite(proj)
    lam, proj = lam[ok], proj[ok]
    t = np.asarray(epochs, dtype=np.float64)
    if loss == "cross_entropy":
        return np.full(t.shape, np.nan)
    per = _step_per_sample(step_size, n_samples, loss)
    norm = 1.0 / (2.0 * n_samples) if loss == "mean" else 0.5
    factor = np.abs(1.0 - float(per) * lam)
    with np.errstate(under="ignore", over="ignore"):
        powers = np.power(factor[:, None], (2.0 * t.ravel())[None, :])
    return (norm * (proj[:, None] * powers).sum(axis=0)).reshape(t.shape)


def slowest_mode_rate(eigenvalues, projection, step_size: float, n_samples: int, loss: str = "mean",
                      rtol: float = 0.0) -> float:
    """The asymptotic rate of the linearised loss, -2 log max_i |1 - eta lambda_i / N| over the modes
    the initial residual touches (p_i > rtol * sum p; any weight at all by default): lambda_min's rate when the step is stable and
    r_0 has a component along its eigenvector.  0 for a mode that does not decay; NaN if one grows."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    proj = np.asarray(projection, dtype=np.float64)
    ok = np.isfinite(lam) & np.isfinite(proj)
    lam, proj = lam[ok], proj[ok]
    if loss == "cross_entropy" or proj.size == 0 or not proj.sum() > 0:
        return float("nan")
    live = proj > rtol * proj.sum()
    f = float(np.max(np.abs(1.0 - float(_step_per_sample(step_size, n_samples, loss)) * lam[live])))
    if f > 1.0:
        return float("nan")
    return float("inf") if f == 0.0 else float(-2.0 * np.log(f))


def epochs_to_level(eigenvalues, projection, step_size: float, n_samples: int, loss: str, level: float,
                    max_epochs: int = 10 ** 9) -> float:
    """The first epoch t at which the linearised loss reaches L_t <= level * L_0 (inf when it never does
    within `max_epochs`, e.g. a mode that does not decay).  Exact: the curve is a sum of exponentials in t
    (log-convex, non-increasing for a stable step), so a bisection over integers finds the crossing."""
    f = lambda t: mode_loss(eigenvalues, projection, step_size, n_samples, loss, np.asarray([t]))[0]  # noqa: E731
    L0 = f(0)
    if not (np.isfinite(L0) and L0 > 0):
        return float("nan")
    target = level * L0
    if f(0) <= target:
        return 0.0
    hi = 1
    while f(hi) > target:
        if hi >= max_epochs:
            return float("inf")
        hi = min(2 * hi, max_epochs)
    lo = hi // 2  # f(lo) > target (or lo = 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f(mid) <= target:
            hi = mid
        else:
            lo = mid
    return float(hi)


def bound_epochs(step_size: float, lambda_min: float, n_samples: int, loss: str, constant: float,
                 level: float) -> float:
    """Epochs for the bound L_0 (1 - c eta lambda_min/N)^(2t) to reach level * L_0 (inf if it never does)."""
    x = constant * float(_step_per_sample(step_size, n_samples, loss)) * float(lambda_min)
    if not (0 < x < 1):
        return float("inf") if x == 0 else float("nan")
    return float(np.ceil(np.log(level) / (2.0 * np.log1p(-x))))


def asymptotic_onset(eigenvalues, projection, step_size: float, n_samples: int, loss: str,
                     tolerance: float = 0.1, max_epochs: int = 10 ** 9) -> tuple:
    """(epoch, L_t/L_0) from which the linearised loss decays within (1 + tolerance) of its slowest
    mode's rate (`slowest_mode_rate`): below that level lambda_min governs the curve.  The local rate
    -log(L_{t+1}/L_t) of a sum of exponentials never increases, so a bisection finds the epoch."""
    r = slowest_mode_rate(eigenvalues, projection, step_size, n_samples, loss)
    if not np.isfinite(r) or r <= 0:
        return float("nan"), float("nan")
    L = lambda t: mode_loss(eigenvalues, projection, step_size, n_samples, loss, np.asarray([t, t + 1.0]))  # noqa: E731
    L0 = L(0)[0]

    def local(t):
        a, b = L(t)
        return np.log(a / b) if a > 0 and b > 0 else r

    if local(0) <= (1 + tolerance) * r:
        return 0.0, 1.0
    hi = 1
    while local(hi) > (1 + tolerance) * r:
        if hi >= max_epochs:
            return float("inf"), 0.0
        hi = min(2 * hi, max_epochs)
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if local(mid) <= (1 + tolerance) * r:
            hi = mid
        else:
            lo = mid
    return float(hi), float(L(hi)[0] / L0)
