"""The linearised (kernel) dynamics of gradient descent around theta_0: the theory's rate and step.

Linearising f around theta_0, GD with step eta on the mean loss L = 1/(2N) sum_n |f_n - y_n|^2
moves the residual r = f - y as r_{t+1} = (I - eta K_0 / N) r_t (for the sum loss replace eta / N by
eta), with K_0 the empirical NTK at initialisation (`tfconv.core.ntk`).  Numpy only.
"""
from __future__ import annotations

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
