"""Numbers read off an experiment's aggregate: fits, rates, ratios, widths; the one definition of each.

Pure numpy/scipy/xarray (no plotting).  Every number that a figure or the claims table prints is
computed here; docs/analyses.md repeats the definitions in words.

* Log-log slope (`fit_loglog`): least squares of log y on log x over *all* points given (every seed
  at every width, not seed means), dropping non-finite or non-positive points; two-sided t interval
  with n - 2 degrees of freedom at level ``confidence``; fewer than 3 points give NaN.
* Late-window rate (`linear_rate`): rate = -slope of log(loss) against epoch over the window
  [start, end] of the budget (``analysis.rate_window``, default the second half), stopped before the
  loss falls below ``floor * loss_0`` (float32 precision), with the t interval of the slope.  The same
  fit on a run's linearised curve (``loss_linearised``) is its *predicted* rate: measured and
  predicted use one definition and one window.  A run whose loss reached the floor before the
  window has ``floor_reached`` (it converged to machine precision).
* Kernel stability (`kernel_change_max`): max over the checkpoint epochs of |K_t - K_0|_F / |K_0|_F.
* Sufficient width (`smallest_sufficient_width`): per n_samples (per scaling x init), the smallest
  width at which at least ``success_fraction`` of the seeds succeed (0.5: the median seed), where a
  seed succeeds by the ``loss`` criterion (complete, loss_E / loss_0 <= target) or the ``kernel``
  criterion (complete, max kernel change <= ``kernel_stability``; independent of the epoch budget).
* Paired ratio (`paired_ratio`): geometric mean of a/b over seeds, with the t interval of the mean
  log ratio (n - 1 dof); quoted at the largest width with >= 2 pairs (`ratio_at_largest_width`).
* Linearisation gap (`linearisation_gap`): max over epochs of |log10 L_t - log10 L_t^lin| where both
  are above the floor: how many decades the measured curve is from the kernel's prediction.
* Geometric bound (`bound_holds`): L_t <= L_0 (1 - c eta lambda_min(K_0) / N)^(2t) (1 + tol) at every
  epoch where the loss is above the floor.
* Seed band (`mean_band`): the mean over seeds with the [min, max] band.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

from ..config.experiment import AXIS_DEFAULTS, GRID_AXES
from ..config import analysis_settings
from ..core.linearised import geometric_bound, predicted_rate, stable_step_size  # noqa: F401 (re-exported)
from ..core.status import STATUS_COMPLETE, STATUS_DIVERGED, STATUS_KERNEL_ONLY, STATUS_MISSING  # noqa: F401 (re-exported)

#: float32 residuals of O(1) outputs stall near 1e-7, i.e. a loss ratio near 1e-14; fits stop at 1e-10.
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
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, n - 2)) * stderr
    return dict(slope=slope, intercept=intercept, ci_low=slope - half, ci_high=slope + half,
                stderr=stderr, r2=float(r2), n=n)


def fit_loglog(x, y, confidence: float = 0.95) -> Dict[str, float]:
    """Power-law fit y = exp(intercept) x^slope: least squares of log y on log x over all points."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"fit_loglog: x and y need the same number of points, got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return fit_linear(np.log(x[ok]), np.log(y[ok]), confidence)


def linear_rate(loss_curve, window: Sequence[float] = (0.5, 1.0), floor: Optional[float] = RATE_FLOOR,
                diverged: bool = False, confidence: float = 0.95) -> Dict[str, float]:
    """Late-window geometric rate of one loss curve: rate = -d log(loss) / d epoch, with its interval.

    The fit uses epochs round(window[0] E) .. round(window[1] E) of the curve (epochs 0..E), stopped
    before the first epoch whose loss is <= ``floor * loss_0``.  Returns dict(rate, ci_low, ci_high,
    r2, n, start, stop, floor_reached): ``floor_reached`` is True when the loss hit the floor before
    the window had 3 points (the run converged to machine precision: no rate is fitted).  NaN rate
    for a diverged run, a non-finite curve, or fewer than 3 points otherwise.
    """
    loss = np.asarray(loss_curve, dtype=float).ravel()
    E = loss.size - 1
    lo, hi = float(window[0]), float(window[1])
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"linear_rate: window must satisfy 0 <= start < end <= 1, got {tuple(window)}")
    start, stop = int(round(lo * E)), int(round(hi * E)) + 1
    out = dict(rate=np.nan, ci_low=np.nan, ci_high=np.nan, r2=np.nan, n=0, start=start, stop=start,
               floor_reached=False)
    if diverged or E < 2 or not np.all(np.isfinite(loss)) or not loss[0] > 0:
        return out
    cut = np.nonzero(loss <= (floor or 0.0) * loss[0])[0] if floor else np.nonzero(loss <= 0)[0]
    if cut.size:
        stop = min(stop, int(cut[0]))
    out["stop"] = max(start, stop)
    if stop - start < 3:
        out["n"] = max(0, stop - start)
        out["floor_reached"] = bool(cut.size and cut[0] < start + 3)
        return out
    t = np.arange(start, stop, dtype=float)
    fit = fit_linear(t, np.log(loss[start:stop]), confidence)
    out.update(rate=-fit["slope"], ci_low=-fit["ci_high"], ci_high=-fit["ci_low"], r2=fit["r2"], n=fit["n"])
    return out


def linearisation_gap(loss_curve, linearised_curve, floor: float = RATE_FLOOR) -> float:
    """Max over epochs of |log10 L_t - log10 L_t^lin| where both are above ``floor * L_0``: how many
    decades the measured loss is from the linearised (kernel) prediction.  NaN without common epochs."""
    L = np.asarray(loss_curve, dtype=float)
    P = np.asarray(linearised_curve, dtype=float)
    if L.size == 0 or not np.isfinite(L[0]) or L[0] <= 0:
        return np.nan
    ok = np.isfinite(L) & np.isfinite(P) & (L > floor * L[0]) & (P > floor * L[0])
    if not ok.any():
        return np.nan
    return float(np.max(np.abs(np.log10(L[ok]) - np.log10(P[ok]))))


def bound_holds(loss_curve, bound_curve, tolerance: float = 1e-3, floor: float = RATE_FLOOR) -> Tuple[bool, int]:
    """(holds, first violating epoch or -1): L_t <= bound_t (1 + tolerance) at every epoch where the
    loss is above ``floor * L_0``; a non-finite loss (diverged) violates it."""
    L = np.asarray(loss_curve, dtype=float)
    B = np.asarray(bound_curve, dtype=float)
    if not np.isfinite(L[0]):
        return False, 0
    check = np.isfinite(B) & ~(np.isfinite(L) & (L <= floor * L[0]))
    bad = np.nonzero(check & ~(np.isfinite(L) & (L <= B * (1.0 + tolerance))))[0]
    return (bad.size == 0), (int(bad[0]) if bad.size else -1)


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
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * float(lr.std(ddof=1)) / math.sqrt(n)
    return dict(ratio=math.exp(m), ci_low=math.exp(m - half), ci_high=math.exp(m + half), n=n)


def ratio_at_largest_width(rate_a, rate_b, confidence: float = 0.95,
                           widths: Optional[Sequence] = None) -> Tuple[Any, Dict[str, float]]:
    """The paired ratio at the largest width: (width, `paired_ratio` of rate_a / rate_b there).

    rate_a, rate_b: per-run values (DataArrays with a width axis, paired over the others, e.g. seed).
    The width is the largest of ``widths`` (default: every width of rate_a) with >= 2 pairs (a ratio
    with an interval), else the largest with one pair, else the largest width (all-NaN ratio).  The
    claims table (claims 3 and 4) and the figures that quote a rate ratio (init_comparison,
    scaling_comparison) take it from here, so they quote the same width and number.
    """
    if widths is None:
        widths = [w.item() if hasattr(w, "item") else w for w in rate_a["width"].values]
    best = None
    for w in sorted(widths, reverse=True):
        res = paired_ratio(rate_a.sel(width=w).values, rate_b.sel(width=w).values, confidence)
        if res["n"] >= 2:
            return w, res
        if res["n"] and best is None:
            best = (w, res)
    return best or (max(widths), paired_ratio([], [], confidence))


def proportion_interval(k: int, n: int, confidence: float = 0.95) -> Tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval of a proportion k/n; NaN when n = 0."""
    if n <= 0:
        return (np.nan, np.nan)
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(scipy_stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(scipy_stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (lo, hi)


# ---------------------------------------------------------------------------------------------
# Reading an aggregate (xarray.Dataset, layout in tfconv.store.aggregate)
# ---------------------------------------------------------------------------------------------

def complete_axes(ds):
    """The aggregate with the axes scaling, init and seed always present (length 1 if not on the grid)."""
    for axis, default in AXIS_DEFAULTS.items():
        if axis not in ds.dims:
            ds = ds.expand_dims({axis: [default]})
    for axis in ("scaling", "step_size"):
        if axis in ds.coords:
            ds = ds.assign_coords({axis: [str(s) for s in ds[axis].values]})
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


def kernel_change_max(ds):
    """max over the checkpoint epochs of |K_t - K_0|_F / |K_0|_F per run (NaN when never measured)."""
    if "kernel_change" not in ds or ds.sizes.get("checkpoint_epoch", 0) == 0:
        return _nan_like_runs(ds)
    kc = ds["kernel_change"]
    return kc.where(np.isfinite(kc)).max("checkpoint_epoch", skipna=True)


def attr_dict(ds, key: str) -> Dict[str, Any]:
    """An aggregate attribute that holds a mapping (older aggregates stored it as a JSON string)."""
    import json

    v = ds.attrs.get(key) or {}
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            v = {}
    return dict(v)


def n_samples_of(ds, default=None):
    """N of an aggregate without an n_samples axis: dataset attrs (n_samples / n_train) or ``default``."""

    if "n_samples" in ds.coords and ds["n_samples"].size == 1:
        return float(np.asarray(ds["n_samples"].values).ravel()[0])
    meta = attr_dict(ds, "dataset")
    for key in ("n_samples", "n_train", "N"):
        if key in meta and meta[key] is not None:
            return float(meta[key])
    return np.nan if default is None else float(default)


def run_status(ds) -> np.ndarray:
    return np.asarray(ds["status"].values).astype(str)


def rates(ds, settings: Mapping[str, Any], var: str = "loss"):
    """Late-window rate of `var` ("loss" measured, "loss_linearised" predicted) per run, as an
    xarray.Dataset over the run axes with rate, ci_low, ci_high, r2 and floor_reached; NaN for
    diverged, missing and (measured) kernel-only runs.  The one place figures and claims get rates.
    ``settings``: complete analysis settings (`tfconv.config.loader.analysis_settings`)."""
    import xarray as xr

    window = settings["rate_window"]
    floor = settings.get("rate_floor", RATE_FLOOR)  # not a config setting: a caller's override of the float floor
    conf = float(settings["confidence"])
    axes = list(ds["status"].dims)
    shape = tuple(ds.sizes[a] for a in axes)
    fields = ("rate", "ci_low", "ci_high", "r2")
    out = {k: np.full(shape, np.nan) for k in fields}
    reached = np.zeros(shape, dtype=bool)
    if var in ds:
        curves = ds[var].transpose(*axes, "epoch").values
        st = np.asarray(ds["status"].transpose(*axes).values).astype(str)
        for idx in np.ndindex(*shape):
            if var == "loss" and st[idx] != STATUS_COMPLETE:
                continue
            if st[idx] == STATUS_MISSING:
                continue
            r = linear_rate(curves[idx], window, floor, diverged=(st[idx] == STATUS_DIVERGED and var == "loss"),
                            confidence=conf)
            for k in fields:
                out[k][idx] = r[k]
            reached[idx] = r["floor_reached"]
    coords = {a: ds[a].values for a in axes}
    data = {k: (axes, v) for k, v in out.items()}
    data["floor_reached"] = (axes, reached)
    return xr.Dataset(data, coords=coords)


def run_table(ds, settings: Optional[Mapping[str, Any]] = None):
    """One row per run: grid coordinates, status, loss_0, final loss, measured and predicted
    late-window rates, K_0 stats, step, kernel and weight change, linearisation gap."""
    import pandas as pd

    settings = analysis_settings(settings)
    ds = complete_axes(ds)
    axes = [a for a in GRID_AXES if a in ds.dims]
    meas, pred = rates(ds, settings), rates(ds, settings, "loss_linearised")
    cols = {
        "loss": ds["loss"].transpose(*axes, "epoch").values,
        "lin": ds["loss_linearised"].transpose(*axes, "epoch").values if "loss_linearised" in ds else None,
    }
    scal = {
        "lambda_min0": epoch0_kernel(ds, "lambda_min"), "lambda_max0": epoch0_kernel(ds, "lambda_max"),
        "kernel_change_max": kernel_change_max(ds), "weight_change_final": final_value(ds, "weight_change"),
        "attention_deviation0": ds["attention_deviation_mean"].isel(epoch=0, drop=True),
        "eta": ds["eta"] if "eta" in ds else _nan_like_runs(ds),
        "step_limit": ds["step_limit"] if "step_limit" in ds else _nan_like_runs(ds),
    }
    scal = {k: v.transpose(*axes).values for k, v in scal.items()}
    status = ds["status"].transpose(*axes).values
    coords = {a: axis_values(ds, a) for a in axes}
    rows = []
    for idx in np.ndindex(*status.shape):
        row = {a: coords[a][i] for a, i in zip(axes, idx)}
        loss = cols["loss"][idx]
        row.update(status=str(status[idx]), loss0=float(loss[0]), loss_final=float(loss[-1]),
                   rate=float(meas["rate"].transpose(*axes).values[idx]),
                   rate_floor_reached=bool(meas["floor_reached"].transpose(*axes).values[idx]),
                   rate_predicted=float(pred["rate"].transpose(*axes).values[idx]),
                   linearisation_gap=linearisation_gap(loss, cols["lin"][idx]) if cols["lin"] is not None else np.nan)
        row.update({k: float(v[idx]) for k, v in scal.items()})
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Sufficient widths and the over-parameterisation exponent
# ---------------------------------------------------------------------------------------------

def run_succeeds(ds, criterion: str, loss_target: float = 1e-3, kernel_stability: float = 0.5):
    """Per run (bool DataArray): complete and loss_E/loss_0 <= target (``loss``) or complete and
    max_t kernel change <= kernel_stability (``kernel``)."""
    complete = ds["status"] == STATUS_COMPLETE
    if criterion == "loss":
        ratio = final_value(ds, "loss") / ds["loss"].isel(epoch=0, drop=True)
        return complete & (ratio <= loss_target)
    if criterion == "kernel":
        return complete & (kernel_change_max(ds) <= kernel_stability)
    raise ValueError(f"criterion must be 'loss' or 'kernel', got {criterion!r}")


def smallest_sufficient_width(ds, criterion: str = "loss", loss_target: float = 1e-3,
                              success_fraction: float = 0.5, kernel_stability: float = 0.5):
    """Per (n_samples, scaling, init): the smallest width whose seeds succeed (`run_succeeds`).

    A width is sufficient when at least ``success_fraction`` of its present (non-missing) seeds
    succeed (0.5: the median seed); diverged seeds count as failures.  Returns a DataFrame with
    n_samples, scaling, init, width_star (NaN when none suffices: ``censored``), n_seeds, success.
    Without an n_samples axis the dataset's N is the single value.
    """
    import pandas as pd

    ds = complete_axes(ds)
    if "n_samples" not in ds.dims:
        ds = ds.expand_dims({"n_samples": [n_samples_of(ds)]})
    ok = run_succeeds(ds, criterion, loss_target, kernel_stability)
    widths = sorted(axis_values(ds, "width"))
    rows = []
    for n in axis_values(ds, "n_samples"):
        for sc in axis_values(ds, "scaling"):
            for ini in axis_values(ds, "init"):
                found, last = None, (0, np.nan)
                for w in widths:
                    sel = dict(n_samples=n, scaling=sc, init=ini, width=w)
                    status = np.asarray(ds["status"].sel(sel).values).astype(str).ravel()
                    present = status != STATUS_MISSING
                    k = int(present.sum())
                    if k == 0:
                        continue
                    frac = float(np.asarray(ok.sel(sel).values).ravel()[present].sum()) / k
                    last = (k, frac)
                    if frac >= success_fraction:
                        found = (w, k, frac)
                        break
                rows.append(dict(n_samples=n, scaling=sc, init=ini,
                                 width_star=float(found[0]) if found else np.nan, censored=found is None,
                                 n_seeds=(found or last)[1] if found else last[0],
                                 success=found[2] if found else last[1]))
    return pd.DataFrame(rows, columns=["n_samples", "scaling", "init", "width_star", "censored", "n_seeds", "success"])


def overparam_exponent(table, confidence: float = 0.95) -> Dict[str, Any]:
    """Fit width* ~ n_samples^slope (log-log) over the uncensored rows of one group of
    `smallest_sufficient_width`; adds n_censored and the span of n_samples in decades."""
    n = np.asarray(table["n_samples"], dtype=float)
    w = np.asarray(table["width_star"], dtype=float)
    fit = dict(fit_loglog(n, w, confidence))
    fit["n_censored"] = int(np.asarray(table["censored"], dtype=bool).sum())
    ok = np.isfinite(w) & (w > 0) & (n > 0)
    fit["decades"] = float(np.log10(n[ok].max() / n[ok].min())) if ok.sum() >= 2 else 0.0
    return fit
