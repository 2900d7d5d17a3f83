"""Drawing helpers shared by the analyses: seed bands, per-run points with log-log fits, formatting.

They draw on a `tfconv.figures.canvas.Canvas` (no matplotlib needed) and record the CSV rows of what
they draw.  Conventions (docs/analyses.md):

* seeds are drawn as the mean line with a [min, max] band over the *non-diverged* seeds;
* diverged runs (status "diverged") are drawn dashed with an ``x`` at their last finite value (or
  as grey ``x`` markers in scatter panels), named in the legend, and left out of every fit;
* missing runs are NaN and simply absent;
* fitted slopes are least squares on log-log axes over every non-diverged run, with a t interval at
  the configured ``confidence``;
* an experiment with an n_samples axis is drawn at its largest n_samples in the per-width figures.
"""
from __future__ import annotations

import textwrap
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..figures.canvas import Canvas
from . import stats

SCALING_LABEL = {"inv_sqrt": r"$\tau_0 = d_m^{-1/2}$", "inv": r"$\tau_0 = d_m^{-1}$"}
INIT_LABEL = {"lecun": "LeCun", "he": "He", "ntk": "NTK"}
#: one style per init (colour, marker) and per scaling (line style), used by every figure
INIT_STYLE = {"lecun": ("#1f77b4", "o"), "he": ("#ff7f0e", "s"), "ntk": ("#2ca02c", "^")}
SCALING_LS = {"inv_sqrt": "-", "inv": "--"}


def scaling_text(sc) -> str:
    return SCALING_LABEL.get(str(sc), rf"$\tau_0 = {sc}$")


def group_text(sc, ini) -> str:
    return f"{INIT_LABEL.get(ini, ini)}, {scaling_text(sc)}"


def group_style(sc, ini, k: int = 0) -> Dict[str, Any]:
    """Colour and marker by init, line style by scaling: overlapping series stay distinguishable."""
    color, marker = INIT_STYLE.get(ini, (GROUP_COLORS[k % 10], "D"))
    return {"color": color, "marker": marker, "ls": SCALING_LS.get(str(sc), "-.")}


def step_text(step) -> str:
    from ..core.linearised import parse_step

    kind, v = parse_step(step)
    return rf"$\eta = {v:g}$" if kind == "fixed" else rf"$\eta = {v:g} \times 2N/\lambda_{{\max}}(K_0)$"


def fmt(x, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "nan"
    return f"{x:.{digits}g}"


def ci(fit: Mapping[str, Any]) -> str:
    return f"{fmt(fit['slope'])} [{fmt(fit['ci_low'])}, {fmt(fit['ci_high'])}]"


def group_label(**kw) -> str:
    return ", ".join(f"{k}={v}" for k, v in kw.items() if v is not None)


def colors(n: int):
    """n colours along viridis (widths, n_samples: an ordered axis)."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.1 + 0.8 * i / max(1, n - 1)) for i in range(n)]


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


def draw_seed_curves(cv: Canvas, ax, sub, var: str, dim: str, color, label: str, panel: str, group: Dict[str, Any],
                      ls: str = "-", band: bool = True, marker: Optional[str] = None, stat: str = "mean"):
    """Mean line + [min, max] band over non-diverged seeds of ``var`` (dims seed x dim); diverged dashed.

    Returns (x, mean) of the non-diverged mean.  ``stat`` names the mean in the CSV (e.g. "predicted"
    for the linearised curve).
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
    mean, lo, hi = stats.mean_band(good, axis=0)
    fin = np.isfinite(mean)
    sparse = fin.sum() <= 12 or (fin.sum() < fin.size and not (fin[1:] & fin[:-1]).any())
    mk = marker if marker is not None else ("o" if sparse else None)
    if np.any(fin):
        # drawn only where finite, so that curves recorded every k epochs are lines, not gaps
        ax.plot(x[fin], mean[fin], color=color, ls=ls, label=label, marker=mk, ms=3,
                markevery=None if x[fin].size <= 12 else max(1, x[fin].size // 8))
        if band and np.sum(~div & (status != stats.STATUS_MISSING)) > 1:
            ax.fill_between(x[fin], lo[fin], hi[fin], color=color, alpha=0.18, lw=0)
            cv.band_drawn = True
    cv.record(panel, var, dim, x, mean, stat, **group)
    if stat == "mean":
        cv.record(panel, var, dim, x, lo, "low", **group)
        cv.record(panel, var, dim, x, hi, "high", **group)
    for k in np.nonzero(div)[0]:
        v = vals[k]
        fin = np.nonzero(np.isfinite(v))[0]
        if fin.size >= 2:
            ax.plot(x[fin], v[fin], color=color, ls="--", lw=1)
        if fin.size:
            ax.plot([x[fin[-1]]], [v[fin[-1]]], color=color, marker="x", ms=7, ls="none")
        cv.record(panel, var, dim, x, v, "diverged_run", **dict(group, seed=seeds[k], status=stats.STATUS_DIVERGED))
        cv.diverged_drawn = True
    return x, mean


def draw_runs_fit(cv: Canvas, ax, x, y, status, seeds, color, label: str, panel: str, quantity: str,
                   x_name: str, group: Dict[str, Any], slope_group: str, confidence: float,
                   fit: bool = True, xs_group: Optional[Sequence] = None, marker: str = "o", ls: str = "-"):
    """Scatter one point per run (diverged: grey x), the seed-mean line, and a log-log fit over non-diverged runs.

    x, y, status, seeds: flat arrays with one entry per run.  Returns the fit dict (NaN when not fitted).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    status = np.asarray(status).astype(str).ravel()
    div = status == stats.STATUS_DIVERGED
    ok = ~div & (status != stats.STATUS_MISSING) & np.isfinite(y)
    if ok.any():
        ax.plot(x[ok], y[ok], ls="none", marker=marker, ms=4, color=color, alpha=0.6)
    shown = div & np.isfinite(y)  # a diverged run has a value only where it has one (e.g. at init)
    if shown.any():
        ax.plot(x[shown], y[shown], ls="none", marker="x", ms=7, color="grey")
    if div.any():
        cv.diverged_drawn = True
    for xi, yi, st, sd in zip(x, y, status, seeds):
        if st == stats.STATUS_MISSING:
            continue
        g = dict(group, seed=sd, status=st)
        g[x_name] = xi if x_name in ("width", "n_samples") else g.get(x_name)
        cv.record(panel, quantity, x_name, xi, yi, "diverged_run" if st == stats.STATUS_DIVERGED else "run", **g)
    # seed-mean line at each x
    ux = np.unique(x[ok & np.isfinite(x)])
    means = np.array([np.nanmean(np.where(np.isfinite(y[ok & (x == u)]), y[ok & (x == u)], np.nan))
                      if np.any(np.isfinite(y[ok & (x == u)])) else np.nan for u in ux])
    result = stats.fit_loglog(x[ok], y[ok], confidence) if fit else stats._nan_fit()
    lab = label  # the fitted slope and its interval go to the finding and the slopes table, not the legend
    if ux.size and np.isfinite(means).any():
        fm = np.isfinite(means)
        ax.plot(ux[fm], means[fm], color=color, lw=1, ls=ls, marker=marker, ms=3, label=lab)
    for u, m in zip(ux, means):
        g = dict(group)
        if x_name in ("width", "n_samples"):
            g[x_name] = u
        cv.record(panel, quantity, x_name, u, m, "mean", **g)
    if fit and np.isfinite(result["slope"]):
        pos = ok & np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        xl = np.unique(x[pos])
        yl = np.exp(result["intercept"]) * xl ** result["slope"]
        ax.plot(xl, yl, color=color, ls=":", lw=1.5)
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


# ---------------------------------------------------------------------------------------------
# The figures
