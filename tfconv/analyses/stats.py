"""Numbers read off an experiment's aggregate: fitted slopes, linear rates, the theory's rates.

Pure numpy/scipy (no plotting).  Every number that a figure or the claims table prints has its one
definition here; docs/analyses.md repeats the definitions in words.

Definitions
-----------
* Log-log slope (`fit_loglog`): ordinary least squares of log y on log x over *all* points given
  (e.g. every seed at every width, not seed means), dropping points with a non-finite or
  non-positive x or y.  The interval is the two-sided t interval of the slope with n - 2 degrees
  of freedom at level ``confidence``.  Fewer than 3 usable points give NaN.
* Linear rate (`linear_rate`): rate = -slope of log(loss) against epoch over the window
  [start, end] (fractions of the epoch budget), stopped before the first epoch where the loss falls
  below ``floor * loss_0`` (the float32 noise floor, so the plateau is not fitted).  R^2 is that of
  the same fit.  A curve containing a non-finite value (a diverged or missing run) gives NaN.
* Predicted rate (`predicted_rate`): linearising the model around theta_0, GD on the ``mean`` loss
  L = 1/(2N) sum_n |f_n - y_n|^2 moves the residual as r_{t+1} = (I - eta K_0 / N) r_t, so
  L_t <= L_0 (1 - eta lambda_min / N)^(2t) and the rate per epoch is
  -2 log(1 - eta lambda_min / N); for the ``sum`` loss replace eta / N by eta.
* Stable step size (`stable_step_size`): the same linearised map is stable iff every
  |1 - eta lambda_i / N| < 1, i.e. eta < 2N / lambda_max (``mean``) or 2 / lambda_max (``sum``).
* Smallest sufficient width (`smallest_sufficient_width`): per n_samples (and per scaling x init),
  the smallest width of the ladder at which at least ``success_fraction`` of the present seeds
  finish the budget *complete* (not diverged) with loss_E / loss_0 <= ``loss_target``.
  `overparam_exponent` fits log width* on log n_samples (censored points excluded and counted).
* Seed band (`mean_band`): the mean over seeds with the band [min, max] over seeds (few seeds make
  a standard deviation unreliable; min/max shows every seed).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from ..config.experiment import AXIS_DEFAULTS, GRID_AXES
from ..core.linearised import predicted_rate, stable_step_size  # noqa: F401 (re-exported)
from ..core.status import STATUS_COMPLETE, STATUS_DIVERGED

#: Default relative floor of `linear_rate`: float32 residuals of O(1) outputs stall near 1e-7,
#: i.e. a loss ratio near 1e-14; 1e-10 stops the fit well before that plateau.
RATE_FLOOR = 1e-10



# ---------------------------------------------------------------------------------------------
# Fits
# ---------------------------------------------------------------------------------------------

def _nan_fit(n: int = 0) -> Dict[str, float]:
    return dict(slope=np.nan, intercept=np.nan, ci_low=np.nan, ci_high=np.nan, stderr=np.nan, r2=np.nan, n=int(n))


def fit_linear(x, y, confidence: float = 0.95) -> Dict[str, float]:
    """Least squares y = intercept + slope x over finite points, with the t interval of the slope.

    Returns dict(slope, intercept, ci_low, ci_high, stderr, r2, n); NaN entries when n < 3 or x is
    constant.  With exactly collinear points the interval collapses to the slope.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0:
        return _nan_fit(n)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    sse = float((resid ** 2).sum())
    sst = float(((y - ym) ** 2).sum())
    r2 = 1.0 - sse / sst if sst > 0 else 1.0
    stderr = math.sqrt(sse / (n - 2) / sxx)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 2)) * stderr
    return dict(slope=slope, intercept=intercept, ci_low=slope - half, ci_high=slope + half,
                stderr=stderr, r2=float(r2), n=n)


def fit_loglog(x, y, confidence: float = 0.95) -> Dict[str, float]:
    """Power-law fit y = exp(intercept) x^slope: least squares of log y on log x over all points.

    Points with non-finite or non-positive x or y are dropped; fewer than 3 left give NaN results.
    Returns dict(slope, intercept, ci_low, ci_high, stderr, r2, n) with a t interval (n - 2 dof).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"fit_loglog: x and y need the same number of points, got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return fit_linear(np.log(x[ok]), np.log(y[ok]), confidence)


def linear_rate(
    loss_curve,
    window: Sequence[float] = (0.0, 0.5),
    floor: Optional[float] = RATE_FLOOR,
    diverged: bool = False,
) -> Dict[str, float]:
    """Fitted linear (geometric) rate of one loss curve: rate = -d log(loss) / d epoch.

    loss_curve: losses at epochs 0..E.  The fit uses epochs round(window[0] E) .. round(window[1] E)
    and stops before the first epoch whose loss is below ``floor * loss_0`` (``floor=None`` or 0
    disables this).  Returns dict(rate, r2, n, start, stop) with ``stop`` exclusive; NaN rate and
    r2 when the run diverged (``diverged`` or any non-finite entry), or fewer than 3 points remain.
    """
    loss = np.asarray(loss_curve, dtype=float).ravel()
    E = loss.size - 1
    lo, hi = float(window[0]), float(window[1])
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"linear_rate: window must satisfy 0 <= start < end <= 1, got {tuple(window)}")
    start, stop = int(round(lo * E)), int(round(hi * E)) + 1
    out = dict(rate=np.nan, r2=np.nan, n=0, start=start, stop=start)
    if diverged or E < 2 or not np.all(np.isfinite(loss)) or not loss[0] > 0:
        return out
    if floor:
        below = np.nonzero(loss <= floor * loss[0])[0]
        if below.size:
            stop = min(stop, int(below[0]))
    below_zero = np.nonzero(loss <= 0)[0]
    if below_zero.size:
        stop = min(stop, int(below_zero[0]))
    out["stop"] = max(start, stop)
    if stop - start < 3:
        out["n"] = max(0, stop - start)
        return out
    t = np.arange(start, stop, dtype=float)
    fit = fit_linear(t, np.log(loss[start:stop]))
    out.update(rate=-fit["slope"], r2=fit["r2"], n=fit["n"])
    return out


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------

def mean_band(values, axis=-1) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) over ``axis``, ignoring NaN: the mean over seeds with the [min, max] band.

    All-NaN slices give NaN (without a warning).
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    cnt = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, np.where(ok, v, 0.0).sum(axis=axis) / np.maximum(cnt, 1), np.nan)
        low = np.where(cnt > 0, np.where(ok, v, np.inf).min(axis=axis), np.nan)
        high = np.where(cnt > 0, np.where(ok, v, -np.inf).max(axis=axis), np.nan)
    return mean, low, high


def paired_ratio(a, b, confidence: float = 0.95) -> Dict[str, float]:
    """Geometric-mean ratio a/b over paired seeds with a t interval on the mean log ratio.

    Pairs with a non-finite or non-positive member are dropped.  Returns dict(ratio, ci_low,
    ci_high, n); the interval is NaN with fewer than 2 pairs, everything NaN with none.
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    lr = np.log(a[ok] / b[ok])
    n = int(lr.size)
    if n == 0:
        return dict(ratio=np.nan, ci_low=np.nan, ci_high=np.nan, n=0)
    m = float(lr.mean())
    if n < 2:
        return dict(ratio=math.exp(m), ci_low=np.nan, ci_high=np.nan, n=n)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * float(lr.std(ddof=1)) / math.sqrt(n)
    return dict(ratio=math.exp(m), ci_low=math.exp(m - half), ci_high=math.exp(m + half), n=n)


def proportion_interval(k: int, n: int, confidence: float = 0.95) -> Tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval of a proportion k/n; NaN when n = 0."""
    if n <= 0:
        return (np.nan, np.nan)
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (lo, hi)


# ---------------------------------------------------------------------------------------------
# Reading an aggregate (xarray.Dataset, layout in tfconv.aggregate)
# ---------------------------------------------------------------------------------------------

def complete_axes(ds):
    """The aggregate with the axes scaling, init and seed always present (length 1 if not on the grid)."""
    for axis, default in AXIS_DEFAULTS.items():
        if axis not in ds.dims:
            ds = ds.expand_dims({axis: [default]})
    if "scaling" in ds.coords:
        ds = ds.assign_coords(scaling=[str(s) for s in ds["scaling"].values])
    return ds


def axis_values(ds, axis: str) -> list:
    """Coordinate values of ``axis`` as Python scalars ([] when the axis is absent)."""
    if axis not in ds.coords:
        return []
    return [v.item() if hasattr(v, "item") else v for v in ds[axis].values]


def preferred(values: Sequence, *choices) -> Any:
    """The first of ``choices`` present in ``values``, else the first value (None when empty)."""
    for c in choices:
        if c in values:
            return c
    return values[0] if len(values) else None


def _nan_like_runs(ds):
    import xarray as xr

    return xr.full_like(ds["status"], np.nan, dtype=float)


def epoch0_kernel(ds, var: str):
    """``var`` (lambda_min, lambda_max, ...) of K_0, i.e. at checkpoint_epoch 0; all NaN when absent."""
    if var not in ds or "checkpoint_epoch" not in ds[var].dims:
        return ds[var] if var in ds else _nan_like_runs(ds)
    if 0 in [int(e) for e in ds["checkpoint_epoch"].values]:
        return ds[var].sel(checkpoint_epoch=0, drop=True)
    return _nan_like_runs(ds)


def final_value(ds, var: str, dim: str = "epoch"):
    """``var`` at the last entry of ``dim`` (the budget's end; NaN for diverged and missing runs)."""
    if var not in ds or ds.sizes.get(dim, 0) == 0:
        return _nan_like_runs(ds)
    return ds[var].isel({dim: -1}, drop=True)


def n_samples_of(ds, default=None):
    """N of an aggregate without an n_samples axis: dataset attrs (n_samples / n_train) or ``default``."""
    import json

    if "n_samples" in ds.coords and ds["n_samples"].size == 1:
        return float(np.asarray(ds["n_samples"].values).ravel()[0])
    try:
        meta = json.loads(ds.attrs.get("dataset", "{}") or "{}")
    except (TypeError, ValueError):
        meta = {}
    for key in ("n_samples", "n_train", "N"):
        if key in meta and meta[key] is not None:
            return float(meta[key])
    return np.nan if default is None else float(default)


def run_table(ds, window: Sequence[float] = (0.0, 0.5), floor: Optional[float] = RATE_FLOOR):
    """One row per run: grid coordinates, status, loss_0, final loss, fitted rate and R^2, K_0 stats.

    Columns: the grid axes present, status, loss0, loss_final, rate, rate_r2, rate_n,
    lambda_min0, lambda_max0, attention_deviation0, weight_change_final, kernel_change_final.
    """
    import pandas as pd

    ds = complete_axes(ds)
    axes = [a for a in GRID_AXES if a in ds.dims]
    loss = ds["loss"].transpose(*axes, "epoch").values
    status = ds["status"].transpose(*axes).values
    lmin = epoch0_kernel(ds, "lambda_min").transpose(*axes).values
    lmax = epoch0_kernel(ds, "lambda_max").transpose(*axes).values
    kch = final_value(ds, "kernel_change", "checkpoint_epoch").transpose(*axes).values
    dev = ds["attention_deviation_mean"].isel(epoch=0).transpose(*axes).values
    wch = ds["weight_change"].isel(epoch=-1).transpose(*axes).values
    coords = {a: axis_values(ds, a) for a in axes}
    rows = []
    for idx in np.ndindex(*status.shape):
        st = str(status[idx])
        r = linear_rate(loss[idx], window, floor, diverged=(st == STATUS_DIVERGED))
        row = {a: coords[a][i] for a, i in zip(axes, idx)}
        row.update(
            status=st, loss0=float(loss[idx][0]), loss_final=float(loss[idx][-1]),
            rate=r["rate"], rate_r2=r["r2"], rate_n=r["n"],
            lambda_min0=float(lmin[idx]),
            lambda_max0=float(lmax[idx]),
            attention_deviation0=float(dev[idx]),
            weight_change_final=float(wch[idx]),
            kernel_change_final=float(kch[idx]),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def rates(ds, settings: Mapping[str, Any]):
    """Fitted linear rate and its R^2 per run (`linear_rate` over ``settings["rate_window"]``), as two
    DataArrays over the run axes of ``ds``; NaN for diverged and missing runs.  The one place where
    figures and the claims table get their rates."""
    import xarray as xr

    window = settings.get("rate_window", (0.0, 0.5))
    floor = settings.get("rate_floor", RATE_FLOOR)
    axes = list(ds["status"].dims)
    loss = ds["loss"].transpose(*axes, "epoch").values
    st = np.asarray(ds["status"].transpose(*axes).values).astype(str)
    rate = np.full(st.shape, np.nan)
    r2 = np.full(st.shape, np.nan)
    for idx in np.ndindex(*st.shape):
        r = linear_rate(loss[idx], window, floor, diverged=(st[idx] == STATUS_DIVERGED))
        rate[idx], r2[idx] = r["rate"], r["r2"]
    coords = {a: ds[a].values for a in axes}
    return xr.DataArray(rate, coords=coords, dims=axes), xr.DataArray(r2, coords=coords, dims=axes)


# ---------------------------------------------------------------------------------------------
# Over-parameterisation exponent
# ---------------------------------------------------------------------------------------------

def smallest_sufficient_width(ds, loss_target: float = 1e-3, success_fraction: float = 0.9):
    """Per (n_samples, scaling, init): the smallest width whose seeds reach the loss target.

    A run *succeeds* when it is complete (not diverged, not missing) and loss_E / loss_0 <=
    ``loss_target`` at the end of the budget E.  A width is *sufficient* when at least
    ``success_fraction`` of its present (non-missing) seeds succeed; diverged seeds count as
    failures.  Returns a pandas.DataFrame with columns n_samples, scaling, init, width_star
    (NaN when no width of the ladder suffices: ``censored`` is True), n_seeds (present seeds at
    width_star, or at the largest width when censored), success (fraction at width_star).
    Without an n_samples axis the dataset's N (attrs) is used as the single value.
    """
    import pandas as pd

    ds = complete_axes(ds)
    if "n_samples" not in ds.dims:
        ds = ds.expand_dims({"n_samples": [n_samples_of(ds)]})
    widths = sorted(axis_values(ds, "width"))
    rows = []
    for n in axis_values(ds, "n_samples"):
        for sc in axis_values(ds, "scaling"):
            for ini in axis_values(ds, "init"):
                sub = ds.sel(n_samples=n, scaling=sc, init=ini)
                found = None
                last = (0, np.nan)
                for w in widths:
                    s = sub.sel(width=w)
                    status = np.asarray(s["status"].values).astype(str).ravel()
                    loss = s["loss"].transpose("seed", "epoch").values
                    present = status != "missing"
                    k = int(present.sum())
                    if k == 0:
                        continue
                    with np.errstate(invalid="ignore", divide="ignore"):
                        ratio = loss[:, -1] / loss[:, 0]
                    ok = present & (status == STATUS_COMPLETE) & np.isfinite(ratio) & (ratio <= loss_target)
                    frac = float(ok.sum()) / k
                    last = (k, frac)
                    if frac >= success_fraction:
                        found = (w, k, frac)
                        break
                if found:
                    rows.append(dict(n_samples=n, scaling=sc, init=ini, width_star=float(found[0]),
                                     censored=False, n_seeds=found[1], success=found[2]))
                else:
                    rows.append(dict(n_samples=n, scaling=sc, init=ini, width_star=np.nan,
                                     censored=True, n_seeds=last[0], success=last[1]))
    return pd.DataFrame(rows, columns=["n_samples", "scaling", "init", "width_star", "censored", "n_seeds", "success"])


def overparam_exponent(table, confidence: float = 0.95, theory: Iterable[float] = (2.0, 3.0)) -> Dict[str, Any]:
    """Fit width* ~ n_samples^slope (log-log) on one group's rows of `smallest_sufficient_width`.

    Censored rows (no sufficient width on the ladder) are left out and counted in ``n_censored``;
    rows where width* is the smallest width of the ladder only bound width* from above.
    Returns fit_loglog's dict plus n_censored and, for each theory exponent a, ``within_ci_<a>``
    (a in [ci_low, ci_high]) and ``below_<a>`` (ci_high < a).
    """
    n = np.asarray(table["n_samples"], dtype=float)
    w = np.asarray(table["width_star"], dtype=float)
    fit = dict(fit_loglog(n, w, confidence))
    fit["n_censored"] = int(np.asarray(table["censored"], dtype=bool).sum())
    for a in theory:
        key = f"{a:g}"
        fit[f"within_ci_{key}"] = bool(fit["ci_low"] <= a <= fit["ci_high"]) if np.isfinite(fit["ci_low"]) else False
        fit[f"below_{key}"] = bool(fit["ci_high"] < a) if np.isfinite(fit["ci_high"]) else False
    return fit
