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
    """The regime map of claim 4: the rate ratio tau0 = d_m^-1/2 over d_m^-1 against width in every framing
    (`stats.comparison_by_width`: measured at each step setting where trained, the kernel's prediction
    from K_0 at a common step and at each scaling's own limit at every width), with the band of no
    material difference; and the attention deviation at init against width per scaling."""
    ds, n = D.prepare(ds)
    ini = stats.preferred(stats.axis_values(ds, "init"), "lecun", "he")
    conf = float(settings["confidence"])
    widths = stats.axis_values(ds, "width")
    sub = ds.sel(init=ini)
    if not {"inv_sqrt", "inv"} <= set(stats.axis_values(sub, "scaling")):
        cv = Canvas("scaling_comparison", 1)
        return cv, D.empty(cv, "scaling_comparison needs scalings inv_sqrt and inv")
    cv = Canvas("scaling_comparison", 2, aspect=0.8)
    by_width = stats.comparison_by_width(sub, "scaling", "inv_sqrt", "inv", settings)
    ratio = D.draw_comparison(cv, cv.ax(0), sub, by_width, r"$d_m^{-1/2}$", r"$d_m^{-1}$", "rate ratio", settings,
                              dict(init=ini, n_samples=n))
    cv.ax(0).set_title(f"(a) rate ratio of the scalings, {D.INIT_LABEL.get(ini, ini)}")
    # attention deviation at init vs width per scaling
    ax = cv.ax(1)
    base, _ = D.first_step(ds)
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
    ax.set(xlabel="width", ylabel=r"mean $|A - 1/d_s|$ at epoch 0", title="(b) attention deviation at init")
    D.set_log(ax, "x", widths)
    D.set_log(ax, "y", [r["y"] for r in cv.rows if r["quantity"] == "attention_deviation_mean"])
    cv.title = r"Softmax scaling: $\tau_0 = d_m^{-1/2}$ against $d_m^{-1}$"
    dev = ", ".join(f"{D.scaling_words(sc)} {D.ci(f)}" for sc, f in dev_fit.items())
    regime = _logit_regime(ds)
    finding = (f"rate ratio (tau0 = d_m^-1/2) / (tau0 = d_m^-1), {D.init_words(ini)}{D.note_n(n)}: {ratio}; "
               f"width slope of the attention deviation at init: {dev}" + (f"; {regime}" if regime else ""))
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
    """Claim 5's attention contrast: the mean attention deviation from uniform at init and after training
    (the last finite epoch: `stats.final_value`) against width, one series per init x scaling, with slopes;
    the finding compares the scalings at init and after training and says how far training moved attention."""
    ds, n = D.prepare(ds)
    ds, _ = D.first_step(ds)
    conf = float(settings["confidence"])
    widths = stats.axis_values(ds, "width")
    cv = Canvas("attention_deviation", 2, aspect=0.8)
    fits, moved = {}, {}
    for k, (sc, ini) in enumerate(D.groups(ds)):
        sty = D.group_style(sc, ini, k)
        s = ds.sel(scaling=sc, init=ini)
        d0 = s["attention_deviation_mean"].isel(epoch=0, drop=True)
        dE = stats.final_value(s, "attention_deviation_mean")
        for p, (label, da) in enumerate((("at init", d0), ("after training", dE))):
            x, y, st, sd = D.flat(s, da, "width")
            if p == 0:  # every run, kernel-only ones included, has its attention at initialisation
                st = np.where(st == stats.STATUS_KERNEL_ONLY, stats.STATUS_COMPLETE, st)
            f = D.draw_runs_fit(cv, cv.ax(p), x, y, st, sd, sty["color"], D.group_text(sc, ini),
                                f"attention deviation {label}", "attention_deviation_mean", "width",
                                dict(scaling=sc, init=ini, n_samples=n), D.group_label(init=ini, scaling=sc, when=label),
                                conf, marker=sty["marker"], ls=sty["ls"])
            fits[(sc, ini, label)] = f
        rel = (abs(dE - d0) / d0).where(s["status"] == stats.STATUS_COMPLETE)
        moved[(sc, ini)] = D.median(rel.values)
    for p, label in enumerate(("(a) at init (epoch 0)", "(b) after training (last epoch)")):
        ax = cv.ax(p)
        ax.set(xlabel="width", ylabel=r"mean $|A - 1/d_s|$", title=f"{label}{D.note_n(n)}")
        D.set_log(ax, "x", widths)
        D.set_log(ax, "y", [r["y"] for r in cv.rows if r["quantity"] == "attention_deviation_mean"])
    cv.title = "Attention deviation from uniform, at init and after training"
    parts = []
    for sc, ini in D.groups(ds):
        theory = THEORY_DEVIATION_SLOPE.get(sc)
        part = (f"{D.group_words(sc, ini)}: at init {D.ci(fits[(sc, ini, 'at init')])}"
                + (f" (theory {theory:g})" if theory is not None else ""))
        after = fits[(sc, ini, "after training")]
        part += (f", after training {D.ci(after)}" if np.isfinite(after["slope"])
                 else f", after training: {after['n']} trained run(s), too few for a slope")
        if np.isfinite(moved[(sc, ini)]):
            part += f" (training moved it by {D.fmt(moved[(sc, ini)], 2)} of its initial value, median run)"
        parts.append(part)
    regime = _logit_regime(ds)
    return cv, ("width slope of the mean attention deviation: " + "; ".join(parts) + (f"; {regime}" if regime else "")
                + D.diverged_clause(ds))


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
