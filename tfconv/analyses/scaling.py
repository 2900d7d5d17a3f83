"""The softmax scaling tau0 (claims 4 and 5): rates and attention deviation across widths.

Each analysis: a numbers function (aggregate, settings -> Canvas and finding) and its `register`
call; see `tfconv.analyses.registry`.
"""
from __future__ import annotations


import numpy as np

from . import draw as D
from ..figures.canvas import Canvas
from . import stats as A
from ..registry import Analysis, Requires, register

#: Theory's width slope of the attention deviation at init (science.md section 3).
THEORY_DEVIATION_SLOPE = {"inv": -0.5, "inv_sqrt": 0.0}


def scaling_comparison(ds, settings) -> tuple:
    """tau0 = d_m^-1/2 vs d_m^-1: fitted rate vs width and attention deviation at init vs width."""
    ds, n = D.prepare(ds)
    ini = A.preferred(A.axis_values(ds, "init"), "lecun")
    scalings = A.axis_values(ds, "scaling")
    widths = A.axis_values(ds, "width")
    wmax = max(widths)
    conf = float(settings.get("confidence", 0.95))
    cv = Canvas("scaling_comparison", 2)
    sub = ds.sel(init=ini)
    rate, _ = A.rates(sub, settings)
    dev_fit, rate_at = {}, {}
    for k, sc in enumerate(scalings):
        c = D.GROUP_COLORS[k % 10]
        s = sub.sel(scaling=sc)
        x, y, st, sd = D.flat(s, rate.sel(scaling=sc), "width")
        D.draw_runs_fit(cv, cv.ax(0), x, y, st, sd, c, f"scaling {sc}", "rate vs width", "rate", "width",
                       dict(scaling=sc, init=ini, n_samples=n), D.group_label(init=ini, scaling=sc), conf)
        x, y, st, sd = D.flat(s, s["attention_deviation_mean"].isel(epoch=0, drop=True), "width")
        theory = THEORY_DEVIATION_SLOPE.get(sc)
        lab = f"scaling {sc}" + (f" (theory {theory:g})" if theory is not None else "")
        dev_fit[sc] = D.draw_runs_fit(cv, cv.ax(1), x, y, st, sd, c, lab, "attention deviation at init",
                                     "attention_deviation_mean", "width", dict(scaling=sc, init=ini, n_samples=n),
                                     D.group_label(init=ini, scaling=sc), conf)
        v = rate.sel(scaling=sc, width=wmax).values
        rate_at[sc] = float(np.nanmean(v)) if np.any(np.isfinite(v)) else np.nan
    cv.ax(0).set(xlabel="width", ylabel="fitted linear rate per epoch", title=f"init={ini}{D.note_n(n)}")
    cv.ax(1).set(xlabel="width", ylabel="mean |A - 1/d_s| at epoch 0", title=f"init={ini}")
    for ax, vals in ((cv.ax(0), rate.values), (cv.ax(1), sub["attention_deviation_mean"].isel(epoch=0).values)):
        D.set_log(ax, "x", widths)
        D.set_log(ax, "y", vals)
    parts = ", ".join(f"{sc} {D.ci(f)}" + (f" (theory {THEORY_DEVIATION_SLOPE[sc]:g})" if sc in THEORY_DEVIATION_SLOPE else "")
                      for sc, f in dev_fit.items())
    finding = f"attention-deviation width slope: {parts}"
    finding += f"; at width {wmax} the fitted rate is " + ", ".join(f"{D.fmt(v)} ({sc})" for sc, v in rate_at.items())
    if "inv" in rate_at and "inv_sqrt" in rate_at:
        pr = A.paired_ratio(rate.sel(scaling="inv_sqrt", width=wmax).values, rate.sel(scaling="inv", width=wmax).values, conf)
        if pr["n"]:
            finding += f", ratio inv_sqrt/inv {D.fmt(pr['ratio'])} (paired by seed, {pr['n']} pair(s))"
    finding += D.diverged_clause(sub)
    return cv, finding

register(Analysis(
    name="scaling_comparison", section="scaling", paper="claim 4",
    summary="tau0 = d_m^-1/2 vs d_m^-1: fitted rate and attention deviation vs width",
    requires=Requires(axes={"scaling": 2}), numbers=scaling_comparison,
    caption="""**Softmax scaling comparison** (claim 4): left, the fitted linear rate against width for
tau0 = d_m^-1/2 and d_m^-1 (init LeCun when present); right, the mean deviation of attention from
uniform ``mean |A - 1/d_s|`` at initialisation against width, with fitted slopes (theory: 0 under
inv_sqrt, -0.5 under inv).""",
))


def attention_deviation(ds, settings) -> tuple:
    """Attention deviation from uniform at init vs width, per scaling and init, with width slopes."""
    ds, n = D.prepare(ds)
    conf = float(settings.get("confidence", 0.95))
    widths = A.axis_values(ds, "width")
    cv = Canvas("attention_deviation", 2)
    fits = {}
    for k, (sc, ini) in enumerate(D.groups(ds)):
        c = D.GROUP_COLORS[k % 10]
        s = ds.sel(scaling=sc, init=ini)
        for p, var in enumerate(("attention_deviation_mean", "attention_deviation_max")):
            x, y, st, sd = D.flat(s, s[var].isel(epoch=0, drop=True), "width")
            f = D.draw_runs_fit(cv, cv.ax(p), x, y, st, sd, c, f"{ini}/{sc}", var, var, "width",
                               dict(scaling=sc, init=ini, n_samples=n), D.group_label(init=ini, scaling=sc), conf)
            if p == 0:
                fits[(sc, ini)] = f
    for p, lab in enumerate(("mean |A - 1/d_s| at epoch 0", "max |A - 1/d_s| at epoch 0")):
        ax = cv.ax(p)
        ax.set(xlabel="width", ylabel=lab, title=f"attention deviation at init{D.note_n(n)}")
        D.set_log(ax, "x", widths)
        D.set_log(ax, "y", ds["attention_deviation_mean" if p == 0 else "attention_deviation_max"].isel(epoch=0).values)
    parts = "; ".join(f"{ini}/{sc} {D.ci(f)}" + (f" (theory {THEORY_DEVIATION_SLOPE[sc]:g})" if sc in THEORY_DEVIATION_SLOPE else "")
                      for (sc, ini), f in fits.items())
    return cv, f"width slope of the mean attention deviation at init: {parts}" + D.diverged_clause(ds)

register(Analysis(
    name="attention_deviation", section="scaling", paper="claim 5",
    summary="mean and max |A - 1/d_s| at init vs width, slopes",
    requires=Requires(axes={"width": 2}), numbers=attention_deviation,
    caption="""**Attention deviation at initialisation** (claim 5): mean (left) and maximum (right) of
``|A - 1/d_s|`` over samples and entries at epoch 0 against width, one series per init and scaling,
with fitted log-log slopes (theory: -0.5 under tau0 = d_m^-1, 0 under d_m^-1/2).""",
))
