"""The kernel regime (appendix Fig. 9 and beyond): the empirical NTK's change during training, its
spectrum at initialisation, lazy training.  (The kernel itself, K_0 and the linearised dynamics every
run records, is `tfconv.core.kernel`; this module only reads the aggregate.)

Each analysis: a numbers function (aggregate, settings -> Canvas and finding) and its `register`
call; see `tfconv.registry`.
"""
from __future__ import annotations

import numpy as np

from ..core.model import PARAM_NAMES
from ..figures.canvas import Canvas
from ..registry import Analysis, register
from . import draw as D
from . import stats

#: the weight matrices as figure labels
MATRIX_LABEL = {"Wq": r"$W_q$", "Wk": r"$W_k$", "Wv": r"$W_v$", "Wh": r"$W_h$", "wo": r"$w_o$"}
#: one colour, line style and width per matrix: W_q and W_k move alike (their roles in the logits are
#: symmetric), so W_q is drawn wide and light and W_k thin and dark on top of it: both stay visible
MATRIX_STYLE = {"Wq": dict(color="#ff7f0e", ls="-", lw=2.2, alpha=0.6), "Wk": dict(color="#1a1a1a", ls="--", lw=0.9),
                "Wv": dict(color="#d62728", ls="-.", lw=1.0), "Wh": dict(color="#8c564b", ls=":", lw=1.3),
                "wo": dict(color="#e377c2", ls=(0, (5, 1)), lw=1.0)}


def _trained(sub):
    """The widths of `sub` with a run that trained (complete or diverged; not kernel-only or missing)."""
    return [w for w in stats.axis_values(sub, "width") if D.trained(sub.sel(width=w))]


def _median_at(values, w) -> float:
    return D.median(values.sel(width=w).values)


def figure9(ds, settings) -> tuple:
    """Appendix Fig. 9 under tau0 = d_m^-1 and, in the row below, under d_m^-1/2 (claim 5's contrast):
    the loss, the weight change of each matrix at the widest trained width, the weight change of all
    weights per width and the NTK change (log axis) per width at the checkpoints after 0."""
    ds, n = D.prepare(ds)
    ds, _ = D.first_step(ds)
    scalings = stats.axis_values(ds, "scaling")
    rows = [s for s in ("inv", "inv_sqrt") if s in scalings] or scalings[:2]
    ini = stats.preferred(stats.axis_values(ds, "init"), "lecun")
    per_matrix = any(f"weight_change_{k}" in ds for k in PARAM_NAMES)
    has_kernel = bool(np.isfinite(stats.final_kernel_change(ds)).any())  # a kernel change after checkpoint 0
    cols = ["loss"] + (["matrix"] if per_matrix else []) + ["weights"] + (["kernel"] if has_kernel else [])
    nc = len(cols)
    cv = Canvas("figure9", nc * len(rows), ncols=nc, legend="figure", aspect=0.95)
    thr = float(settings["kernel_change_threshold"])
    summary = []
    for r, sc in enumerate(rows):
        sub = ds.sel(scaling=sc, init=ini)
        widths = _trained(sub)
        if not widths:  # nothing trained: the kernel's prediction of the loss, nothing else moves
            widths_all = stats.axis_values(sub, "width")
        sub_t = sub.sel(width=widths) if widths else sub
        colors = D.colors(len(stats.axis_values(ds, "width")))
        cmap = dict(zip(stats.axis_values(ds, "width"), colors))
        ax = {c: cv.ax(nc * r + j) for j, c in enumerate(cols)}
        letter = {c: chr(97 + nc * r + j) for j, c in enumerate(cols)}
        for w in (widths or widths_all):
            g = dict(width=w, scaling=sc, init=ini, n_samples=n)
            s = sub.sel(width=w)
            var = "loss" if widths else "loss_linearised"
            D.draw_seed_curves(cv, ax["loss"], s, var, "epoch", cmap[w], f"width {w}", f"loss {sc}", g)
            if not widths:
                continue
            moved = s.sel(epoch=s["epoch"] > 0)  # the change is 0 at epoch 0: no point on the log axis
            D.draw_seed_curves(cv, ax["weights"], moved, "weight_change", "epoch", cmap[w], f"width {w}",
                               f"weight_change {sc}", g)
            if has_kernel:
                later = s.sel(checkpoint_epoch=s["checkpoint_epoch"] > 0)  # K_0 against itself is 0: no log point
                D.draw_seed_curves(cv, ax["kernel"], later, "kernel_change", "checkpoint_epoch", cmap[w], f"width {w}",
                                   f"kernel_change {sc}", g, marker="o")
        if per_matrix and widths:
            s = sub.sel(width=widths[-1])
            s = s.sel(epoch=s["epoch"] > 0)  # 0 at epoch 0: no point on the log axis
            for name in PARAM_NAMES:
                var = f"weight_change_{name}"
                if var in s:
                    sty = MATRIX_STYLE.get(name, {})
                    D.draw_seed_curves(cv, ax["matrix"], s, var, "epoch", sty.get("color", "k"), MATRIX_LABEL.get(name, name),
                                       f"weight_change per matrix {sc}", dict(width=widths[-1], scaling=sc, init=ini),
                                       ls=sty.get("ls", "-"), band=False, marker="", lw=sty.get("lw"),
                                       alpha=sty.get("alpha"))
        if has_kernel:
            ax["kernel"].axhline(thr, color="grey", lw=0.7, ls="--", label=f"claim 5 threshold {thr:g}")
        D.set_log(ax["loss"], "y", D.values_of_good_runs(sub_t, "loss" if widths else "loss_linearised"))
        D.log_ylim(ax["loss"], D.values_of_good_runs(sub_t, "loss" if widths else "loss_linearised"))
        if per_matrix:
            D.set_log(ax["matrix"], "y", [v for k in PARAM_NAMES if f"weight_change_{k}" in sub_t
                                          for v in sub_t[f"weight_change_{k}"].values.ravel()])
        D.set_log(ax["weights"], "y", sub_t["weight_change"].values if widths else [])
        if has_kernel:
            kc = sub_t["kernel_change"].where(sub_t["checkpoint_epoch"] > 0).values if widths else np.array([])
            D.set_log(ax["kernel"], "y", list(np.ravel(kc)) + [thr])
        titles = {"loss": f"loss, {D.scaling_text(sc)}", "matrix": f"per matrix, width {widths[-1] if widths else '-'}",
                  "weights": "all weights", "kernel": "NTK change"}
        ylabels = {"loss": "training loss", "matrix": r"$\|W_t - W_0\|_F / \|W_0\|_F$",
                   "weights": r"$\|\theta_t - \theta_0\|_F / \|\theta_0\|_F$", "kernel": r"$\|K_t - K_0\|_F / \|K_0\|_F$"}
        for c in cols:
            ax[c].set(xlabel="checkpoint epoch" if c == "kernel" else "epoch", ylabel=ylabels[c],
                      title=f"({letter[c]}) {titles[c]}")
        if widths:
            kce = stats.final_kernel_change(sub_t)
            wce = stats.final_value(sub_t, "weight_change")
            summary.append((sc, widths, [_median_at(wce, w) for w in widths], [_median_at(kce, w) for w in widths]))
        else:
            summary.append((sc, [], [], []))
    cv.title = f"Appendix Fig. 9: training under {D.scaling_text(rows[0])} and {D.scaling_text(rows[-1])}, " \
               f"{D.INIT_LABEL.get(ini, ini)}" if len(rows) > 1 else \
               f"Appendix Fig. 9: training under {D.scaling_text(rows[0])}, {D.INIT_LABEL.get(ini, ini)}"
    parts = []
    for sc, widths, fw, fk in summary:
        if not widths:
            parts.append(f"under {D.scaling_words(sc)}: no trained width")
            continue
        span = (lambda v: f"{D.fmt(v[0])} at width {widths[0]} -> {D.fmt(v[-1])} at width {widths[-1]}"
                if len(widths) > 1 else f"{D.fmt(v[-1])} at width {widths[-1]}")
        parts.append(f"under {D.scaling_words(sc)}: " + (f"final NTK change {span(fk)}, " if np.isfinite(fk).any() else "")
                     + f"final weight change {span(fw)}")
    finding = f"{D.init_words(ini)} (median seed, last checkpoint / last epoch): " + "; ".join(parts) + \
        (f" (claim 5 threshold for the NTK change {thr:g})" if has_kernel else "; no kernel change after checkpoint 0")
    return cv, finding + D.diverged_clause(ds.sel(scaling=rows, init=ini))


register(Analysis(
    name="figure9", section="kernel_regime", paper="App. Fig. 9",
    summary="loss, per-matrix and total weight change, NTK change (log) per epoch and width under tau0 = d_m^-1 and, below, d_m^-1/2",
    numbers=figure9, claims=(5,),
    caption="""**Appendix Fig. 9** under tau0 = d_m^-1 (LeCun when present; the tau0 = d_m^-1/2 row below for
comparison): (a) training loss; (b) weight change ``|W_t - W_0|_F / |W_0|_F`` of each weight matrix at
the widest trained width (line style per matrix), then of all weights per width; (c) NTK change
``|K_t - K_0|_F / |K_0|_F`` (``K_t = J_t J_t^T``, output-averaged) at the checkpoint epochs
{checkpoint_epochs}, on a log axis, with the threshold {kernel_change_threshold} that claim 5 asks
the widest width to reach. One colour per width (seed mean and band).""",
))


def spectrum(ds, settings) -> tuple:
    """lambda_min(K_0) and lambda_max(K_0) vs width for every init x scaling, log-log with slopes.
    lambda_min(K_0) values below the precision of K (`stats.lambda_min0_verdict`) are drawn as open
    down-triangles at their upper bound (`draw.mark_below_precision`), left out of the seed means and the
    fits, and counted in the finding."""
    ds, n = D.prepare(ds)
    ds, _ = D.first_step(ds)
    conf = float(settings["confidence"])
    widths = stats.axis_values(ds, "width")
    has_density = "spectral_density_K0" in ds and bool(np.isfinite(ds["spectral_density_K0"].values).any())
    cv = Canvas("spectrum", 3 if has_density else 2)
    fits = {}
    below_label = True
    n_below = n_resolved = 0
    resolved_values, upper_values = [], []
    for k, (sc, ini) in enumerate(D.groups(ds)):
        sty = D.group_style(sc, ini, k)
        s = ds.sel(scaling=sc, init=ini)
        ver = np.asarray(stats.lambda_min0_verdict(s).transpose("width", "seed").values).astype(str).ravel()
        for p, var in enumerate(("lambda_min", "lambda_max")):
            x, y, st, sd = D.flat(s, stats.epoch0_kernel(s, var), "width")
            st = np.where(st == stats.STATUS_KERNEL_ONLY, stats.STATUS_COMPLETE, st)  # K_0 exists for kernel-only runs
            if var == "lambda_min":
                present = (st != stats.STATUS_MISSING) & np.isfinite(y)
                below = present & (ver == stats.BELOW_PRECISION)
                n_below += int(below.sum())
                n_resolved += int((present & (ver == stats.RESOLVED)).sum())
                _, err, _, _ = D.flat(s, stats.epoch0_kernel(s, "lambda_min_error"), "width")
                ub = D.upper_bound(y, err)
                D.mark_below_precision(cv.ax(p), x[below], ub[below], sty["color"], label=below_label and below.any())
                below_label = below_label and not below.any()
                g = dict(scaling=sc, init=ini, n_samples=n)
                for xi, yi, ui, sti, sdi in zip(x[below], y[below], ub[below], st[below], sd[below]):
                    cv.record("lambda_min(K_0)", "lambda_min_K0", "width", xi, yi, "below_precision",
                              **dict(g, width=xi, seed=sdi, status=sti))
                    cv.record("lambda_min(K_0)", "lambda_min_K0", "width", xi, ui, "upper_bound",
                              **dict(g, width=xi, seed=sdi, status=sti))
                resolved_values += list(y[present & ~below])
                upper_values += list(ub[below])
                st = np.where(below, stats.STATUS_MISSING, st)  # drawn above: not a run point, not in means or fits
            fits[(sc, ini, var)] = D.draw_runs_fit(cv, cv.ax(p), x, y, st, sd, sty["color"], D.group_text(sc, ini),
                                                   f"{var}(K_0)", f"{var}_K0", "width",
                                                   dict(scaling=sc, init=ini, n_samples=n),
                                                   D.group_label(init=ini, scaling=sc), conf,
                                                   marker=sty["marker"], ls=sty["ls"])
    for p, (var, lab) in enumerate((("lambda_min", r"$\lambda_{\min}(K_0)$"), ("lambda_max", r"$\lambda_{\max}(K_0)$"))):
        ax = cv.ax(p)
        ax.set(xlabel="width", ylabel=lab, title=f"({chr(97 + p)}) {lab}{D.note_n(n)}")
        D.set_log(ax, "x", widths)
        D.set_log(ax, "y", resolved_values + upper_values if var == "lambda_min" else stats.epoch0_kernel(ds, var).values)
    cv.title = "NTK spectrum at initialisation"
    lmin = "; ".join(f"{D.group_words(sc, ini)} {D.ci(f)}" for (sc, ini, v), f in fits.items() if v == "lambda_min")
    lmax = "; ".join(f"{D.group_words(sc, ini)} {D.ci(f)}" for (sc, ini, v), f in fits.items() if v == "lambda_max")
    smallest = np.nanmin(resolved_values) if np.any(np.isfinite(resolved_values)) else np.nan
    density = _draw_density(cv, cv.ax(2), ds, n) if has_density else (
        "no spectral density of K_0 (no K_0 Gram stored its eigenvalues or an SLQ density)")
    precision = ""
    if n_below or n_resolved:
        precision = f"lambda_min(K_0) resolved in {n_resolved} of {n_resolved + n_below} runs" + (
            f", {n_below} below the precision of K (open triangles at their upper bound, not fitted)" if n_below else "")
        precision += "; "
    return cv, (f"width slope of lambda_min(K_0): {lmin}; of lambda_max(K_0): {lmax}; {precision}"
                f"smallest {'resolved ' if n_below else ''}lambda_min(K_0) {D.fmt(smallest)}; {density}"
                + D.diverged_clause(ds))


#: how each spectral density was obtained, as the legend says it
DENSITY_METHOD = {"dense": "eigenvalues", "slq": "SLQ"}


def _draw_density(cv: Canvas, ax, ds, n) -> str:
    """Spectral density of K_0 per width (default init and scaling; mean over the seeds that have one),
    on the aggregate's log-spaced bins; returns the finding's clause (which method drew each width,
    which widths have none)."""
    sc, ini = D.default_group(ds)
    s = ds.sel(scaling=sc, init=ini)
    centres = np.asarray(ds["spectrum_bin"].values, dtype=float)
    widths = stats.axis_values(s, "width")
    colors = D.colors(len(widths))
    by_method, missing = {}, []
    for k, (w, c) in enumerate(zip(widths, colors)):
        sw = s.sel(width=w)
        meth = np.asarray(sw["spectral_density_method"].values).astype(str).ravel()
        dens = np.asarray(sw["spectral_density_K0"].transpose("seed", "spectrum_bin").values, dtype=float)
        have = np.isfinite(dens).all(axis=1) & (meth != "none")
        if not have.any():
            missing.append(w)
            continue
        y = dens[have].mean(axis=0)
        kinds = sorted(set(meth[have]))
        how = "+".join(DENSITY_METHOD.get(k, k) for k in kinds)
        by_method.setdefault(how, []).append(w)
        y = np.where(y > 0, y, np.nan)  # empty bins: no point on the log axis
        # each width's markers smaller than the previous one's: a bin two widths share shows both
        ax.plot(centres, y, color=c, marker="o", ms=max(1.2, 3.6 - 0.4 * k), lw=1.0,
                ls="-" if "slq" not in kinds else "--", label=f"width {w} ({how}, {int(have.sum())} seed(s))")
        cv.record("spectral density", "spectral_density_K0", "lambda", centres[np.isfinite(y)], y[np.isfinite(y)],
                  "mean", width=w, scaling=sc, init=ini, n_samples=n)
    edges = np.asarray(ds["spectral_density_K0"].attrs.get("bin_edges", [np.nan, np.nan]), dtype=float)
    ax.set(xlabel=r"eigenvalue $\lambda$ of $K_0$", ylabel="fraction of eigenvalues per bin",
           title="(c) spectral density of $K_0$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    drawn = [r["y"] for r in cv.rows if r["quantity"] == "spectral_density_K0"]
    if drawn:
        ax.set_ylim(min(drawn) / 2, min(1.0, max(drawn) * 2))
    parts = [f"{how} for width(s) {', '.join(str(w) for w in ws)}" for how, ws in by_method.items()]
    clause = (f"spectral density of K_0 ({D.group_words(sc, ini)}, {centres.size} log bins over "
              f"[{D.fmt(edges[0])}, {D.fmt(edges[-1])}]): " + "; ".join(parts))
    if missing:
        clause += f"; none for width(s) {', '.join(str(w) for w in missing)} (no eigenvalues or SLQ density stored)"
    return clause


register(Analysis(
    name="spectrum", section="kernel_regime", paper="beyond",
    summary="lambda_min(K_0) and lambda_max(K_0) vs width, slopes; spectral density of K_0 per width",
    numbers=spectrum,
    caption="""**NTK spectrum at initialisation**: ``lambda_min(K_0)`` (left) and ``lambda_max(K_0)`` (middle)
of the empirical NTK ``K_0 = J_0 J_0^T`` against width, one series per init (colour, marker) and scaling
(line style), with fitted log-log slopes (kernel-only widths included). A lambda_min(K_0) below the precision
of K (its verdict: value <= its error estimate) is drawn as an open down-triangle at its upper bound
max(value, 0) + error, left out of the means and fits; the finding counts them. lambda_min governs the theory's
rate, lambda_max the stability limit of the step. Right, when the Gram store holds it: the spectral
density of ``K_0`` per width (colour; LeCun and tau0 = d_m^-1/2 when present, mean over seeds), the
fraction of eigenvalues in each of the log-spaced bins over [min lambda_min, max lambda_max]: from
every eigenvalue (solid; Grams up to ``gram.spectrum_dense_max`` rows) or from stochastic Lanczos
quadrature (dashed; larger Grams with ``gram.spectrum_slq_vectors`` > 0); the legend names the
method of each curve, the finding the widths with neither. Empty bins are not drawn; the point at
the far right is the outlier lambda_max.""",
))


def lazy_training(ds, settings) -> tuple:
    """Final weight change (last finite epoch) and final NTK change (last checkpoint after 0,
    `stats.final_kernel_change`) against width, log-log slopes per init and scaling, with the
    kernel-stability and claim-5 thresholds; kernel-only widths have no training and draw no point."""
    ds, n = D.prepare(ds)
    ds, _ = D.first_step(ds)
    conf = float(settings["confidence"])
    widths = stats.axis_values(ds, "width")
    has_kernel = bool(np.isfinite(stats.final_kernel_change(ds)).any())
    cv = Canvas("lazy_training", 2 if has_kernel else 1, aspect=0.8)
    fits, levels = {}, {}
    for k, (sc, ini) in enumerate(D.groups(ds)):
        sty = D.group_style(sc, ini, k)
        s = ds.sel(scaling=sc, init=ini)
        quantities = [("weight_change_final", stats.final_value(s, "weight_change"))]
        if has_kernel:
            quantities.append(("kernel_change_final", stats.final_kernel_change(s)))
        for p, (var, da) in enumerate(quantities):
            x, y, st, sd = D.flat(s, da, "width")
            fits[(sc, ini, var)] = D.draw_runs_fit(cv, cv.ax(p), x, y, st, sd, sty["color"], D.group_text(sc, ini),
                                                   var.replace("_", " "), var, "width",
                                                   dict(scaling=sc, init=ini, n_samples=n),
                                                   D.group_label(init=ini, scaling=sc), conf,
                                                   marker=sty["marker"], ls=sty["ls"])
            tw = _trained(s)
            if tw:
                levels[(sc, ini, var)] = (tw[-1], _median_at(da, tw[-1]))
    ks, kt = float(settings["kernel_stability"]), float(settings["kernel_change_threshold"])
    cv.ax(0).set(xlabel="width", ylabel=r"$\|\theta_E - \theta_0\|_F / \|\theta_0\|_F$",
                 title=f"(a) final weight change{D.note_n(n)}")
    if has_kernel:
        cv.ax(1).axhline(ks, color="grey", ls="--", lw=0.7, label=f"kernel regime {ks:g}")
        cv.ax(1).axhline(kt, color="grey", ls=":", lw=0.7, label=f"claim 5 threshold {kt:g}")
        cv.ax(1).set(xlabel="width", ylabel=r"$\|K_E - K_0\|_F / \|K_0\|_F$", title="(b) final NTK change")
    for p, var in enumerate(("weight_change_final", "kernel_change_final")[: 2 if has_kernel else 1]):
        D.set_log(cv.ax(p), "x", widths)
        D.set_log(cv.ax(p), "y", [r["y"] for r in cv.rows if r["quantity"] == var] + ([ks, kt] if p else []))
    cv.title = "Lazy training: how much weights and kernel move"

    def part(var):
        out = []
        for (sc, ini, v), f in fits.items():
            if v != var:
                continue
            lev = levels.get((sc, ini, v))
            out.append(f"{D.group_words(sc, ini)} slope {D.ci(f)}"
                       + (f", {D.fmt(lev[1])} at width {lev[0]}" if lev and np.isfinite(lev[1]) else ""))
        return "; ".join(out)

    finding = (f"final weight change against width: {part('weight_change_final')}; "
               + (f"final NTK change: {part('kernel_change_final')}" if has_kernel
                  else "no kernel change after checkpoint 0 (only K_0 stored)") + " (median seed at the widest trained width)")
    ko = [w for w in widths if not _trained(ds.sel(width=[w]))]
    if ko:
        finding += f"; width(s) {', '.join(str(w) for w in ko)} kernel only (not trained: no point)"
    return cv, finding + D.diverged_clause(ds)


register(Analysis(
    name="lazy_training", section="kernel_regime", paper="beyond",
    summary="final weight change and largest NTK change vs width, slopes, thresholds",
    numbers=lazy_training, claims=(5,),
    caption="""**Lazy training**: the final weight change ``|theta_E - theta_0|_F / |theta_0|_F`` (left) and the
largest NTK change ``max_t |K_t - K_0|_F / |K_0|_F`` over the checkpoints (right) against width, one
series per init (colour, marker) and scaling (line style), with fitted log-log slopes (negative: the
wider, the less weights and kernel move). Dashed: the kernel-regime threshold {kernel_stability} of
claims 1 and 2; dotted: claim 5's threshold {kernel_change_threshold}.""",
))
