"""One figure per analysis (the ``analyses`` enum of the config schema), each with the CSV of its numbers.

`make_figure(analysis, ds, out_png, out_csv, settings)` draws the analysis from the aggregate ``ds``
of one experiment (layout in `tfconv.aggregate`), writes the PNG and a tidy CSV of exactly the
numbers drawn, and returns ``{"finding": str, "slopes": [dict, ...]}``: a one-sentence finding
computed from the numbers (also the figure's suptitle) and one row per fitted slope drawn
(figure, quantity, group, slope, ci_low, ci_high, r2, n).

Conventions shared by every figure (definitions in `tfconv.analysis` and docs/analyses.md):

* seeds are drawn as the mean line with a [min, max] band over the *non-diverged* seeds;
* diverged runs (status "diverged") are drawn dashed with an ``x`` at their last finite value (or
  as grey ``x`` markers in scatter panels), named in the legend, and left out of every fit;
* missing runs are NaN and simply absent;
* fitted slopes are least squares on log-log axes over every non-diverged run, with a t interval at
  the configured ``confidence``;
* an experiment with an n_samples axis is drawn at its largest n_samples in the per-width figures.

CSV columns: figure, panel, quantity, x_name, x, y, stat, n_samples, width, scaling, init, seed,
status.  ``stat`` is one of mean / low / high (seed band), run (one run's value), diverged_run,
fit (the fitted line), predicted (theory), reference (a reference line) or censored.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import analysis as A  # noqa: E402

CSV_COLUMNS = ["figure", "panel", "quantity", "x_name", "x", "y", "stat",
               "n_samples", "width", "scaling", "init", "seed", "status"]
SLOPE_COLUMNS = ["figure", "quantity", "group", "slope", "ci_low", "ci_high", "r2", "n"]
DIVERGED_NOTE = "diverged run (dashed / x, excluded from fits)"
SCALING_LABEL = {"inv_sqrt": "tau0 = d_m^-1/2", "inv": "tau0 = d_m^-1"}
#: Theory's width slope of the attention deviation at init (science.md section 3).
THEORY_DEVIATION_SLOPE = {"inv": -0.5, "inv_sqrt": 0.0}


# ---------------------------------------------------------------------------------------------
# Canvas: one figure plus the rows of its CSV and its slopes
# ---------------------------------------------------------------------------------------------

class Canvas:
    """A matplotlib figure with a grid of panels, collecting the CSV rows and slopes as it draws."""

    def __init__(self, analysis: str, n_panels: int = 1, ncols: Optional[int] = None, panel_size=(4.6, 3.6)):
        self.analysis = analysis
        n_panels = max(1, int(n_panels))
        ncols = ncols or min(n_panels, 3)
        nrows = int(math.ceil(n_panels / ncols))
        self.fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows + 0.9),
                                      squeeze=False)
        self.axes = list(axes.ravel())
        for ax in self.axes[n_panels:]:
            ax.set_visible(False)
        self.rows: List[Dict[str, Any]] = []
        self.slopes: List[Dict[str, Any]] = []
        self.diverged_drawn = False

    def ax(self, i: int):
        return self.axes[i]

    def record(self, panel: str, quantity: str, x_name: str, xs, ys, stat: str, **group) -> None:
        xs = np.atleast_1d(np.asarray(xs, dtype=float))
        ys = np.atleast_1d(np.asarray(ys, dtype=float))
        if xs.size == 1 and ys.size > 1:
            xs = np.repeat(xs, ys.size)
        for x, y in zip(xs, ys):
            row = dict(figure=self.analysis, panel=panel, quantity=quantity, x_name=x_name,
                       x=float(x), y=float(y), stat=stat)
            row.update({k: v for k, v in group.items() if v is not None})
            self.rows.append(row)

    def add_slope(self, quantity: str, group: str, fit: Mapping[str, Any]) -> None:
        self.slopes.append(dict(figure=self.analysis, quantity=quantity, group=group,
                                slope=float(fit["slope"]), ci_low=float(fit["ci_low"]),
                                ci_high=float(fit["ci_high"]), r2=float(fit["r2"]), n=int(fit["n"])))

    def table(self):
        import pandas as pd

        df = pd.DataFrame(self.rows)
        for c in CSV_COLUMNS:
            if c not in df.columns:
                df[c] = np.nan
        return df[CSV_COLUMNS + [c for c in df.columns if c not in CSV_COLUMNS]]

    def finish(self, finding: str, out_png, out_csv) -> None:
        if self.diverged_drawn:
            for ax in self.axes:
                if ax.get_visible():
                    ax.plot([], [], color="grey", ls="--", marker="x", label=DIVERGED_NOTE)
                    break
        for ax in self.axes:
            if ax.get_visible() and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
        chars = max(60, int(self.fig.get_figwidth() * 13))  # about 13 characters per inch at 9 pt
        self.fig.suptitle("\n".join(textwrap.wrap(finding, chars)), fontsize=9)
        self.fig.tight_layout()
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        self.fig.savefig(out_png, dpi=110)
        plt.close(self.fig)
        self.table().to_csv(out_csv, index=False)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _fmt(x, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "nan"
    return f"{x:.{digits}g}"


def _ci(fit: Mapping[str, Any]) -> str:
    return f"{_fmt(fit['slope'])} [{_fmt(fit['ci_low'])}, {_fmt(fit['ci_high'])}]"


def _group(**kw) -> str:
    return ", ".join(f"{k}={v}" for k, v in kw.items() if v is not None)


def _colors(n: int):
    cmap = plt.get_cmap("viridis")
    return [cmap(0.1 + 0.8 * i / max(1, n - 1)) for i in range(n)]


GROUP_COLORS = plt.get_cmap("tab10").colors


def _set_log(ax, which: str, values) -> None:
    """Log scale only when some drawn value is positive (matplotlib warns otherwise)."""
    v = np.asarray(values, dtype=float).ravel()
    pos = v[np.isfinite(v) & (v > 0)]
    if not pos.size:
        return
    if which == "y":
        ax.set_yscale("log")
        return
    ax.set_xscale("log")
    ticks = np.unique(pos)
    if ticks.size <= 12:  # grid values (widths, n_samples) as plain tick labels
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _prepare(ds, largest_n: bool = True):
    """complete_axes plus, when asked, the slice at the largest n_samples; returns (ds, N or None)."""
    ds = A.complete_axes(ds)
    n = None
    if largest_n and "n_samples" in ds.dims:
        n = max(A.axis_values(ds, "n_samples"))
        ds = ds.sel(n_samples=n)
    return ds, n


def _groups(ds) -> List[tuple]:
    """(scaling, init) pairs in grid order."""
    return [(s, i) for s in A.axis_values(ds, "scaling") for i in A.axis_values(ds, "init")]


def _default_group(ds) -> tuple:
    return (A.preferred(A.axis_values(ds, "scaling"), "inv_sqrt"), A.preferred(A.axis_values(ds, "init"), "lecun"))


def _status(sub) -> np.ndarray:
    return np.asarray(sub["status"].values).astype(str)


def _draw_seed_curves(cv: Canvas, ax, sub, var: str, dim: str, color, label: str, panel: str, group: Dict[str, Any],
                      ls: str = "-", band: bool = True):
    """Mean line + [min, max] band over non-diverged seeds of ``var`` (dims seed x dim); diverged dashed.

    Returns (x, mean) of the non-diverged mean.
    """
    if var not in sub:
        return np.array([]), np.array([])
    da = sub[var].transpose("seed", dim)
    vals = np.asarray(da.values, dtype=float)
    x = np.asarray(sub[dim].values, dtype=float)
    status = _status(sub).ravel()
    seeds = A.axis_values(sub, "seed")
    div = status == A.STATUS_DIVERGED
    good = np.where(div[:, None], np.nan, vals)
    mean, lo, hi = A.mean_band(good, axis=0)
    if np.any(np.isfinite(mean)):
        ax.plot(x, mean, color=color, ls=ls, label=label, marker="o" if x.size <= 12 else None, ms=3)
        if band and np.sum(~div & (status != "missing")) > 1:
            ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
    cv.record(panel, var, dim, x, mean, "mean", **group)
    cv.record(panel, var, dim, x, lo, "low", **group)
    cv.record(panel, var, dim, x, hi, "high", **group)
    for k in np.nonzero(div)[0]:
        v = vals[k]
        ax.plot(x, v, color=color, ls="--", lw=1)
        fin = np.nonzero(np.isfinite(v))[0]
        if fin.size:
            ax.plot([x[fin[-1]]], [v[fin[-1]]], color=color, marker="x", ms=7, ls="none")
        cv.record(panel, var, dim, x, v, "diverged_run", **dict(group, seed=seeds[k], status=A.STATUS_DIVERGED))
        cv.diverged_drawn = True
    return x, mean


def _draw_runs_fit(cv: Canvas, ax, x, y, status, seeds, color, label: str, panel: str, quantity: str,
                   x_name: str, group: Dict[str, Any], slope_group: str, confidence: float,
                   fit: bool = True, xs_group: Optional[Sequence] = None):
    """Scatter one point per run (diverged: grey x), the seed-mean line, and a log-log fit over non-diverged runs.

    x, y, status, seeds: flat arrays with one entry per run.  Returns the fit dict (NaN when not fitted).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    status = np.asarray(status).astype(str).ravel()
    div = status == A.STATUS_DIVERGED
    ok = ~div & (status != "missing")
    ax.plot(x[ok], y[ok], ls="none", marker="o", ms=4, color=color, alpha=0.6)
    if div.any():
        ax.plot(x[div], y[div], ls="none", marker="x", ms=7, color="grey")
        cv.diverged_drawn = True
    for xi, yi, st, sd in zip(x, y, status, seeds):
        if st == "missing":
            continue
        g = dict(group, seed=sd, status=st)
        g[x_name] = xi if x_name in ("width", "n_samples") else g.get(x_name)
        cv.record(panel, quantity, x_name, xi, yi, "diverged_run" if st == A.STATUS_DIVERGED else "run", **g)
    # seed-mean line at each x
    ux = np.unique(x[ok & np.isfinite(x)])
    means = np.array([np.nanmean(np.where(np.isfinite(y[ok & (x == u)]), y[ok & (x == u)], np.nan))
                      if np.any(np.isfinite(y[ok & (x == u)])) else np.nan for u in ux])
    result = A.fit_loglog(x[ok], y[ok], confidence) if fit else A._nan_fit()
    lab = label
    if fit and np.isfinite(result["slope"]):
        lab = f"{label}: slope {_ci(result)}"
    if ux.size:
        ax.plot(ux, means, color=color, lw=1, label=lab)
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


def _flat(ds, var_da, x_axis: str):
    """Flatten a per-run DataArray (dims include x_axis and seed) to (x, y, status, seed) arrays."""
    dims = [x_axis, "seed"]
    y = np.asarray(var_da.transpose(*dims).values, dtype=float)
    st = np.asarray(ds["status"].transpose(*dims).values).astype(str)
    xv = np.asarray(ds[x_axis].values, dtype=float)
    sv = np.asarray(A.axis_values(ds, "seed"))
    X = np.repeat(xv[:, None], len(sv), axis=1)
    S = np.repeat(sv[None, :], len(xv), axis=0)
    return X.ravel(), y.ravel(), st.ravel(), S.ravel()


def _rates(ds, settings) -> "np.ndarray":
    """Fitted linear rate per run, as a DataArray over the run axes (NaN for diverged/missing)."""
    import xarray as xr

    window = settings.get("rate_window", (0.0, 0.5))
    floor = settings.get("rate_floor", A.RATE_FLOOR)
    axes = [d for d in ds["status"].dims]
    loss = ds["loss"].transpose(*axes, "epoch").values
    st = np.asarray(ds["status"].transpose(*axes).values).astype(str)
    rate = np.full(st.shape, np.nan)
    r2 = np.full(st.shape, np.nan)
    for idx in np.ndindex(*st.shape):
        r = A.linear_rate(loss[idx], window, floor, diverged=(st[idx] == A.STATUS_DIVERGED))
        rate[idx], r2[idx] = r["rate"], r["r2"]
    coords = {a: ds[a].values for a in axes}
    return xr.DataArray(rate, coords=coords, dims=axes), xr.DataArray(r2, coords=coords, dims=axes)


def _note_n(n) -> str:
    return f" at n_samples = {n}" if n is not None else ""


def _empty(cv: Canvas, message: str) -> str:
    ax = cv.ax(0)
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(message, 50)), ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    return message


def _count_diverged(ds) -> int:
    return int((_status(ds) == A.STATUS_DIVERGED).sum())


def _diverged_clause(ds) -> str:
    k = _count_diverged(ds)
    return f"; {k} run(s) diverged (excluded from fits)" if k else ""


# ---------------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------------

def plot_loss_per_width(ds, settings) -> tuple:
    """Training loss vs epoch (log y) per width, LeCun & tau0 = d_m^-1/2 when present (paper Sec. 5.1)."""
    ds, n = _prepare(ds)
    sc, ini = _default_group(ds)
    sub = ds.sel(scaling=sc, init=ini)
    cv = Canvas("loss_per_width", 1, panel_size=(6.5, 4.5))
    ax = cv.ax(0)
    widths = A.axis_values(sub, "width")
    rate, r2 = _rates(sub, settings)
    finals = []
    for w, c in zip(widths, _colors(len(widths))):
        _, mean = _draw_seed_curves(cv, ax, sub.sel(width=w), "loss", "epoch", c, f"width {w}", "loss",
                                    dict(width=w, scaling=sc, init=ini, n_samples=n))
        finals.append(mean[-1] if mean.size else np.nan)
    _set_log(ax, "y", sub["loss"].values)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"training loss ({sub.attrs.get('loss', 'mean')})")
    ax.set_title(f"init={ini}, scaling={sc}{_note_n(n)}", fontsize=9)
    thr = float(settings.get("linear_fit_r2", 0.9))
    min_r2 = [float(np.nanmin(r2.sel(width=w).values)) if np.any(np.isfinite(r2.sel(width=w).values)) else np.nan
              for w in widths]
    k = sum(1 for v in min_r2 if np.isfinite(v) and v >= thr)
    fin = [(w, f) for w, f in zip(widths, finals) if np.isfinite(f)]
    finding = (f"{ini}/{sc}: log-loss is linear in epoch (R^2 >= {_fmt(thr)} over the rate window) at "
               f"{k} of {len(widths)} widths (lowest R^2 {_fmt(np.nanmin(min_r2) if np.any(np.isfinite(min_r2)) else np.nan)})")
    if fin:
        finding += (f"; final loss (seed mean) is {_fmt(fin[0][1])} at width {fin[0][0]} and "
                    f"{_fmt(fin[-1][1])} at width {fin[-1][0]}")
    finding += _diverged_clause(sub)
    return cv, finding


def plot_figure9(ds, settings) -> tuple:
    """Appendix Fig. 9: loss, weight change and NTK change per width under tau0 = d_m^-1 (and its inv_sqrt row)."""
    ds, n = _prepare(ds)
    scalings = A.axis_values(ds, "scaling")
    rows = [s for s in ("inv", "inv_sqrt") if s in scalings] or scalings[:2]
    ini = A.preferred(A.axis_values(ds, "init"), "lecun")
    cv = Canvas("figure9", 3 * len(rows), ncols=3)
    widths = A.axis_values(ds, "width")
    colors = _colors(len(widths))
    summary = []
    for r, sc in enumerate(rows):
        sub = ds.sel(scaling=sc, init=ini)
        finals_w, finals_k, e90 = [], [], np.nan
        for w, c in zip(widths, colors):
            g = dict(width=w, scaling=sc, init=ini, n_samples=n)
            s = sub.sel(width=w)
            _draw_seed_curves(cv, cv.ax(3 * r), s, "loss", "epoch", c, f"width {w}", f"loss {sc}", g)
            x, wm = _draw_seed_curves(cv, cv.ax(3 * r + 1), s, "weight_change", "epoch", c, f"width {w}",
                                      f"weight_change {sc}", g)
            _, km = _draw_seed_curves(cv, cv.ax(3 * r + 2), s, "kernel_change", "checkpoint_epoch", c,
                                      f"width {w}", f"kernel_change {sc}", g)
            finals_w.append(wm[-1] if wm.size else np.nan)
            finals_k.append(km[-1] if km.size else np.nan)
            if wm.size and np.isfinite(wm[-1]) and wm[-1] > 0:
                e90 = float(x[np.nonzero(wm >= 0.9 * wm[-1])[0][0]])
        _set_log(cv.ax(3 * r), "y", sub["loss"].values)
        for j, (lab, xl) in enumerate((("training loss", "epoch"),
                                       ("weight change |theta_t - theta_0| / |theta_0|", "epoch"),
                                       ("NTK change |K_t - K_0|_F / |K_0|_F", "checkpoint epoch"))):
            ax = cv.ax(3 * r + j)
            ax.set_xlabel(xl)
            ax.set_ylabel(lab, fontsize=8)
            ax.set_title(f"scaling={sc} ({SCALING_LABEL.get(sc, sc)}), init={ini}{_note_n(n)}", fontsize=8)
        summary.append((sc, finals_w, finals_k, e90))
    sc, fw, fk, e90 = summary[0]
    finding = (f"under scaling {sc} ({ini}): final weight change goes from {_fmt(fw[0])} at width {widths[0]} to "
               f"{_fmt(fw[-1])} at width {widths[-1]}, final NTK change from {_fmt(fk[0])} to {_fmt(fk[-1])}; "
               f"at width {widths[-1]} the weights reach 90% of their final change by epoch {_fmt(e90)}")
    if len(summary) > 1:
        sc2, fw2, fk2, _ = summary[1]
        finding += f" (under {sc2} at width {widths[-1]}: weight change {_fmt(fw2[-1])}, NTK change {_fmt(fk2[-1])})"
    finding += _diverged_clause(ds.sel(scaling=rows, init=ini))
    return cv, finding


def plot_init_comparison(ds, settings) -> tuple:
    """LeCun vs He vs NTK at equal width and step size: loss curves at the largest width, rate vs width."""
    ds, n = _prepare(ds)
    sc = A.preferred(A.axis_values(ds, "scaling"), "inv_sqrt")
    inits = A.axis_values(ds, "init")
    widths = A.axis_values(ds, "width")
    wmax = max(widths)
    conf = float(settings.get("confidence", 0.95))
    cv = Canvas("init_comparison", 2)
    sub = ds.sel(scaling=sc)
    rate, _ = _rates(sub, settings)
    rate_at = {}
    for k, ini in enumerate(inits):
        c = GROUP_COLORS[k % 10]
        _draw_seed_curves(cv, cv.ax(0), sub.sel(init=ini, width=wmax), "loss", "epoch", c, f"init {ini}",
                          "loss at largest width", dict(width=wmax, scaling=sc, init=ini, n_samples=n))
        s = sub.sel(init=ini)
        x, y, st, sd = _flat(s, rate.sel(init=ini), "width")
        _draw_runs_fit(cv, cv.ax(1), x, y, st, sd, c, f"init {ini}", "rate vs width", "rate", "width",
                       dict(scaling=sc, init=ini, n_samples=n), _group(init=ini, scaling=sc), conf)
        rate_at[ini] = float(np.nanmean(rate.sel(init=ini, width=wmax).values)) \
            if np.any(np.isfinite(rate.sel(init=ini, width=wmax).values)) else np.nan
    _set_log(cv.ax(0), "y", sub["loss"].sel(width=wmax).values)
    cv.ax(0).set(xlabel="epoch", ylabel="training loss", title=f"width {wmax}, scaling={sc}, step {ds.attrs.get('step_size', '?')}")
    cv.ax(1).set(xlabel="width", ylabel="fitted linear rate per epoch", title=f"scaling={sc}")
    _set_log(cv.ax(1), "x", widths)
    _set_log(cv.ax(1), "y", rate.values)
    parts = ", ".join(f"{i} {_fmt(v)}" for i, v in rate_at.items())
    finding = f"at width {wmax} ({sc}) the fitted rate per epoch is: {parts}"
    if "ntk" in rate_at:
        for i in ("lecun", "he"):
            if i in rate_at and rate_at["ntk"] > 0:
                finding += f"; {i}/ntk rate ratio {_fmt(rate_at[i] / rate_at['ntk'])}"
    finding += _diverged_clause(sub)
    return cv, finding


def plot_scaling_comparison(ds, settings) -> tuple:
    """tau0 = d_m^-1/2 vs d_m^-1: fitted rate vs width and attention deviation at init vs width."""
    ds, n = _prepare(ds)
    ini = A.preferred(A.axis_values(ds, "init"), "lecun")
    scalings = A.axis_values(ds, "scaling")
    widths = A.axis_values(ds, "width")
    wmax = max(widths)
    conf = float(settings.get("confidence", 0.95))
    cv = Canvas("scaling_comparison", 2)
    sub = ds.sel(init=ini)
    rate, _ = _rates(sub, settings)
    dev_fit, rate_at = {}, {}
    for k, sc in enumerate(scalings):
        c = GROUP_COLORS[k % 10]
        s = sub.sel(scaling=sc)
        x, y, st, sd = _flat(s, rate.sel(scaling=sc), "width")
        _draw_runs_fit(cv, cv.ax(0), x, y, st, sd, c, f"scaling {sc}", "rate vs width", "rate", "width",
                       dict(scaling=sc, init=ini, n_samples=n), _group(init=ini, scaling=sc), conf)
        x, y, st, sd = _flat(s, s["attention_deviation_mean"].isel(epoch=0, drop=True), "width")
        theory = THEORY_DEVIATION_SLOPE.get(sc)
        lab = f"scaling {sc}" + (f" (theory {theory:g})" if theory is not None else "")
        dev_fit[sc] = _draw_runs_fit(cv, cv.ax(1), x, y, st, sd, c, lab, "attention deviation at init",
                                     "attention_deviation_mean", "width", dict(scaling=sc, init=ini, n_samples=n),
                                     _group(init=ini, scaling=sc), conf)
        v = rate.sel(scaling=sc, width=wmax).values
        rate_at[sc] = float(np.nanmean(v)) if np.any(np.isfinite(v)) else np.nan
    cv.ax(0).set(xlabel="width", ylabel="fitted linear rate per epoch", title=f"init={ini}{_note_n(n)}")
    cv.ax(1).set(xlabel="width", ylabel="mean |A - 1/d_s| at epoch 0", title=f"init={ini}")
    for ax, vals in ((cv.ax(0), rate.values), (cv.ax(1), sub["attention_deviation_mean"].isel(epoch=0).values)):
        _set_log(ax, "x", widths)
        _set_log(ax, "y", vals)
    parts = ", ".join(f"{sc} {_ci(f)}" + (f" (theory {THEORY_DEVIATION_SLOPE[sc]:g})" if sc in THEORY_DEVIATION_SLOPE else "")
                      for sc, f in dev_fit.items())
    finding = f"attention-deviation width slope: {parts}"
    finding += f"; at width {wmax} the fitted rate is " + ", ".join(f"{_fmt(v)} ({sc})" for sc, v in rate_at.items())
    if "inv" in rate_at and "inv_sqrt" in rate_at and rate_at["inv"] > 0:
        finding += f", ratio inv_sqrt/inv {_fmt(rate_at['inv_sqrt'] / rate_at['inv'])}"
    finding += _diverged_clause(sub)
    return cv, finding


def plot_attention_deviation(ds, settings) -> tuple:
    """Attention deviation from uniform at init vs width, per scaling and init, with width slopes."""
    ds, n = _prepare(ds)
    conf = float(settings.get("confidence", 0.95))
    widths = A.axis_values(ds, "width")
    cv = Canvas("attention_deviation", 2)
    fits = {}
    for k, (sc, ini) in enumerate(_groups(ds)):
        c = GROUP_COLORS[k % 10]
        s = ds.sel(scaling=sc, init=ini)
        for p, var in enumerate(("attention_deviation_mean", "attention_deviation_max")):
            x, y, st, sd = _flat(s, s[var].isel(epoch=0, drop=True), "width")
            f = _draw_runs_fit(cv, cv.ax(p), x, y, st, sd, c, f"{ini}/{sc}", var, var, "width",
                               dict(scaling=sc, init=ini, n_samples=n), _group(init=ini, scaling=sc), conf)
            if p == 0:
                fits[(sc, ini)] = f
    for p, lab in enumerate(("mean |A - 1/d_s| at epoch 0", "max |A - 1/d_s| at epoch 0")):
        ax = cv.ax(p)
        ax.set(xlabel="width", ylabel=lab, title=f"attention deviation at init{_note_n(n)}")
        _set_log(ax, "x", widths)
        _set_log(ax, "y", ds["attention_deviation_mean" if p == 0 else "attention_deviation_max"].isel(epoch=0).values)
    parts = "; ".join(f"{ini}/{sc} {_ci(f)}" + (f" (theory {THEORY_DEVIATION_SLOPE[sc]:g})" if sc in THEORY_DEVIATION_SLOPE else "")
                      for (sc, ini), f in fits.items())
    return cv, f"width slope of the mean attention deviation at init: {parts}" + _diverged_clause(ds)


def plot_spectrum(ds, settings) -> tuple:
    """lambda_min(K_0) and lambda_max(K_0) vs width for every init x scaling, log-log with slopes."""
    ds, n = _prepare(ds)
    conf = float(settings.get("confidence", 0.95))
    widths = A.axis_values(ds, "width")
    cv = Canvas("spectrum", 2)
    fits = {}
    for k, (sc, ini) in enumerate(_groups(ds)):
        c = GROUP_COLORS[k % 10]
        s = ds.sel(scaling=sc, init=ini)
        for p, var in enumerate(("lambda_min", "lambda_max")):
            x, y, st, sd = _flat(s, A.epoch0_kernel(s, var), "width")
            fits[(sc, ini, var)] = _draw_runs_fit(cv, cv.ax(p), x, y, st, sd, c, f"{ini}/{sc}", f"{var}(K_0)",
                                                  f"{var}_K0", "width", dict(scaling=sc, init=ini, n_samples=n),
                                                  _group(init=ini, scaling=sc), conf)
    for p, var in enumerate(("lambda_min", "lambda_max")):
        ax = cv.ax(p)
        ax.set(xlabel="width", ylabel=f"{var}(K_0)", title=f"{var} of the NTK at init{_note_n(n)}")
        _set_log(ax, "x", widths)
        _set_log(ax, "y", A.epoch0_kernel(ds, var).values)
    lmin = "; ".join(f"{ini}/{sc} {_ci(f)}" for (sc, ini, v), f in fits.items() if v == "lambda_min")
    lmax = "; ".join(f"{ini}/{sc} {_fmt(f['slope'])}" for (sc, ini, v), f in fits.items() if v == "lambda_max")
    vals = A.epoch0_kernel(ds, "lambda_min").values
    smallest = np.nanmin(vals) if np.any(np.isfinite(vals)) else np.nan
    return cv, (f"width slope of lambda_min(K_0): {lmin}; of lambda_max(K_0): {lmax}; "
                f"smallest lambda_min(K_0) {_fmt(smallest)}" + _diverged_clause(ds))


def plot_theory_rate(ds, settings) -> tuple:
    """Measured loss curves beside the predicted decay L_0 exp(-rate t) from lambda_min(K_0); stable step size."""
    ds, n = _prepare(ds)
    conf = float(settings.get("confidence", 0.95))
    N = float(n) if n is not None else A.n_samples_of(ds, settings.get("n_samples"))
    eta = float(ds.attrs.get("step_size", settings.get("step_size", np.nan)))
    loss_kind = str(ds.attrs.get("loss", settings.get("loss", "mean")))
    groups = _groups(ds)
    widths = A.axis_values(ds, "width")
    colors = _colors(len(widths))
    cv = Canvas("theory_rate", len(groups) + 1)
    rate, _ = _rates(ds, settings)
    ratios, too_big = [], []
    for gi, (sc, ini) in enumerate(groups):
        ax = cv.ax(gi)
        s = ds.sel(scaling=sc, init=ini)
        for w, c in zip(widths, colors):
            sw = s.sel(width=w)
            g = dict(width=w, scaling=sc, init=ini, n_samples=n)
            x, mean = _draw_seed_curves(cv, ax, sw, "loss", "epoch", c, f"width {w}", f"{ini}/{sc}", g)
            present = _status(sw) != "missing"
            lmin = np.asarray(A.epoch0_kernel(sw, "lambda_min").values, dtype=float)[present]
            pred = A.predicted_rate(lmin, eta, N, loss_kind) if lmin.size else np.array([])
            pred = np.atleast_1d(pred)
            r_pred = float(np.nanmean(pred)) if np.any(np.isfinite(pred)) else np.nan
            l0 = mean[0] if mean.size else np.nan
            if np.isfinite(r_pred) and np.isfinite(l0):
                pc = l0 * np.exp(-r_pred * x)
                ax.plot(x, pc, color=c, ls=":", lw=1.5)
                cv.record(f"{ini}/{sc}", "loss", "epoch", x, pc, "predicted", **g)
            meas = rate.sel(scaling=sc, init=ini, width=w).values
            if np.any(np.isfinite(meas)) and np.isfinite(r_pred) and r_pred > 0:
                ratios.append(float(np.nanmean(meas)) / r_pred)
        vals = s["loss"].values
        _set_log(ax, "y", vals)
        fin = vals[np.isfinite(vals) & (vals > 0)]
        if fin.size:
            ax.set_ylim(fin.min() / 3, fin.max() * 3)
        ax.plot([], [], color="k", ls=":", label="predicted L_0 exp(-rate t)")
        ax.set(xlabel="epoch", ylabel="training loss", title=f"init={ini}, scaling={sc}{_note_n(n)}")
        # stable step size 2N/lambda_max(K_0) vs width
        x, y, st, sd = _flat(s, A.epoch0_kernel(s, "lambda_max"), "width")
        stable = np.asarray(A.stable_step_size(y, N, loss_kind), dtype=float) if y.size else y
        _draw_runs_fit(cv, cv.ax(len(groups)), x, stable, st, sd, GROUP_COLORS[gi % 10], f"{ini}/{sc}",
                       "stable step size", "stable_step_size", "width", dict(scaling=sc, init=ini, n_samples=n),
                       _group(init=ini, scaling=sc), conf)
        bad = sorted({int(xi) for xi, v, t in zip(x, stable, st) if t != "missing" and np.isfinite(v) and eta > v})
        if bad:
            too_big.append(f"{ini}/{sc} width {', '.join(map(str, bad))}")
    ax = cv.ax(len(groups))
    ax.axhline(eta, color="red", ls="--", lw=1, label=f"configured step size {eta:g}")
    cv.record("stable step size", "step_size", "width", [min(widths), max(widths)], [eta, eta], "reference")
    stable_word = "2N/lambda_max(K_0)" if loss_kind == "mean" else "2/lambda_max(K_0)"
    ax.set(xlabel="width", ylabel=f"stable step {stable_word}", title=f"N = {_fmt(N)}, loss = {loss_kind}")
    _set_log(ax, "x", widths)
    _set_log(ax, "y", [r["y"] for r in cv.rows if r["quantity"] == "stable_step_size"] + [eta])
    if ratios:
        finding = (f"measured/predicted rate ratio (seed means, all widths) ranges over "
                   f"[{_fmt(min(ratios))}, {_fmt(max(ratios))}] (median {_fmt(float(np.median(ratios)))})")
    else:
        finding = "no predicted rate could be formed (needs lambda_min(K_0) > 0, N and eta lambda_min/N < 1)"
    if too_big:
        finding += f"; step size {eta:g} exceeds the stable step {stable_word} at " + "; ".join(too_big)
    else:
        finding += f"; step size {eta:g} is below the stable step {stable_word} at every width"
    return cv, finding + _diverged_clause(ds)


def plot_lazy_training(ds, settings) -> tuple:
    """Final weight change and final NTK change vs width, log-log slopes per init and scaling."""
    ds, n = _prepare(ds)
    conf = float(settings.get("confidence", 0.95))
    widths = A.axis_values(ds, "width")
    cv = Canvas("lazy_training", 2)
    fits = {}
    for k, (sc, ini) in enumerate(_groups(ds)):
        c = GROUP_COLORS[k % 10]
        s = ds.sel(scaling=sc, init=ini)
        for p, (var, dim) in enumerate((("weight_change", "epoch"), ("kernel_change", "checkpoint_epoch"))):
            x, y, st, sd = _flat(s, A.final_value(s, var, dim), "width")
            fits[(sc, ini, var)] = _draw_runs_fit(cv, cv.ax(p), x, y, st, sd, c, f"{ini}/{sc}", f"final {var}",
                                                  f"{var}_final", "width", dict(scaling=sc, init=ini, n_samples=n),
                                                  _group(init=ini, scaling=sc), conf)
    last_ck = int(ds["checkpoint_epoch"].values[-1]) if ds.sizes.get("checkpoint_epoch", 0) else None
    for p, (var, lab) in enumerate((("weight_change", f"|theta_E - theta_0| / |theta_0| (epoch {ds.sizes['epoch'] - 1})"),
                                    ("kernel_change", f"|K_t - K_0|_F / |K_0|_F (checkpoint {last_ck})"))):
        ax = cv.ax(p)
        ax.set(xlabel="width", ylabel=lab, title=f"final {var.replace('_', ' ')}{_note_n(n)}")
        _set_log(ax, "x", widths)
        _set_log(ax, "y", A.final_value(ds, var, "epoch" if p == 0 else "checkpoint_epoch").values)
    wpart = "; ".join(f"{ini}/{sc} {_ci(f)}" for (sc, ini, v), f in fits.items() if v == "weight_change")
    kpart = "; ".join(f"{ini}/{sc} {_ci(f)}" for (sc, ini, v), f in fits.items() if v == "kernel_change")
    finding = f"width slope of the final weight change: {wpart}; of the final NTK change: {kpart}"
    if not last_ck:
        finding += " (NTK change needs a checkpoint epoch after 0)"
    return cv, finding + _diverged_clause(ds)


def plot_overparam_exponent(ds, settings) -> tuple:
    """Smallest sufficient width vs n_samples, log-log fit with its interval and references of slope 2 and 3."""
    ds = A.complete_axes(ds)
    conf = float(settings.get("confidence", 0.95))
    target = float(settings.get("loss_target", 1e-3))
    frac = float(settings.get("success_fraction", 0.9))
    cv = Canvas("overparam_exponent", 1, panel_size=(6.5, 4.8))
    ax = cv.ax(0)
    if "n_samples" not in ds.dims:
        return cv, _empty(cv, "overparam_exponent needs an n_samples axis in the grid; none was found")
    table = A.smallest_sufficient_width(ds, target, frac)
    wmax = max(A.axis_values(ds, "width"))
    parts = []
    anchor = None
    for k, (sc, ini) in enumerate(_groups(ds)):
        c = GROUP_COLORS[k % 10]
        t = table[(table["scaling"] == sc) & (table["init"] == ini)]
        fit = A.overparam_exponent(t, conf)
        nn = np.asarray(t["n_samples"], dtype=float)
        ws = np.asarray(t["width_star"], dtype=float)
        cens = np.asarray(t["censored"], dtype=bool)
        g = dict(scaling=sc, init=ini)
        lab = f"{ini}/{sc}" + (f": slope {_ci(fit)}" if np.isfinite(fit["slope"]) else "")
        ax.plot(nn[~cens], ws[~cens], marker="o", color=c, ls="none", label=lab)
        for ni, wi in zip(nn[~cens], ws[~cens]):
            cv.record("width_star", "width_star", "n_samples", ni, wi, "run", **dict(g, n_samples=ni))
        if cens.any():
            ax.plot(nn[cens], np.full(cens.sum(), wmax), marker="^", color=c, ls="none", mfc="none")
            for ni in nn[cens]:
                cv.record("width_star", "width_star", "n_samples", ni, wmax, "censored", **dict(g, n_samples=ni))
        if np.isfinite(fit["slope"]):
            ok = ~cens & (ws > 0)
            lx = np.log(nn[ok])
            xm, ym = lx.mean(), np.log(ws[ok]).mean()
            xs = np.unique(nn[ok])
            yfit = np.exp(fit["intercept"]) * xs ** fit["slope"]
            ax.plot(xs, yfit, color=c, ls="-", lw=1)
            ylo = np.exp(ym + fit["ci_low"] * (np.log(xs) - xm))
            yhi = np.exp(ym + fit["ci_high"] * (np.log(xs) - xm))
            ax.fill_between(xs, np.minimum(ylo, yhi), np.maximum(ylo, yhi), color=c, alpha=0.15, lw=0)
            cv.record("width_star", "width_star", "n_samples", xs, yfit, "fit", **g)
            cv.add_slope("width_star vs n_samples", _group(init=ini, scaling=sc), fit)
            if anchor is None:
                anchor = (xs[0], yfit[0], xs)
        verdict = ("within" if fit.get("within_ci_2") else "above" if fit.get("below_2") else "below") \
            if np.isfinite(fit["slope"]) else "undetermined"
        parts.append(f"{ini}/{sc} {_ci(fit)} (n={fit['n']}, {fit['n_censored']} censored; theory 2 is {verdict} the interval)")
    if anchor is not None:
        x0, y0, xs = anchor
        for p, ls in ((2, "--"), (3, "-.")):
            yr = y0 * (xs / x0) ** p
            ax.plot(xs, yr, color="grey", ls=ls, lw=1, label=f"reference slope {p}")
            cv.record("width_star", f"reference_slope_{p}", "n_samples", xs, yr, "reference")
    ax.plot([], [], marker="^", mfc="none", color="k", ls="none", label=f"no sufficient width <= {wmax}")
    ax.set(xlabel="n_samples", ylabel="smallest sufficient width",
           title=f"loss_E/loss_0 <= {target:g} in >= {frac:g} of seeds")
    _set_log(ax, "x", table["n_samples"])
    _set_log(ax, "y", list(table["width_star"]) + [wmax])
    finding = "smallest sufficient width grows as n_samples^slope: " + "; ".join(parts)
    return cv, finding


def plot_mnist_accuracy(ds, settings) -> tuple:
    """Train loss and test accuracy vs epoch per width, one row per scaling x init."""
    ds, n = _prepare(ds)
    groups = _groups(ds)
    widths = A.axis_values(ds, "width")
    colors = _colors(len(widths))
    has_test = "test_accuracy" in ds
    cv = Canvas("mnist_accuracy", 2 * len(groups), ncols=2)
    best = []
    for gi, (sc, ini) in enumerate(groups):
        s = ds.sel(scaling=sc, init=ini)
        for w, c in zip(widths, colors):
            g = dict(width=w, scaling=sc, init=ini, n_samples=n)
            _draw_seed_curves(cv, cv.ax(2 * gi), s.sel(width=w), "loss", "epoch", c, f"width {w}", f"loss {ini}/{sc}", g)
            if has_test:
                _, m = _draw_seed_curves(cv, cv.ax(2 * gi + 1), s.sel(width=w), "test_accuracy", "epoch", c,
                                         f"width {w} (test)", f"accuracy {ini}/{sc}", g)
                fin = m[np.isfinite(m)]
                if fin.size:
                    best.append((float(fin[-1]), w, f"{ini}/{sc}"))
            if "train_accuracy" in s:
                _draw_seed_curves(cv, cv.ax(2 * gi + 1), s.sel(width=w), "train_accuracy", "epoch", c,
                                  None, f"accuracy {ini}/{sc}", g, ls="--", band=False)
        _set_log(cv.ax(2 * gi), "y", s["loss"].values)
        cv.ax(2 * gi).set(xlabel="epoch", ylabel="training loss", title=f"init={ini}, scaling={sc}")
        cv.ax(2 * gi + 1).set(xlabel="epoch", ylabel="accuracy (test solid, train dashed)", title=f"init={ini}, scaling={sc}")
    if best:
        best.sort()
        finding = (f"final test accuracy (seed mean) ranges from {_fmt(best[0][0])} (width {best[0][1]}, {best[0][2]}) "
                   f"to {_fmt(best[-1][0])} (width {best[-1][1]}, {best[-1][2]})")
    else:
        fl = A.final_value(ds, "loss").values
        finding = (f"no test_accuracy curve was recorded; final training loss ranges over "
                   f"[{_fmt(np.nanmin(fl) if np.any(np.isfinite(fl)) else np.nan)}, "
                   f"{_fmt(np.nanmax(fl) if np.any(np.isfinite(fl)) else np.nan)}]")
    return cv, finding + _diverged_clause(ds)


def plot_text_assumption(ds, settings) -> tuple:
    """lambda_min(K_0) vs n_samples per width (and the data kernel's if present): does it stay away from 0?"""
    ds = A.complete_axes(ds)
    conf = float(settings.get("confidence", 0.95))
    cv = Canvas("text_assumption", 1, panel_size=(6.5, 4.8))
    ax = cv.ax(0)
    if "n_samples" not in ds.dims:
        return cv, _empty(cv, "text_assumption needs an n_samples axis in the grid; none was found")
    sc, ini = _default_group(ds)
    s = ds.sel(scaling=sc, init=ini)
    widths = A.axis_values(s, "width")
    fits = {}
    lm = A.epoch0_kernel(s, "lambda_min")
    for w, c in zip(widths, _colors(len(widths))):
        sw = s.sel(width=w)
        x, y, st, sd = _flat(sw, lm.sel(width=w), "n_samples")
        fits[w] = _draw_runs_fit(cv, ax, x, y, st, sd, c, f"width {w}", "lambda_min(K_0)", "lambda_min_K0",
                                 "n_samples", dict(width=w, scaling=sc, init=ini), _group(width=w, init=ini, scaling=sc), conf)
    data_part = ""
    if "data_kernel_lambda_min" in ds:
        dk = ds["data_kernel_lambda_min"]
        other = [d for d in dk.dims if d != "n_samples"]
        if other:
            dk = dk.isel({d: 0 for d in other})
        xs = np.asarray(ds["n_samples"].values, dtype=float)
        ys = np.asarray(dk.values, dtype=float)
        f = A.fit_loglog(xs, ys, conf)
        lab = "data kernel" + (f": slope {_ci(f)}" if np.isfinite(f["slope"]) else "")
        ax.plot(xs, ys, color="k", marker="s", label=lab)
        cv.record("lambda_min(K_0)", "data_kernel_lambda_min", "n_samples", xs, ys, "mean")
        if np.isfinite(f["slope"]):
            cv.add_slope("data_kernel_lambda_min vs n_samples", "data kernel", f)
            yl = np.exp(f["intercept"]) * xs ** f["slope"]
            ax.plot(xs, yl, color="k", ls=":")
            cv.record("lambda_min(K_0)", "data_kernel_lambda_min", "n_samples", xs, yl, "fit")
        pos = ys[np.isfinite(ys)]
        data_part = f"; the data kernel's lambda_min is {_fmt(pos.min() if pos.size else np.nan)} at its smallest"
    ax.set(xlabel="n_samples", ylabel="lambda_min(K_0)", title=f"init={ini}, scaling={sc}")
    _set_log(ax, "x", ds["n_samples"].values)
    _set_log(ax, "y", lm.values)
    vals = np.asarray(lm.values, dtype=float)
    nmax = max(A.axis_values(s, "n_samples"))
    at_max = lm.sel(n_samples=nmax).values
    smallest = np.nanmin(vals) if np.any(np.isfinite(vals)) else np.nan
    wmax = max(widths)
    finding = (f"lambda_min(K_0) ({ini}/{sc}) is {_fmt(smallest)} at its smallest"
               f" ({'<= 0: the assumption fails' if np.isfinite(smallest) and smallest <= 0 else 'positive'}); "
               f"at n_samples = {nmax} it ranges over [{_fmt(np.nanmin(at_max) if np.any(np.isfinite(at_max)) else np.nan)}, "
               f"{_fmt(np.nanmax(at_max) if np.any(np.isfinite(at_max)) else np.nan)}] across widths; "
               f"it scales as n_samples^{_ci(fits[wmax])} at width {wmax}") + data_part
    return cv, finding + _diverged_clause(s)


#: analysis name (the schema's ``analyses`` enum) -> plot function
PLOTS: Dict[str, Callable] = {
    "loss_per_width": plot_loss_per_width,
    "figure9": plot_figure9,
    "init_comparison": plot_init_comparison,
    "scaling_comparison": plot_scaling_comparison,
    "attention_deviation": plot_attention_deviation,
    "spectrum": plot_spectrum,
    "theory_rate": plot_theory_rate,
    "lazy_training": plot_lazy_training,
    "overparam_exponent": plot_overparam_exponent,
    "mnist_accuracy": plot_mnist_accuracy,
    "text_assumption": plot_text_assumption,
}


def make_figure(analysis: str, ds, out_png, out_csv, settings: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Draw ``analysis`` from the aggregate ``ds``; write the PNG and the CSV; return finding and slopes.

    settings: the config's ``analysis`` section (thresholds; schema defaults fill the gaps) plus
    optional ``experiment`` (shown in the title) and ``rate_floor`` (see `tfconv.analysis.linear_rate`).
    Returns {"finding": one sentence, "slopes": [{figure, quantity, group, slope, ci_low, ci_high, r2, n}]}.
    """
    if analysis not in PLOTS:
        raise ValueError(f"unknown analysis {analysis!r}; allowed: {', '.join(PLOTS)}")
    settings = A.analysis_settings(settings)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cv, finding = PLOTS[analysis](ds, settings)
    experiment = settings.get("experiment") or ds.attrs.get("experiment")
    finding = finding.rstrip(".") + "."
    title = f"[{experiment}] {finding}" if experiment else finding
    cv.finish(title, out_png, out_csv)
    return {"finding": finding, "slopes": cv.slopes}
