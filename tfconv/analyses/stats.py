"""Numbers read off an experiment's aggregate: fits, rates, ratios, widths; the one definition of each.

Pure numpy/scipy/xarray (no plotting).  Every number that a figure or the claims table prints is
computed here; docs/analyses.md repeats the definitions in words.

* Log-log slope (`fit_loglog`): least squares of log y on log x over *all* points given (every seed
  at every width, not seed means), dropping non-finite or non-positive points; two-sided t interval
  with n - 2 degrees of freedom at level ``confidence``; fewer than 3 points give NaN.
* Range rate (`range_rate`): the mean geometric rate per epoch while L/L_0 falls through
  ``analysis.rate_range`` (default [1e-2, 1e-10]: from the first epoch at or below 1e-2 to the float
  floor or the curve's end), independent of where the budget ends; a run that reaches the floor is
  converged (kind "floor"), one that never enters the range is "short" (undecided, never dropped).
  The same definition on a run's linearised curve (``loss_linearised``) is its *predicted* rate.
* Kernel stability (`kernel_change_max`): max over the checkpoint epochs of |K_t - K_0|_F / |K_0|_F.
* Sufficient width (`smallest_sufficient_width`): per n_samples (per scaling x init), the smallest
  width at which at least ``success_fraction`` of the seeds succeed (0.5: the median seed), where a
  seed succeeds by the ``loss`` criterion (complete, loss_E / loss_0 <= target) or the ``kernel``
  criterion (complete, max kernel change <= ``kernel_stability``; independent of the epoch budget).
* Paired ratio (`paired_ratio`): geometric mean of a/b over seeds, with the t interval of the mean
  log ratio (n - 1 dof).
* Rate comparison (`compare_rates`, over widths and framings `comparison_by_width`): the paired ratio of
  `range_rate` records with censoring and a minimum effect; the claims table (claims 3 and 4) and the
  figures (init_comparison, scaling_comparison) read the same widths and numbers from
  `comparison_by_width`.
* Linearisation gap (`linearisation_gap`): max over epochs of |log10 L_t - log10 L_t^lin| where both
  are above the floor: how many decades the measured curve is from the kernel's prediction.
* Geometric bound (`bound_holds`): L_t <= L_0 (1 - c eta lambda_min(K_0) / N)^(2t) (1 + tol) at every
  epoch where the loss is above the floor.
* Seed band (`mean_band`): the mean over seeds with the [min, max] band.
* Verdict on lambda_min(K_0) (`lambda_min0_verdict`): per run, "resolved" or "below the precision of
  K" (`tfconv.core.spectra.verdict_of`), the one decision the claims and the figures that show
  lambda_min(K_0) respect; "" where the aggregate recorded neither a verdict nor an error.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

from ..config.experiment import AXIS_DEFAULTS, GRID_AXES
from ..config import analysis_settings
from ..core.linearised import FLOAT_FLOOR, geometric_bound, predicted_rate, stable_step_size  # noqa: F401 (re-exported)
from ..core.spectra import BELOW_PRECISION, RESOLVED, verdict_of  # noqa: F401 (re-exported)
from ..core.status import STATUS_COMPLETE, STATUS_DIVERGED, STATUS_KERNEL_ONLY, STATUS_MISSING  # noqa: F401 (re-exported)

#: float32 residuals of O(1) outputs stall near 1e-7, i.e. a loss ratio near 1e-14; rates stop at 1e-10.
RATE_FLOOR = FLOAT_FLOOR


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


def range_rate(loss_curve, rate_range: Sequence[float] = (1e-2, FLOAT_FLOOR), diverged: bool = False) -> Dict[str, Any]:
    """The rate of one loss curve over the range of L/L_0 from ``rate_range[0]`` down to ``rate_range[1]``.

    rate = log(L_t1 / L_t2) / (t2 - t1): the mean geometric rate per epoch between t1, the first epoch
    with L/L_0 <= rate_range[0], and t2, the first later epoch with L/L_0 <= rate_range[1] (the float
    floor) or, when the floor is not reached, the last epoch of the curve.  It depends on the curve's
    shape, not on where the budget ends (unless the budget ends inside the range: ``decades`` says how
    much of the range was covered).  Returns dict(rate, kind, t1, t2, decades, min_ratio, t_enter):

    * kind "measured": the range was entered and t2 > t1 (rate may be <= 0 for a run that stalls or rises);
      "floor" when t2 is a floor hit (the run converged to float precision: never missing);
    * "short": the curve never reached rate_range[0] (or reached it at its last epoch): no rate;
      ``t_enter`` is inf and ``min_ratio`` says how far it got (the budget, or the run, was too slow);
    * "diverged" / "invalid" (non-finite L_0): no rate.
    """
    hi, lo = float(rate_range[0]), float(rate_range[1])
    if not 0.0 < lo < hi <= 1.0:
        raise ValueError(f"rate_range must satisfy 0 < floor < start <= 1, got {tuple(rate_range)}")
    loss = np.asarray(loss_curve, dtype=float).ravel()
    out = dict(rate=np.nan, kind="invalid", t1=-1, t2=-1, decades=0.0, min_ratio=np.nan, t_enter=np.inf)
    if diverged:
        out["kind"] = STATUS_DIVERGED
        return out
    if loss.size == 0 or not (np.isfinite(loss[0]) and loss[0] > 0):
        return out
    fin = np.nonzero(np.isfinite(loss))[0]
    last = int(fin[-1])
    ratio = loss[: last + 1] / loss[0]
    with np.errstate(invalid="ignore"):
        out["min_ratio"] = float(np.nanmin(ratio))
        entered = np.nonzero(ratio <= hi)[0]
    if entered.size == 0:
        out["kind"] = "short"
        return out
    t1 = int(entered[0])
    out["t_enter"] = float(t1)
    with np.errstate(invalid="ignore"):
        hit = np.nonzero(ratio[t1:] <= lo)[0]
    t2 = t1 + int(hit[0]) if hit.size else last
    if t2 <= t1:
        out.update(kind="short", t1=t1)
        return out
    L1, L2 = loss[t1], max(loss[t2], np.finfo(float).tiny)
    out.update(rate=float(np.log(L1 / L2) / (t2 - t1)), kind="floor" if hit.size else "measured", t1=t1, t2=t2,
               decades=float(np.log10(L1 / L2)))
    return out


def tail_trend(loss_curve, fraction: float = 0.2, min_points: int = 10, floor: float = FLOAT_FLOOR,
               confidence: float = 0.95) -> Dict[str, Any]:
    """Whether a run still decreases at the end of its curve: the least-squares rate -d log L / dt over
    the last ``fraction`` of its finite epochs above the floor (at least ``min_points``), with the t
    interval.  dict(rate, ci_low, ci_high, n, start, stop, floor_reached): a curve that reached
    ``floor * L_0`` has converged (floor_reached, no fit needed)."""
    loss = np.asarray(loss_curve, dtype=float).ravel()
    out = dict(rate=np.nan, ci_low=np.nan, ci_high=np.nan, n=0, start=-1, stop=-1, floor_reached=False)
    if loss.size == 0 or not (np.isfinite(loss[0]) and loss[0] > 0):
        return out
    fin = np.nonzero(np.isfinite(loss))[0]
    last = int(fin[-1])
    with np.errstate(invalid="ignore"):
        hit = np.nonzero(loss[: last + 1] <= floor * loss[0])[0]
    if hit.size:
        out["floor_reached"] = True
        return out
    n = max(int(min_points), int(round(fraction * (last + 1))))
    start = max(0, last + 1 - n)
    t = np.arange(start, last + 1, dtype=float)
    fit = fit_linear(t, np.log(loss[start:last + 1]), confidence)
    out.update(rate=-fit["slope"], ci_low=-fit["ci_high"], ci_high=-fit["ci_low"], n=fit["n"], start=start, stop=last)
    return out


def spike(loss_curve, factor: float = 10.0) -> Tuple[int, float]:
    """(epoch, height) of the largest transient jump of the loss above its running minimum (height =
    L_t / min_{s<t} L_s) when it exceeds ``factor``, else (-1, 1.0): the curve never jumps."""
    loss = np.asarray(loss_curve, dtype=float).ravel()
    fin = np.isfinite(loss)
    if fin.sum() < 2:
        return -1, 1.0
    L = loss[: int(np.nonzero(fin)[0][-1]) + 1]
    runmin = np.minimum.accumulate(np.where(np.isfinite(L), L, np.inf))
    with np.errstate(invalid="ignore", divide="ignore"):
        h = L[1:] / runmin[:-1]
    if not np.isfinite(h).any() or not np.nanmax(h) > factor:
        return -1, 1.0
    k = int(np.nanargmax(h))
    return k + 1, float(h[k])


def predicted_range_rate(eigenvalues, projection, step_size: float, n_samples: float, loss: str = "mean",
                         rate_range: Sequence[float] = (1e-2, FLOAT_FLOOR)) -> Dict[str, Any]:
    """`range_rate` of the linearised loss computed from K_0's modes (any number of epochs: it does not
    depend on a budget), with the slowest mode's rate and how many epochs the range needs.
    dict(rate, t1, t2, slowest, lambda_share = rate / slowest)."""
    from ..core.linearised import epochs_to_level, mode_loss, slowest_mode_rate

    out = dict(rate=np.nan, t1=np.nan, t2=np.nan, slowest=np.nan, lambda_share=np.nan)
    lam = np.asarray(eigenvalues, dtype=float)
    if not (np.isfinite(step_size) and np.isfinite(lam).any()):
        return out
    out["slowest"] = slowest_mode_rate(eigenvalues, projection, step_size, n_samples, loss)
    t1 = epochs_to_level(eigenvalues, projection, step_size, n_samples, loss, rate_range[0])
    t2 = epochs_to_level(eigenvalues, projection, step_size, n_samples, loss, rate_range[1])
    out.update(t1=t1, t2=t2)
    if not (np.isfinite(t1) and np.isfinite(t2)) or t2 <= t1:
        return out
    L1, L2 = mode_loss(eigenvalues, projection, step_size, n_samples, loss, np.asarray([t1, t2]))
    out["rate"] = float(np.log(L1 / L2) / (t2 - t1))
    if np.isfinite(out["slowest"]) and out["slowest"] > 0:
        out["lambda_share"] = out["rate"] / out["slowest"]
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


def bound_holds(loss_curve, bound_curve, tolerance: float = 1e-3, floor: float = RATE_FLOOR,
                diverged: bool = False) -> Tuple[bool, int]:
    """(holds, first violating epoch or -1): L_t <= bound_t (1 + tolerance) at every epoch where the
    loss is above ``floor * L_0``.  A diverged run's non-finite loss violates it; the NaN records after a
    run stopped at the float floor do not (they are below the floor)."""
    L = np.asarray(loss_curve, dtype=float)
    B = np.asarray(bound_curve, dtype=float)
    if not np.isfinite(L[0]):
        return False, 0
    if not diverged:
        last = int(np.nonzero(np.isfinite(L))[0][-1])
        L, B = L[: last + 1], B[: last + 1]
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


#: The outcomes of `compare_rates`: A materially faster / slower than B, no material difference, or
#: not decidable on these runs.
FASTER, SLOWER, NO_DIFFERENCE, UNDECIDED = "faster", "slower", "no material difference", "undecided"

_ENTERED = ("measured", "floor")


def pair_outcome(a: Mapping[str, Any], b: Mapping[str, Any]) -> Tuple[str, float]:
    """How one seed pair compares two runs' `range_rate` records (with ``budget``: the epochs each had).

    ("value", log(rate_a / rate_b)) when both entered the range with a positive rate;
    ("a", log bound) when only A entered it (B did not within its budget, diverged or stalls): A is
    faster, and A entered the range at least budget_b / t_enter_a times earlier, so the log of that is
    a lower bound on the effect; ("b", log bound) the mirror case; ("undecided", nan) when neither
    entered it; ("excluded", nan) when a run is missing or kernel-only."""
    ka, kb = str(a["kind"]), str(b["kind"])
    if ka in (STATUS_MISSING, STATUS_KERNEL_ONLY, "invalid") or kb in (STATUS_MISSING, STATUS_KERNEL_ONLY, "invalid"):
        return "excluded", np.nan
    ea = ka in _ENTERED and float(a["rate"]) > 0
    eb = kb in _ENTERED and float(b["rate"]) > 0
    if ea and eb:
        return "value", float(np.log(float(a["rate"]) / float(b["rate"])))
    if ea and not eb:
        return "a", float(np.log(max(float(b.get("budget", np.nan)), 1.0) / max(float(a["t_enter"]), 1.0)))
    if eb and not ea:
        return "b", float(np.log(max(float(a.get("budget", np.nan)), 1.0) / max(float(b["t_enter"]), 1.0)))
    return "undecided", np.nan


def compare_rates(pairs: Sequence[Tuple[Mapping[str, Any], Mapping[str, Any]]], confidence: float,
                  min_effect: float) -> Dict[str, Any]:
    """Whether A is materially faster than B over seed pairs of `range_rate` records.

    The effect is the paired rate ratio (geometric mean over seeds, t interval of the mean log ratio);
    a difference smaller than ``min_effect`` (relative) is no material difference.  Outcomes:
    FASTER when the interval lies above 1 + min_effect; SLOWER when it lies below 1 / (1 + min_effect);
    NO_DIFFERENCE when it lies inside [1 / (1 + min_effect), 1 + min_effect]; UNDECIDED otherwise.
    Pairs where only one run entered the range (`pair_outcome`) are decided by that (their bound on the
    effect must exceed the margin) and must agree with the interval; with fewer than 2 pairs with
    values, an outcome needs every decidable pair (>= 2) to agree.  Nothing is dropped silently: the
    counts (n_values, n_a, n_b, n_undecided, n_excluded) say what each pair contributed."""
    m = float(np.log1p(min_effect))
    kinds = [pair_outcome(a, b) for a, b in pairs]
    vals = np.array([v for k, v in kinds if k == "value"])
    a_b = [v for k, v in kinds if k == "a"]
    b_b = [v for k, v in kinds if k == "b"]
    out = dict(ratio=np.nan, ci_low=np.nan, ci_high=np.nan, n_values=int(vals.size), n_a=len(a_b), n_b=len(b_b),
               n_undecided=sum(k == "undecided" for k, _ in kinds), n_excluded=sum(k == "excluded" for k, _ in kinds),
               outcome=UNDECIDED, note="", bound=np.nan)
    if vals.size:
        out["ratio"] = float(np.exp(vals.mean()))
    if vals.size >= 2:
        half = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, vals.size - 1)) * float(vals.std(ddof=1)) / math.sqrt(vals.size)
        lo, hi = vals.mean() - half, vals.mean() + half
        out.update(ci_low=float(np.exp(lo)), ci_high=float(np.exp(hi)))
        if lo > m:
            out["outcome"] = FASTER
        elif hi < -m:
            out["outcome"] = SLOWER
        elif lo >= -m and hi <= m:
            out["outcome"] = NO_DIFFERENCE
        else:
            out["note"] = "the interval reaches across the margin"
        conflict = (out["outcome"] in (SLOWER, NO_DIFFERENCE) and any(v > m for v in a_b)) or \
                   (out["outcome"] in (FASTER, NO_DIFFERENCE) and any(v > m for v in b_b))
        if conflict:
            out.update(outcome=UNDECIDED, note="pairs where only one run entered the range disagree with the interval")
        return out
    decidable = vals.size + len(a_b) + len(b_b)
    if decidable < 2:
        out["note"] = f"{decidable} decidable seed pair(s) (2 needed)"
        return out
    if all(v > m for v in vals) and all(v > m for v in a_b) and not b_b:
        out["outcome"] = FASTER
    elif all(v < -m for v in vals) and all(v > m for v in b_b) and not a_b:
        out["outcome"] = SLOWER
    else:
        out["note"] = "the decidable pairs do not agree beyond the margin"
    if out["outcome"] != UNDECIDED:
        out["note"] = "decided by runs that entered the range against runs that did not"
        logs = list(vals) + (a_b if out["outcome"] == FASTER else [-v for v in b_b])
        out["bound"] = float(np.exp(min(logs))) if out["outcome"] == FASTER else float(np.exp(max(logs)))
    return out


#: The sources of a rate comparison: the measured rates of trained runs, or the kernel's prediction
#: from K_0's modes (budget-free, every width, kernel-only ones included).
MEASURED, PREDICTED = "measured", "predicted"
#: The framings of the kernel's prediction: every setting compared at c times the smallest stability
#: limit among them ("common"), or each at c times its own limit ("own"); `framing_steps`.
PREDICTED_FRAMINGS = ("common", "own")


def _rate_records(rs, **sel) -> List[Dict[str, Any]]:
    """`rates` records (one per seed) of one setting at one width, as `compare_rates` reads them."""
    s = rs.sel(**sel)
    return [dict(kind=str(k), rate=float(r), t_enter=float(t), budget=float(b))
            for k, r, t, b in zip(np.atleast_1d(s["kind"].values), np.atleast_1d(s["rate"].values),
                                  np.atleast_1d(s["t_enter"].values), np.atleast_1d(s["budget"].values))]


def _predicted_records(ps, **sel) -> List[Dict[str, Any]]:
    """`predicted_rates` records (one per seed) as `compare_rates` reads them (no budget: any epoch)."""
    s = ps.sel(**sel)
    return [dict(kind="measured" if np.isfinite(r) else ("short" if np.isfinite(t) or np.isinf(t) else "invalid"),
                 rate=float(r), t_enter=float(t) if np.isfinite(t) else np.inf, budget=1e12)
            for r, t in zip(np.atleast_1d(s["rate"].values), np.atleast_1d(s["t1"].values))]


def trained_widths(ds, axis: str, settings_compared: Sequence) -> list:
    """The widths of `ds` where some run of the settings compared (values of `axis`) is not kernel-only."""
    return [w for w in axis_values(ds, "width")
            if any((run_status(ds.sel({axis: v, "width": w})) != STATUS_KERNEL_ONLY).any() for v in settings_compared)]


def comparison_by_width(ds, axis: str, a, b, settings: Mapping[str, Any]) -> Dict[Tuple[str, Any], List[Tuple[Any, Dict[str, Any], str]]]:
    """Setting `a` against `b` along `axis` ("init" or "scaling"): `compare_rates` of rate(a) / rate(b),
    paired by seed, at every width, in every framing the experiment shows.  The one source of the
    claims table's claims 3 and 4 and of the figures init_comparison and scaling_comparison (same
    widths, same numbers).

    ds: one slice (one n_samples; the axes other than `axis`, width, seed and step_size fixed), with the
    axes of `complete_axes`.  Returns an ordered dict:

    * (MEASURED, step) for each step setting of the grid (None when the experiment has one step and no
      step_size axis): the measured `rates` at every trained width (`trained_widths`; [] when none);
    * (PREDICTED, "common") and (PREDICTED, "own"): `predicted_rates` from K_0's modes at the step of
      that framing (`framing_steps` with c = `step_fraction`), computed on the first step setting's runs
      (K_0 does not depend on the step), at every width, kernel-only widths included; absent when the
      aggregate has no modes (k0_eigenvalues, k0_projection).

    Each value is a list of (width, `compare_rates` result, source), widths ascending; the last entry is
    the largest width, where the claims table takes its verdict."""
    conf, m = float(settings["confidence"]), float(settings["min_effect"])
    steps = axis_values(ds, "step_size") or [None]
    out: Dict[Tuple[str, Any], List[Tuple[Any, Dict[str, Any], str]]] = {}
    for step in steps:
        sub = ds if step is None else ds.sel(step_size=step)
        rs = rates(sub, settings)
        out[(MEASURED, step)] = [
            (w, compare_rates(list(zip(_rate_records(rs, **{axis: a, "width": w}),
                                       _rate_records(rs, **{axis: b, "width": w}))), conf, m), MEASURED)
            for w in trained_widths(sub, axis, (a, b))]
    base = ds if steps[0] is None else ds.sel(step_size=steps[0])
    if "k0_eigenvalues" not in base or "k0_projection" not in base:
        return out
    c = step_fraction(ds)
    for framing in PREDICTED_FRAMINGS:
        ps = predicted_rates(base, settings, framing_steps(base, framing, axis, c))
        out[(PREDICTED, framing)] = [
            (w, compare_rates(list(zip(_predicted_records(ps, **{axis: a, "width": w}),
                                       _predicted_records(ps, **{axis: b, "width": w}))), conf, m), PREDICTED)
            for w in axis_values(base, "width")]
    return out


def exponent_brackets(n_samples, lower, upper, slack: float = 1.0) -> Dict[str, Any]:
    """The exponents b of every power law width = e^a N^b that passes through each N's bracket
    lower < width <= upper (a ladder brackets the smallest sufficient width between the previous rung and
    the one found; lower = 0 when the first rung already suffices, upper = inf when none does: censored
    N are bounds, not dropped).  Linear programs on log axes give [b_min, b_max]; ``slope`` is the
    least-squares slope through the geometric midpoints of the finite brackets.  ``feasible`` is False
    when no single power law passes through every bracket; ``slack`` >= 1 widens every bracket by that
    factor on both sides (one rung of the ladder absorbs the seed-to-seed jitter of a discrete ladder)."""
    from scipy.optimize import linprog

    x = np.log(np.asarray(n_samples, dtype=float))
    lo = np.asarray(lower, dtype=float)
    hi = np.asarray(upper, dtype=float)
    out = dict(slope=np.nan, b_min=np.nan, b_max=np.nan, feasible=False, n=int(x.size), slack=float(slack),
               n_low=int((lo <= 0).sum()), n_high=int(np.isinf(hi).sum()),
               decades=float((x.max() - x.min()) / np.log(10)) if x.size else 0.0)
    both = (lo > 0) & np.isfinite(hi)
    if both.sum() >= 2:
        out["slope"] = fit_linear(x[both], 0.5 * (np.log(lo[both]) + np.log(hi[both])))["slope"]
    A_ub, b_ub = [], []
    for xi, l, h in zip(x, lo, hi):
        if np.isfinite(h):  # a + b x <= log h
            A_ub.append([1.0, xi])
            b_ub.append(np.log(h * slack))
        if l > 0:  # a + b x >= log l  (ladder rungs are discrete: >= is the closure of >)
            A_ub.append([-1.0, -xi])
            b_ub.append(-np.log(l / slack))
    if not A_ub:
        return out
    res = []
    for sign in (1.0, -1.0):
        r = linprog([0.0, sign], A_ub=np.asarray(A_ub), b_ub=np.asarray(b_ub), bounds=[(None, None), (-50, 50)],
                    method="highs")
        res.append(r)
    if not all(r.status == 0 for r in res):
        out["feasible"] = not any(r.status == 2 for r in res)
        return out
    out.update(b_min=float(res[0].x[1]), b_max=float(res[1].x[1]), feasible=True)
    return out


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


def lambda_min0_verdict(ds):
    """The verdict on lambda_min(K_0) per run (a str DataArray over the run axes): the stored one
    (``lambda_min_verdict`` at checkpoint epoch 0: the Gram's, else the run summary's
    ``lambda_min0_verdict``); where none is stored but an error is (``lambda_min_error``),
    `verdict_of(value, error)`; "" where neither was recorded (an aggregate from before the error
    estimates: such runs are scored as before).  The one place that decides whether a run's
    lambda_min(K_0) is "resolved" or "below the precision of K"."""
    value = np.asarray(epoch0_kernel(ds, "lambda_min").values, dtype=float)
    stored = (np.asarray(epoch0_kernel(ds, "lambda_min_verdict").values).astype(str)
              if "lambda_min_verdict" in ds else np.full(value.shape, "", dtype=object).astype(str))
    stored = np.where(np.isin(stored, (RESOLVED, BELOW_PRECISION)), stored, "")  # "" and NaN: not recorded
    err = np.asarray(epoch0_kernel(ds, "lambda_min_error").values, dtype=float)
    recomputed = np.vectorize(verdict_of, otypes=[object])(value, err) if value.size else np.zeros(value.shape, object)
    out = np.where(stored != "", stored, np.where(np.isfinite(err), recomputed, ""))
    return _nan_like_runs(ds).copy(data=np.asarray(out, dtype=object).astype(str))


def below_precision(ds) -> np.ndarray:
    """Per run (bool array over the run axes, in `ds`'s order): is lambda_min(K_0) below the precision
    of K (`lambda_min0_verdict`)?  Such a run is left out, with a word, of whatever rests on lambda_min(K_0)."""
    return np.asarray(lambda_min0_verdict(ds).values).astype(str) == BELOW_PRECISION


def final_value(ds, var: str, dim: str = "epoch"):
    """``var`` at the last finite entry of ``dim`` per run: the budget's end, or the epoch a run stopped
    at the float floor (NaN for diverged and missing runs, and where ``var`` was never recorded)."""
    if var not in ds or ds.sizes.get(dim, 0) == 0:
        return _nan_like_runs(ds)
    v = ds[var]
    ok = np.isfinite(v)
    n = ds.sizes[dim]
    idx = (ok * np.arange(n)).max(dim)  # the last finite index (0 when none)
    last = v.isel({dim: idx.astype(int)}, drop=True)
    out = last.where(ok.any(dim))
    if "status" in ds:
        out = out.where(ds["status"] != STATUS_DIVERGED)
    return out


def kernel_change_max(ds):
    """max over the checkpoint epochs after 0 of |K_t - K_0|_F / |K_0|_F per run (NaN when never
    measured after initialisation: kernel-only runs, or only K_0 stored)."""
    if "kernel_change" not in ds or ds.sizes.get("checkpoint_epoch", 0) == 0:
        return _nan_like_runs(ds)
    kc = ds["kernel_change"].where(ds["checkpoint_epoch"] > 0)
    return kc.where(np.isfinite(kc)).max("checkpoint_epoch", skipna=True)


def final_kernel_change(ds):
    """|K_t - K_0|_F / |K_0|_F at the last checkpoint after 0 where it was measured, per run (a run
    stopped at the float floor keeps its parameters at the stop, so its later checkpoints hold them)."""
    if "kernel_change" not in ds or ds.sizes.get("checkpoint_epoch", 0) == 0:
        return _nan_like_runs(ds)
    kc = ds["kernel_change"].where(ds["checkpoint_epoch"] > 0)
    ok = np.isfinite(kc)
    idx = (ok * np.arange(ds.sizes["checkpoint_epoch"])).max("checkpoint_epoch")
    out = kc.isel(checkpoint_epoch=idx.astype(int), drop=True).where(ok.any("checkpoint_epoch"))
    return out.where(ds["status"] != STATUS_DIVERGED) if "status" in ds else out


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


def budget_epochs(ds) -> int:
    """The epoch budget of an experiment's runs (the last epoch of its curves)."""
    return int(ds.sizes.get("epoch", 1)) - 1


def rates(ds, settings: Mapping[str, Any], var: str = "loss"):
    """`range_rate` of `var` ("loss" measured, "loss_linearised" the stored linearised curve) per run,
    as an xarray.Dataset over the run axes: rate, kind (measured / floor / short / diverged / missing /
    kernel_only), t_enter (first epoch at or below rate_range[0]; inf when never), decades and budget.
    The one place figures and claims get measured rates; `predicted_rates` gives the budget-free
    linearised ones from K_0's modes."""
    import xarray as xr

    rr = tuple(settings["rate_range"])
    axes = list(ds["status"].dims)
    shape = tuple(ds.sizes[a] for a in axes)
    out = {k: np.full(shape, np.nan) for k in ("rate", "t_enter", "decades")}
    kind = np.full(shape, STATUS_MISSING, dtype=object)
    E = budget_epochs(ds)
    st = np.asarray(ds["status"].transpose(*axes).values).astype(str)
    curves = ds[var].transpose(*axes, "epoch").values if var in ds else None
    for idx in np.ndindex(*shape):
        if st[idx] == STATUS_MISSING:
            continue
        if st[idx] == STATUS_KERNEL_ONLY and var == "loss":
            kind[idx] = STATUS_KERNEL_ONLY
            continue
        if curves is None:
            continue
        r = range_rate(curves[idx], rr, diverged=(st[idx] == STATUS_DIVERGED and var == "loss"))
        kind[idx] = r["kind"]
        out["rate"][idx], out["t_enter"][idx], out["decades"][idx] = r["rate"], r["t_enter"], r["decades"]
    coords = {a: ds[a].values for a in axes}
    data = {k: (axes, v) for k, v in out.items()}
    data["kind"] = (axes, kind.astype(str))
    data["budget"] = (axes, np.full(shape, float(E)))
    return xr.Dataset(data, coords=coords)


def step_fraction(ds, default: float = 0.5) -> float:
    """The fraction c of the stability limit the experiment's "<c>limit" / "<c>common" steps use (the
    first such setting), else `default`: the c both framings of a comparison are computed at."""
    from ..core.linearised import parse_step

    for v in axis_values(ds, "step_size") or [ds.attrs.get("step")]:
        try:
            kind, c = parse_step(v)
        except (ValueError, TypeError):
            continue
        if kind in ("limit", "common"):
            return float(c)
    return float(default)


def framing_steps(ds, framing: str, over: str, c: float):
    """Each run's step eta under a framing of a comparison across the axis `over` (scaling or init):
    "own": c x its own stability limit; "common": c x the smallest limit over `over` at the same width,
    seed and n_samples (one step for every setting compared: the slowest setting's stable step sets it);
    "run": the step the run trained with."""
    if framing == "run":
        return ds["eta"]
    limit = ds["step_limit"]
    if framing == "own":
        return c * limit
    if framing == "common":
        return c * limit.min(over, skipna=True)
    raise ValueError(f"framing must be 'own', 'common' or 'run', got {framing!r}")


def predicted_rates(ds, settings: Mapping[str, Any], eta=None):
    """`predicted_range_rate` per run from K_0's modes (aggregate variables k0_eigenvalues and
    k0_projection over the dim `mode`) at step `eta` (a DataArray over the run axes; default each run's
    own eta): rate, t1, t2 (epochs the linearised model needs to enter and to cross the range), slowest
    (the slowest mode's rate: lambda_min's) and lambda_share = rate / slowest.  Without modes in the
    aggregate every value is NaN (older stores): callers say so."""
    import xarray as xr

    rr = tuple(settings["rate_range"])
    axes = list(ds["status"].dims)
    shape = tuple(ds.sizes[a] for a in axes)
    fields = ("rate", "t1", "t2", "slowest", "lambda_share")
    out = {k: np.full(shape, np.nan) for k in fields}
    if "k0_eigenvalues" in ds and "k0_projection" in ds:
        eta = ds["eta"] if eta is None else eta
        lam = ds["k0_eigenvalues"].transpose(*axes, "mode").values
        proj = ds["k0_projection"].transpose(*axes, "mode").values
        etas = (eta.broadcast_like(ds["status"]).transpose(*axes).values if hasattr(eta, "dims")
                else np.full(shape, float(eta)))
        loss_kind = str(ds.attrs.get("loss", "mean"))
        st = np.asarray(ds["status"].transpose(*axes).values).astype(str)
        Ns = _n_per_run(ds, axes)
        for idx in np.ndindex(*shape):
            if st[idx] == STATUS_MISSING or not np.isfinite(etas[idx]):
                continue
            r = predicted_range_rate(lam[idx], proj[idx], float(etas[idx]), float(Ns[idx]), loss_kind, rr)
            for k in fields:
                out[k][idx] = r[k]
    return xr.Dataset({k: (axes, v) for k, v in out.items()}, coords={a: ds[a].values for a in axes})


def _n_per_run(ds, axes) -> np.ndarray:
    shape = tuple(ds.sizes[a] for a in axes)
    if "n_samples" in axes:
        n = np.asarray(ds["n_samples"].values, dtype=float)
        return np.broadcast_to(n.reshape([-1 if a == "n_samples" else 1 for a in axes]), shape)
    return np.full(shape, n_samples_of(ds))


def run_table(ds, settings: Optional[Mapping[str, Any]] = None):
    """One row per run: grid coordinates, status, loss_0, final loss, the measured rate (`rates`) with its
    kind, the kernel's predicted rate from K_0's modes (`predicted_rates`; NaN without modes), K_0 stats,
    step, kernel and weight change, linearisation gap."""
    import pandas as pd

    settings = analysis_settings(settings)
    ds = complete_axes(ds)
    axes = [a for a in GRID_AXES if a in ds.dims]
    meas, pred = rates(ds, settings), predicted_rates(ds, settings)
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
    m_rate, m_kind = meas["rate"].transpose(*axes).values, meas["kind"].transpose(*axes).values
    p_rate = pred["rate"].transpose(*axes).values
    rows = []
    for idx in np.ndindex(*status.shape):
        row = {a: coords[a][i] for a, i in zip(axes, idx)}
        loss = cols["loss"][idx]
        fin = loss[np.isfinite(loss)]
        row.update(status=str(status[idx]), loss0=float(loss[0]), loss_final=float(fin[-1]) if fin.size else np.nan,
                   rate=float(m_rate[idx]), rate_kind=str(m_kind[idx]), rate_predicted=float(p_rate[idx]),
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
