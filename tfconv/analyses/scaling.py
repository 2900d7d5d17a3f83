"""The softmax scaling tau0 (claims 4 and 5): the rate ratio of the two scalings across widths and the
attention deviation from uniform, at initialisation and after training.

Each analysis: a numbers function (aggregate, settings -> Canvas and finding) and its `register`
call; see `tfconv.registry`.
"""
from __future__ import annotations

import numpy as np

from ..figures.canvas import Canvas
from ..registry import Analysis, register
from . import draw as D
from . import stats

#: Theory's width slope of the attention deviation at init (science.md section 3).
THEORY_DEVIATION_SLOPE = {"inv": -0.5, "inv_sqrt": 0.0}


def _logit_regime(ds) -> str:
    """A short note of the data's token norm (which decides whether attention logits are O(1))."""
    meta = stats.attr_dict(ds, "dataset")
    norm, d = meta.get("token_norm"), meta.get("d")
    if norm is None or d is None:
        return ""
    regime = "O(1) logits under inv_sqrt" if float(norm) ** 2 >= 0.5 * float(d) else "logits O(1/d): attention uniform under both"
    return f"tokens of norm {float(norm):.3g} (d = {d}): {regime}"


def scaling_comparison(ds, settings) -> tuple:
    """Rate ratio inv_sqrt/inv vs width (measured, paired by seed; linearised prediction at every width
    including kernel-only ones) and attention deviation at init vs width."""
    ds, n = D.prepare(ds)
    ini = stats.preferred(stats.axis_values(ds, "init"), "lecun", "he")
    steps = stats.axis_values(ds, "step_size") or [None]
    conf = float(settings["confidence"])
    cv = Canvas("scaling_comparison", len(steps) + 1)
    parts = []
    widths = stats.axis_values(ds, "width")
    for si, step in enumerate(steps):
        sub = (ds.sel(step_size=step) if step is not None else ds).sel(init=ini)
        st_label = f"step {step}" if step is not None else f"step {ds.attrs.get('step', '?')}"
        ax = cv.ax(si)
        have_both = {"inv_sqrt", "inv"} <= set(stats.axis_values(sub, "scaling"))
        if not have_both:
            D.empty(cv, "scaling_comparison needs scalings inv_sqrt and inv")
            continue
        for var, label, style in (("loss", "measured", dict(marker="o", ls="-")),
                                  ("loss_linearised", "linearised", dict(marker="", ls=":"))):
            r = stats.rates(sub, settings, var)["rate"]
            xs, ys, lo, hi = [], [], [], []
            for w in widths:
                res = stats.paired_ratio(r.sel(scaling="inv_sqrt", width=w).values, r.sel(scaling="inv", width=w).values, conf)
                xs.append(w)
                ys.append(res["ratio"])
                lo.append(res["ci_low"])
                hi.append(res["ci_high"])
            xs, ys, lo, hi = (np.asarray(v, dtype=float) for v in (xs, ys, lo, hi))
            fin = np.isfinite(ys)
            if fin.any():
                ax.plot(xs[fin], ys[fin], color="k", label=f"{label} (geometric mean over seeds)", ms=4, **style)
                band = fin & np.isfinite(lo) & np.isfinite(hi)
                if var == "loss" and band.any():
                    ax.fill_between(xs[band], lo[band], hi[band], color="k", alpha=0.12, lw=0)
                    cv.band_drawn = True
            stat = "mean" if var == "loss" else "predicted"
            cv.record(f"ratio, {st_label}", f"rate_ratio_{var}", "width", xs, ys, stat, init=ini)
            if var == "loss":
                cv.record(f"ratio, {st_label}", f"rate_ratio_{var}", "width", xs, lo, "low", init=ini)
                cv.record(f"ratio, {st_label}", f"rate_ratio_{var}", "width", xs, hi, "high", init=ini)
                w, res = stats.ratio_at_largest_width(r.sel(scaling="inv_sqrt"), r.sel(scaling="inv"), conf)
                if res["n"]:  # the claims table's width and number (claim 4a)
                    parts.append(f"{st_label}: measured ratio inv_sqrt/inv {D.fmt(res['ratio'])} "
                                 f"[{D.fmt(res['ci_low'])}, {D.fmt(res['ci_high'])}] at width {float(w):g}")
            else:
                if fin.any():
                    parts.append(f"linearised {D.fmt(ys[fin][-1])} at width {xs[fin][-1]:g}")
        ax.axhline(1.0, color="grey", lw=0.8, ls="-", label="equal rates")
        ax.set(xlabel="width", ylabel=r"rate($\tau_0=d_m^{-1/2}$) / rate($\tau_0=d_m^{-1}$)",
               title=f"{D.INIT_LABEL.get(ini, ini)}, {st_label}")
        D.set_log(ax, "x", widths)
        D.set_log(ax, "y", [r["y"] for r in cv.rows if r["quantity"].startswith("rate_ratio")])
    # attention deviation at init vs width per scaling
    ax = cv.ax(len(steps))
    base = ds.sel(step_size=steps[0]) if steps[0] is not None else ds
    dev_fit = {}
    for k, sc in enumerate(stats.axis_values(base, "scaling")):
        s = base.sel(init=ini, scaling=sc)
        sty = D.group_style(sc, ini, k)
        x, y, st, sd = D.flat(s, s["attention_deviation_mean"].isel(epoch=0, drop=True), "width")
        st = np.where(st == stats.STATUS_KERNEL_ONLY, stats.STATUS_COMPLETE, st)  # init values exist for kernel-only runs
        theory = THEORY_DEVIATION_SLOPE.get(sc)
        dev_fit[sc] = D.draw_runs_fit(cv, ax, x, y, st, sd, sty["color"],
                                      D.scaling_text(sc) + (f" (theory {theory:g})" if theory is not None else ""),
                                      "attention deviation at init", "attention_deviation_mean", "width",
                                      dict(scaling=sc, init=ini, n_samples=n), D.group_label(init=ini, scaling=sc), conf,
                                      marker=sty["marker"], ls=sty["ls"])
    ax.set(xlabel="width", ylabel=r"mean $|A - 1/d_s|$ at epoch 0", title="attention deviation at init")
    D.set_log(ax, "x", widths)
    D.set_log(ax, "y", base["attention_deviation_mean"].isel(epoch=0).values)
    cv.title = r"Softmax scaling: $\tau_0 = d_m^{-1/2}$ against $d_m^{-1}$"
    dev = ", ".join(f"{sc} {D.ci(f)}" for sc, f in dev_fit.items())
    regime = _logit_regime(ds)
    finding = "; ".join(parts) + f"; attention-deviation width slope {dev}" + (f"; {regime}" if regime else "")
    return cv, finding + D.diverged_clause(ds)


register(Analysis(
    name="scaling_comparison", section="scaling", paper="claim 4",
    summary="rate ratio tau0 = d_m^-1/2 over d_m^-1 vs width (measured and linearised) and attention deviation at init",
    numbers=scaling_comparison, claims=(4,),
    caption="""**Softmax scaling comparison** (claim 4): the ratio of late-window rates
rate(tau0 = d_m^-1/2) / rate(tau0 = d_m^-1) against width, LeCun when present: measured (solid, the
geometric mean over seeds paired by seed, with its interval shaded) at the widths that were trained,
and the ratio of the linearised predictions from K_0 (dotted) at every width, kernel-only widths
included (``train.max_gd_width``). Above 1: inv_sqrt is faster. The finding quotes the measured ratio
at the largest width with two seed pairs or more (the width and number of the claims table). Last panel: the mean deviation of
attention from uniform ``mean |A - 1/d_s|`` at initialisation against width (theory: slope 0 under
inv_sqrt, -0.5 under inv). Which regime the data put the model in (O(1) attention logits or uniform
attention under both scalings) is stated in the finding.""",
))


def attention_deviation(ds, settings) -> tuple:
    """Mean attention deviation from uniform at init and at the end of training vs width, per group."""
    ds, n = D.prepare(ds)
    ds, _ = D.first_step(ds)
    conf = float(settings["confidence"])
    widths = stats.axis_values(ds, "width")
    cv = Canvas("attention_deviation", 2)
    fits = {}
    for k, (sc, ini) in enumerate(D.groups(ds)):
        sty = D.group_style(sc, ini, k)
        s = ds.sel(scaling=sc, init=ini)
        for p, (label, da) in enumerate((("at init", s["attention_deviation_mean"].isel(epoch=0, drop=True)),
                                         ("after training", stats.final_value(s, "attention_deviation_mean")))):
            x, y, st, sd = D.flat(s, da, "width")
            if p == 0:
                st = np.where(st == stats.STATUS_KERNEL_ONLY, stats.STATUS_COMPLETE, st)
            f = D.draw_runs_fit(cv, cv.ax(p), x, y, st, sd, sty["color"], D.group_text(sc, ini),
                                f"attention deviation {label}", "attention_deviation_mean", "width",
                                dict(scaling=sc, init=ini, n_samples=n), D.group_label(init=ini, scaling=sc, when=label),
                                conf, marker=sty["marker"], ls=sty["ls"])
            fits[(sc, ini, label)] = f
    for p, label in enumerate(("at init (epoch 0)", "after training (last epoch)")):
        ax = cv.ax(p)
        ax.set(xlabel="width", ylabel=r"mean $|A - 1/d_s|$", title=f"attention deviation {label}{D.note_n(n)}")
        D.set_log(ax, "x", widths)
        D.set_log(ax, "y", [r["y"] for r in cv.rows if r["quantity"] == "attention_deviation_mean"])
    cv.title = "Attention deviation from uniform"
    parts = "; ".join(f"{ini}/{sc} {label} {D.ci(f)}" + (f" (theory at init {THEORY_DEVIATION_SLOPE[sc]:g})"
                                                         if sc in THEORY_DEVIATION_SLOPE and label == "at init" else "")
                      for (sc, ini, label), f in fits.items())
    regime = _logit_regime(ds)
    return cv, f"width slope of the mean attention deviation: {parts}" + (f"; {regime}" if regime else "") + D.diverged_clause(ds)


register(Analysis(
    name="attention_deviation", section="scaling", paper="claim 5",
    summary="mean |A - 1/d_s| at init and after training vs width, slopes",
    numbers=attention_deviation, claims=(),
    caption="""**Attention deviation from uniform** (claim 5): the mean of ``|A - 1/d_s|`` over samples and
entries at initialisation (left; its width slope is fixed by the scaling: -0.5 under tau0 = d_m^-1, 0
under d_m^-1/2, a check of the model) and after training (right; an empirical question: does attention
stay uniform?), against width, one series per init (colour, marker) and scaling (line style), with
fitted log-log slopes over every completed run.""",
))
