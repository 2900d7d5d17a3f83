"""Drawing helpers shared by the analyses: seed bands, per-run points with log-log fits, rate-ratio
regime maps, readable labels and the wording of findings.

They draw on a `tfconv.figures.canvas.Canvas` (no matplotlib needed) and record the CSV rows of what
they draw.  Conventions (docs/analyses.md):

* seeds are drawn as the mean line with a [min, max] band over the *non-diverged* seeds, over the
  epochs where every one of them has a value; a run that stopped early at the float floor ends there
  (its curve ends with NaN), and the seeds still running go on as thin lines of the same colour;
* diverged runs (status "diverged") are drawn dashed with an ``x`` at their last finite value (or
  as grey ``x`` markers in scatter panels), named in the legend, and left out of every fit;
* missing runs are NaN and simply absent; kernel-only runs (wider than ``train.max_gd_width``) have
  no training, so nothing measured after initialisation is drawn for them;
* fitted slopes are least squares on log-log axes over every non-diverged run, with a t interval at
  the configured ``confidence``; every fitted line has its legend entry ("fit, slope ...");
* an experiment with an n_samples axis is drawn at its largest n_samples in the per-width figures;
* text a reader sees (findings, titles, legends) never prints ``nan`` or a raw config token: a missing
  number is "n/a" or its clause is left out, steps read "step 0.02" / "0.5 x own limit".
"""
from __future__ import annotations

import textwrap
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..figures.canvas import Canvas
from . import stats

SCALING_LABEL = {"inv_sqrt": r"$\tau_0 = d_m^{-1/2}$", "inv": r"$\tau_0 = d_m^{-1}$"}
#: the scalings in plain text (findings)
SCALING_WORDS = {"inv_sqrt": "tau0 = d_m^-1/2", "inv": "tau0 = d_m^-1"}
INIT_LABEL = {"lecun": "LeCun", "he": "He", "ntk": "NTK"}
#: one marker per init and one line style per scaling; one colour per (init, scaling) pair, so that two
#: groups never share colour, marker and line style (used by every figure)
INIT_MARKER = {"lecun": "o", "he": "s", "ntk": "^"}
SCALING_LS = {"inv_sqrt": "-", "inv": "--"}
GROUP_COLOR = {("lecun", "inv_sqrt"): "#1f77b4", ("he", "inv_sqrt"): "#ff7f0e", ("ntk", "inv_sqrt"): "#2ca02c",
               ("lecun", "inv"): "#9467bd", ("he", "inv"): "#8c564b", ("ntk", "inv"): "#d62728"}
#: the two framings of a rate comparison: colour, and the line style of the kernel's prediction
FRAMING_STYLE = {"common": ("#1f77b4", ":"), "own": ("#d62728", "--")}
#: marker sizes (points): per-run points, seed means on them, and series drawn at shared positions
MS_RUN, MS_MEAN = 3.2, 2.0


def scaling_text(sc) -> str:
    return SCALING_LABEL.get(str(sc), rf"$\tau_0 = {sc}$")


def scaling_words(sc) -> str:
    return SCALING_WORDS.get(str(sc), f"tau0 = {sc}")


def init_words(ini) -> str:
    return INIT_LABEL.get(str(ini), str(ini))


def group_text(sc, ini) -> str:
    return f"{INIT_LABEL.get(ini, ini)}, {scaling_text(sc)}"


def group_words(sc, ini) -> str:
    """An init x scaling group in plain text: 'LeCun, tau0 = d_m^-1/2'."""
    return f"{init_words(ini)}, {scaling_words(sc)}"


def group_style(sc, ini, k: int = 0) -> Dict[str, Any]:
    """Colour per (init, scaling), marker by init, line style by scaling: overlapping series stay
    distinguishable."""
    color = GROUP_COLOR.get((str(ini), str(sc)), GROUP_COLORS[k % 10])
    return {"color": color, "marker": INIT_MARKER.get(str(ini), "D"), "ls": SCALING_LS.get(str(sc), "-.")}


def step_words(step, ds=None) -> str:
    """A step setting as a reader reads it: 'step 0.02', '0.5 x own limit', '0.5 x common limit'
    (None: the experiment's one step, from its attributes)."""
    from ..core.linearised import parse_step

    s = step if step is not None else (ds.attrs.get("step") if ds is not None else None)
    try:
        kind, v = parse_step(float(s) if _is_number(s) else s)
    except (TypeError, ValueError):
        return f"step {s}" if s is not None else "its step"
    return {"fixed": f"step {v:g}", "limit": f"{v:g} x own limit"}.get(kind, f"{v:g} x common limit")


def _is_number(s) -> bool:
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def step_text(step, ds=None) -> str:
    """The step setting for a title (mathtext)."""
    return step_words(step, ds).replace(" x ", r" $\times$ ")


def fmt(x, digits: int = 3) -> str:
    """A number for a reader: 3 significant digits, "n/a" when missing (never "nan")."""
    if x is None or not np.isfinite(x):
        return "inf" if x is not None and np.isinf(x) and x > 0 else "n/a"
    return f"{x:.{digits}g}"


def ci(fit: Mapping[str, Any]) -> str:
    """'slope [low, high]', or the slope alone without an interval, or "n/a"."""
    if not np.isfinite(fit["slope"]):
        return "n/a"
    if not (np.isfinite(fit["ci_low"]) and np.isfinite(fit["ci_high"])):
        return fmt(fit["slope"])
    return f"{fmt(fit['slope'])} [{fmt(fit['ci_low'])}, {fmt(fit['ci_high'])}]"


def group_label(**kw) -> str:
    return ", ".join(f"{k}={v}" for k, v in kw.items() if v is not None)


def colors(n: int):
    """n colours along viridis (widths, n_samples: an ordered axis)."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.05 + 0.8 * i / max(1, n - 1)) for i in range(n)]


#: matplotlib's tab10 (groups without an order: init x scaling), spelled out so that no plotting
#: library is imported to compute a figure's numbers.
GROUP_COLORS = ((0.12156862745098039, 0.4666666666666667, 0.7058823529411765),
                (1.0, 0.4980392156862745, 0.054901960784313725),
                (0.17254901960784313, 0.6274509803921569, 0.17254901960784313),
                (0.8392156862745098, 0.15294117647058825, 0.1568627450980392),
                (0.5803921568627451, 0.403921568627451, 0.7411764705882353),
                (0.5490196078431373, 0.33725490196078434, 0.29411764705882354),
                (0.8901960784313725, 0.4666666666666667, 0.7607843137254902),
                (0.4980392156862745, 0.4980392156862745, 0.4980392156862745),
                (0.7372549019607844, 0.7411764705882353, 0.13333333333333333),
                (0.09019607843137255, 0.7450980392156863, 0.8117647058823529))


def values_of_good_runs(sub, *variables) -> np.ndarray:
    """Every value of `variables` in runs that did not diverge (for axis limits a diverged run must not set)."""
    keep = run_status(sub) != stats.STATUS_DIVERGED
    out = []
    for v in variables:
        if v in sub:
            arr = sub[v].transpose(*sub["status"].dims, ...).values
            out.append(arr[keep].ravel())
    return np.concatenate(out) if out else np.array([])


def set_log(ax, which: str, values) -> None:
    """Log scale only when some drawn value is positive (matplotlib warns otherwise)."""
    v = np.asarray(values, dtype=float).ravel()
    pos = v[np.isfinite(v) & (v > 0)]
    if not pos.size:
        return
    if which == "y":
        ax.set_yscale("log")
        if pos.max() > 1e100:  # huge values (a linearised curve above its limit): autoscale would overflow
            log_ylim(ax, pos)
        elif pos.min() >= 1e-3 and pos.max() <= 1e4:  # tick labels 0.02, 0.05, 0.1 rather than 2 x 10^-2
            ax.set(yformat="plain")
        return
    ax.set_xscale("log")
    ticks = np.unique(pos)
    if ticks.size <= 12:  # grid values (widths, n_samples) as plain tick labels, no minor ticks
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])


def log_ylim(ax, values, decades: float = 12) -> None:
    """y limits of a log panel: the positive finite values, at most `decades` below the largest, and
    never beyond 1e300 (a linearised curve above its stability limit overflows: autoscale would fail)."""
    v = np.asarray(values, dtype=float).ravel()
    fin = v[np.isfinite(v) & (v > 0)]
    if fin.size:
        top = min(fin.max(), 1e300)
        ax.set_ylim(max(fin.min(), top * 10.0 ** -decades) / 3, top * 3)


def first_step(ds):
    """(ds at the first value of its step_size axis, that step) -- the step a single-step figure shows;
    (ds, None) when the experiment has one step (no axis)."""
    steps = stats.axis_values(ds, "step_size")
    return (ds.sel(step_size=steps[0]), steps[0]) if steps else (ds, None)


def prepare(ds, largest_n: bool = True):
    """complete_axes plus, when asked, the slice at the largest n_samples; returns (ds, N or None)."""
    ds = stats.complete_axes(ds)
    n = None
    if largest_n and "n_samples" in ds.dims:
        n = max(stats.axis_values(ds, "n_samples"))
        ds = ds.sel(n_samples=n)
    return ds, n


def groups(ds) -> List[tuple]:
    """(scaling, init) pairs in grid order."""
    return [(s, i) for s in stats.axis_values(ds, "scaling") for i in stats.axis_values(ds, "init")]


def default_group(ds) -> tuple:
    return (stats.preferred(stats.axis_values(ds, "scaling"), "inv_sqrt"), stats.preferred(stats.axis_values(ds, "init"), "lecun"))


def run_status(sub) -> np.ndarray:
    return np.asarray(sub["status"].values).astype(str)


def trained(sub) -> bool:
    """Whether `sub` holds a run that trained (complete or diverged; not kernel-only or missing)."""
    st = run_status(sub)
    return bool(((st == stats.STATUS_COMPLETE) | (st == stats.STATUS_DIVERGED)).any())


#: the kernel's prediction (the linearised loss): a wide pale line drawn under the measured curves, which
#: stay visible on it where the two coincide (the kernel regime)
PREDICTED_STYLE = dict(ls="-", lw=2.6, alpha=0.3, zorder=1.5)
PREDICTED_KEY = "wide pale: linearised from $K_0$"


def draw_seed_curves(cv: Canvas, ax, sub, var: str, dim: str, color, label: Optional[str], panel: str,
                     group: Dict[str, Any], ls: str = "-", band: bool = True, marker: Optional[str] = None,
                     stat: str = "mean", lw: Optional[float] = None, role: str = "data", alpha: Optional[float] = None,
                     zorder: Optional[float] = None):
    """Mean line + [min, max] band over the non-diverged seeds of ``var`` (dims seed x dim); diverged
    dashed with an x at their end.

    The mean and band cover the epochs up to the last one where every non-diverged seed has a value
    (runs stop early at the float floor: their curves end with NaN); after it, each seed still running
    is drawn on as a thin line of the same colour.  Returns (x, mean) of the non-diverged mean.
    ``stat`` names the mean in the CSV (e.g. "predicted" for the linearised curve).
    """
    if var not in sub:
        return np.array([]), np.array([])
    da = sub[var].transpose("seed", dim)
    vals = np.asarray(da.values, dtype=float)
    x = np.asarray(sub[dim].values, dtype=float)
    status = run_status(sub).ravel()
    seeds = stats.axis_values(sub, "seed")
    div = status == stats.STATUS_DIVERGED
    good = np.where(div[:, None], np.nan, vals)
    fin_any = np.isfinite(good)
    has = fin_any.any(axis=1)
    last = np.where(has, (fin_any * np.arange(x.size)).max(axis=1), -1)
    common_end = int(last[has].min()) if has.any() else -1
    common = np.arange(x.size) <= common_end
    mean, lo, hi = stats.mean_band(np.where(common[None, :], good, np.nan), axis=0)
    fin = np.isfinite(mean)
    sparse = fin.sum() <= 12 or (fin.sum() < fin.size and not (fin[1:] & fin[:-1]).any())
    mk = marker if marker is not None else ("o" if sparse else None)
    kw = dict(color=color, ls=ls, marker=mk, ms=MS_MEAN + 0.6, markevery=None if x[fin].size <= 12 else max(1, x[fin].size // 8))
    if lw is not None:
        kw["lw"] = lw
    if alpha is not None:
        kw["alpha"] = alpha
    if zorder is not None:
        kw["zorder"] = zorder
    if np.any(fin):
        # drawn only where finite, so that curves recorded every k epochs are lines, not gaps
        ax.plot(x[fin], mean[fin], label=label, role=role, **kw)
        if band and np.sum(has) > 1:
            ax.fill_between(x[fin], lo[fin], hi[fin], color=color, alpha=0.18, lw=0)
            cv.band_drawn = True
    cv.record(panel, var, dim, x[common], mean[common], stat, **group)
    if stat == "mean":
        cv.record(panel, var, dim, x[common], lo[common], "low", **group)
        cv.record(panel, var, dim, x[common], hi[common], "high", **group)
    on = np.nonzero(has & (last > common_end))[0]  # seeds that ran on after another stopped
    if on.size:
        # one thinner line (the mean of the seeds still running) per series, in its style: the seeds' tails
        # would otherwise run over each other, and over another series' tails where two series coincide
        tail = np.arange(x.size) >= common_end
        fin_on = np.isfinite(good[on])
        count = fin_on.sum(axis=0)
        run_on = np.where(fin_on, good[on], 0.0).sum(axis=0) / np.where(count > 0, count, 1)
        run_on[count == 0] = np.nan
        ok = tail & np.isfinite(run_on)
        if ok.sum() >= 1:
            tkw = dict(kw, lw=0.55 * float(lw if lw is not None else 1.0), marker=mk if ok.sum() == 1 or sparse else None,
                       ms=MS_MEAN)
            tkw.pop("markevery", None)
            ax.plot(x[ok], run_on[ok], role=role, **tkw)
        for k in on:
            okk = tail & np.isfinite(good[k])
            if okk.sum() >= 1:
                cv.record(panel, var, dim, x[okk], good[k][okk], "run" if stat == "mean" else stat,
                          **dict(group, seed=seeds[k]))
    for k in np.nonzero(div)[0]:
        v = vals[k]
        fk = np.nonzero(np.isfinite(v))[0]
        if fk.size >= 2:  # dashed, in the series' own width (0.8 of it) and transparency
            dkw = {k: kw[k] for k in ("alpha", "zorder") if k in kw}
            ax.plot(x[fk], v[fk], color=color, ls="--", lw=0.8 * float(lw if lw is not None else 1.0), **dkw)
        if fk.size:
            ax.plot([x[fk[-1]]], [v[fk[-1]]], color=color, marker="x", ms=5, ls="none")
        cv.record(panel, var, dim, x, v, "diverged_run", **dict(group, seed=seeds[k], status=stats.STATUS_DIVERGED))
        cv.diverged_drawn = True
    return x, mean


def draw_runs_fit(cv: Canvas, ax, x, y, status, seeds, color, label: Optional[str], panel: str, quantity: str,
                  x_name: str, group: Dict[str, Any], slope_group: str, confidence: float,
                  fit: bool = True, xs_group: Optional[Sequence] = None, marker: str = "o", ls: str = "-",
                  order: Optional[int] = None):
    """Scatter one point per run (diverged: grey x), the seed-mean line, and a log-log fit over the
    non-diverged runs, drawn dotted with its legend entry ("<label>: fit, slope s").

    x, y, status, seeds: flat arrays with one entry per run.  Missing and kernel-only runs are not drawn
    (callers that have a value for a kernel-only run, e.g. at initialisation, pass it as complete).
    ``order``: the series' place among those drawn on the panel (default: counted per panel): the first
    draws filled points, later ones hollow and smaller, so that series with equal values (LeCun and NTK
    attention at init, say) never hide each other.  Returns the fit dict (NaN when not fitted).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    status = np.asarray(status).astype(str).ravel()
    div = status == stats.STATUS_DIVERGED
    absent = (status == stats.STATUS_MISSING) | (status == stats.STATUS_KERNEL_ONLY)
    ok = ~div & ~absent & np.isfinite(y)
    if order is None:
        order = getattr(ax, "_run_series", 0)
        ax._run_series = order + 1
    ms = max(1.4, MS_RUN - 0.45 * order)
    if ok.any():
        ax.plot(x[ok], y[ok], ls="none", marker=marker, ms=ms, color=color, alpha=0.5 if order == 0 else 0.8,
                mew=0 if order == 0 else 0.7, mfc=None if order == 0 else "none")
    shown = div & np.isfinite(y)  # a diverged run has a value only where it has one (e.g. at init)
    if shown.any():
        ax.plot(x[shown], y[shown], ls="none", marker="x", ms=5, color="grey")
    if div.any():
        cv.diverged_drawn = True
    for xi, yi, st, sd in zip(x, y, status, seeds):
        if st in (stats.STATUS_MISSING, stats.STATUS_KERNEL_ONLY):
            continue
        g = dict(group, seed=sd, status=st)
        g[x_name] = xi if x_name in ("width", "n_samples") else g.get(x_name)
        cv.record(panel, quantity, x_name, xi, yi, "diverged_run" if st == stats.STATUS_DIVERGED else "run", **g)
    # seed-mean line at each x
    ux = np.unique(x[ok & np.isfinite(x)])
    means = np.array([float(np.mean(y[ok & (x == u)])) for u in ux])
    result = stats.fit_loglog(x[ok], y[ok], confidence) if fit else stats._nan_fit()
    if ux.size and np.isfinite(means).any():
        fm = np.isfinite(means)  # a marker only where the mean is a single point (a line shows itself)
        ax.plot(ux[fm], means[fm], color=color, lw=0.9, ls=ls, marker=marker if fm.sum() == 1 else None,
                ms=max(1.2, ms - 1.0))
        if label:  # the legend shows the series' marker and line style together
            key(ax, label, color=color, lw=0.9, ls=ls, marker=marker, ms=ms, mfc=None if order == 0 else "none")
    for u, m in zip(ux, means):
        g = dict(group)
        if x_name in ("width", "n_samples"):
            g[x_name] = u
        cv.record(panel, quantity, x_name, u, m, "mean", **g)
    if fit and np.isfinite(result["slope"]):
        pos = ok & np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        xl = np.unique(x[pos])
        yl = np.exp(result["intercept"]) * xl ** result["slope"]
        ax.plot(xl, yl, color=color, ls=":", lw=1.2, role="fit",
                label=f"{label + ': ' if label else ''}fit, slope {fmt(result['slope'], 2)}")
        cv.record(panel, quantity, x_name, xl, yl, "fit", **group)
        cv.add_slope(f"{quantity} vs {x_name}", slope_group, result)
    return result


def flat(ds, var_da, x_axis: str):
    """Flatten a per-run DataArray (dims include x_axis and seed) to (x, y, status, seed) arrays."""
    dims = [x_axis, "seed"]
    y = np.asarray(var_da.transpose(*dims).values, dtype=float)
    st = np.asarray(ds["status"].transpose(*dims).values).astype(str)
    xv = np.asarray(ds[x_axis].values, dtype=float)
    sv = np.asarray(stats.axis_values(ds, "seed"))
    X = np.repeat(xv[:, None], len(sv), axis=1)
    S = np.repeat(sv[None, :], len(xv), axis=0)
    return X.ravel(), y.ravel(), st.ravel(), S.ravel()


def note_n(n) -> str:
    return f" at n_samples = {n}" if n is not None else ""


def empty(cv: Canvas, message: str) -> str:
    ax = cv.ax(0)
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(message, 50)), ha="center", va="center", axes_coords=True)
    ax.set_xticks([])
    ax.set_yticks([])
    return message


def count_diverged(ds) -> int:
    return int((run_status(ds) == stats.STATUS_DIVERGED).sum())


def diverged_clause(ds) -> str:
    k = count_diverged(ds)
    return f"; {k} run(s) diverged (excluded from fits)" if k else ""


#: the legend entry of a lambda_min whose verdict is "below the precision of K" (`mark_below_precision`)
BELOW_PRECISION_LABEL = "below precision of K (upper bound)"


def upper_bound(value, err):
    """Where a value below the precision of K is drawn: its upper bound max(value, 0) + error."""
    return np.where(np.isfinite(value), np.maximum(value, 0.0), 0.0) + np.where(np.isfinite(err), err, 0.0)


def mark_below_precision(ax, x, upper, color, label: bool = True) -> None:
    """lambda_min values below the precision of K, drawn as open down-triangles at their upper bound
    (`upper_bound`; only where it is positive and finite), with the legend entry `BELOW_PRECISION_LABEL`
    when ``label``.  Every figure that shows a stored lambda_min draws them so (text_assumption, spectrum)."""
    x, upper = np.asarray(x, dtype=float).ravel(), np.asarray(upper, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(upper) & (upper > 0)
    if ok.any():
        ax.plot(x[ok], upper[ok], ls="none", marker="v", ms=6, color=color, mfc="none",
                label=BELOW_PRECISION_LABEL if label else None)


def key(ax, label: str, **style) -> None:
    """A legend entry without data (explains a line style or a marker used by several series)."""
    ax.plot([], [], label=label, role="key", **style)


# ---------------------------------------------------------------------------------------------
# Rates in findings
# ---------------------------------------------------------------------------------------------

def median(values) -> float:
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else np.nan


def rate_words(rec, budget: int, rate_range) -> str:
    """The measured range rate of one width's seeds (a `stats.rates` slice) in words: the median rate,
    or why there is none (kernel only, no seed entered the range within the budget, diverged)."""
    kinds = [str(k) for k in np.asarray(rec["kind"].values).ravel()]
    rates = np.asarray(rec["rate"].values, dtype=float).ravel()
    if all(k == stats.STATUS_KERNEL_ONLY for k in kinds):
        return "kernel only"
    if all(k in ("missing", "invalid") for k in kinds):
        return "no run"
    ok = [r for r, k in zip(rates, kinds) if k in ("measured", "floor") and np.isfinite(r)]
    if ok:
        floor = sum(k == "floor" for k in kinds)
        return f"{fmt(float(np.median(ok)))}" + (f" ({floor} of {len(kinds)} seeds to the float floor)" if floor else "")
    if all(k == "diverged" for k in kinds):
        return "diverged"
    return f"did not reach L/L_0 = {rate_range[0]:g} in {budget} epochs"


def predicted_rate_words(pred, lin) -> str:
    """The kernel's predicted rate of one width: from K_0's modes (`stats.predicted_rates`) when the
    aggregate has them, else from the stored linearised curve (`stats.rates` of loss_linearised)."""
    p = median(pred["rate"].values) if pred is not None else np.nan
    if np.isfinite(p):
        return fmt(p)
    q = median(lin["rate"].values) if lin is not None else np.nan
    return f"{fmt(q)} (from the stored linearised curve)" if np.isfinite(q) else "n/a"


# ---------------------------------------------------------------------------------------------
# Rate ratios across width in every framing (claims 3 and 4): the regime map
# ---------------------------------------------------------------------------------------------

#: how a comparison's outcome reads in a finding
OUTCOME_WORDS = {stats.FASTER: "faster", stats.SLOWER: "slower", stats.NO_DIFFERENCE: "no material difference",
                 stats.UNDECIDED: "undecided"}


def _series_label(ds, source, setting) -> Tuple[str, str, str]:
    """(framing key, legend label, words for the finding) of one series of `stats.comparison_by_width`."""
    from ..core.linearised import parse_step

    if source == stats.PREDICTED:
        c = stats.step_fraction(ds)
        limit = f"{c:g} x {'common' if setting == 'common' else 'own'} limit"
        return setting, f"K$_0$ prediction, {limit}".replace(" x ", r" $\times$ "), f"predicted from K_0 at {limit}"
    s = setting if setting is not None else ds.attrs.get("step")
    try:
        kind = parse_step(float(s) if _is_number(s) else s)[0]
    except (TypeError, ValueError):
        kind = "fixed"
    return ("own" if kind == "limit" else "common"), f"measured, {step_text(setting, ds)}", f"measured at {step_words(setting, ds)}"


def _trend_words(entries) -> str:
    """'1.17 at width 64 -> 0.57 [0.54, 0.61] at width 4096' over the widths with a ratio."""
    pts = [(w, res) for w, res, _ in entries if np.isfinite(res["ratio"])]
    if not pts:
        decided = [(w, res) for w, res, _ in entries if res["outcome"] != stats.UNDECIDED and np.isfinite(res["bound"])]
        if decided:
            w, res = decided[-1]
            return f"{'>=' if res['outcome'] == stats.FASTER else '<='} {fmt(res['bound'])} at width {w} (censored pairs)"
        return "n/a (no seed pair with both rates)"

    def one(w, res):
        band = f" [{fmt(res['ci_low'])}, {fmt(res['ci_high'])}]" if np.isfinite(res["ci_low"]) else ""
        return f"{fmt(res['ratio'])}{band} at width {w}"

    return one(*pts[0]) if len(pts) == 1 else f"{one(*pts[0])} -> {one(*pts[-1])}"


def draw_comparison(cv: Canvas, ax, ds, by_width, a_label: str, b_label: str, panel: str, settings,
                    group: Dict[str, Any]) -> str:
    """Draw a rate ratio A/B against width for every framing of `stats.comparison_by_width` (measured
    points with their interval where trained; the kernel's prediction from K_0 in both framings at
    every width), the band of no material difference (1 +/- min_effect) and 1; returns the finding's
    clause: the trend across width per framing and the verdict at the largest width."""
    m = float(settings["min_effect"])
    widths = np.asarray(stats.axis_values(ds, "width"), dtype=float)
    lo_x, hi_x = widths.min() / 1.25, widths.max() * 1.25
    ax.fill_between([lo_x, hi_x], [1 / (1 + m)] * 2, [1 + m] * 2, color="grey", alpha=0.18, lw=0, role="reference",
                    label=f"no material difference (within {m:.0%})")
    ax.axhline(1.0, color="grey", lw=0.6)
    cv.record(panel, "min_effect_band", "width", [lo_x, hi_x], [1 / (1 + m), 1 + m], "reference", **group)
    markers = iter(["o", "s", "D", "v", "P"])
    parts, drawn, bounds = [], [], []
    for (source, setting), entries in by_width.items():
        fr, label, words = _series_label(ds, source, setting)
        color, pls = FRAMING_STYLE[fr]
        xs = np.asarray([w for w, _, _ in entries], dtype=float)
        r = np.asarray([res["ratio"] for _, res, _ in entries], dtype=float)
        lo = np.asarray([res["ci_low"] for _, res, _ in entries], dtype=float)
        hi = np.asarray([res["ci_high"] for _, res, _ in entries], dtype=float)
        quantity = f"rate_ratio_{source}" + (f"_{setting}" if setting is not None else "")
        fin = np.isfinite(r)
        if source == stats.MEASURED:
            mk = next(markers)
            if fin.any():
                ax.errorbar(xs[fin], r[fin], lo[fin], hi[fin], color=color, marker=mk, ms=3.5, ls="-", lw=0.9,
                            capsize=1.5, elinewidth=0.8, label=label)
            # a pair decided by runs that entered the rate range against runs that did not: a bound
            bound = np.asarray([res["bound"] if not np.isfinite(res["ratio"]) else np.nan for _, res, _ in entries])
            up = np.asarray([res["outcome"] == stats.FASTER for _, res, _ in entries])
            for w, b, u in zip(xs, bound, up):
                if np.isfinite(b):
                    ax.plot([w], [b], color=color, marker=mk, mfc="none", ms=3.5, ls="none")
                    ax.arrow(w, b, "up" if u else "down", color=color)
                    cv.record(panel, quantity, "width", w, b, "censored", **group)
                    bounds.append(float(b))
            if np.isfinite(bound).any() and not fin.any():
                ax.plot([], [], color=color, marker=mk, mfc="none", ls="none", label=label + " (bound)", role="key")
            stat = "mean"
        else:
            if fin.any():
                ax.plot(xs[fin], r[fin], color=color, ls=pls, lw=1.1, marker=".", ms=3, label=label, role="predicted")
            stat = "predicted"
        cv.record(panel, quantity, "width", xs, r, stat, **group)
        cv.record(panel, quantity, "width", xs, lo, "low", **group)
        cv.record(panel, quantity, "width", xs, hi, "high", **group)
        drawn += list(r[fin]) + list(lo[np.isfinite(lo)]) + list(hi[np.isfinite(hi)])
        if entries:
            w, res, _ = entries[-1]
            parts.append(f"{words}: {_trend_words(entries)}; at width {w}: {OUTCOME_WORDS[res['outcome']]}")
        else:
            parts.append(f"{words}: no trained width")
    ax.set(xlabel="width", ylabel=f"rate ratio {a_label} / {b_label}")
    set_log(ax, "x", widths)
    vals = np.asarray(drawn + bounds + [1 / (1 + m), 1 + m], dtype=float)
    set_log(ax, "y", vals)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if bounds:  # room for the arrows of censored ratios (10 points beyond their marker)
        ax.set_ylim(vals.min() / 2.0, vals.max() * 2.0)
    return "; ".join(parts)
