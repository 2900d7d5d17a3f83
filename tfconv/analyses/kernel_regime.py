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
MATRIX_LS = {"Wq": "-", "Wk": "--", "Wv": "-.", "Wh": ":", "wo": (0, (5, 1))}


def _trained(sub):
    return [w for w in stats.axis_values(sub, "width") if (D.run_status(sub.sel(width=w)) != stats.STATUS_KERNEL_ONLY).any()]


def figure9(ds, settings) -> tuple:
    """Appendix Fig. 9 under tau0 = d_m^-1 (and its inv_sqrt row): (a) loss, (b) weight change per
    weight matrix at the widest width and in total per width, (c) NTK change (log axis) per width."""
    ds, n = D.prepare(ds)
    ds, _ = D.first_step(ds)
    scalings = stats.axis_values(ds, "scaling")
    rows = [s for s in ("inv", "inv_sqrt") if s in scalings] or scalings[:2]
    ini = stats.preferred(stats.axis_values(ds, "init"), "lecun")
    cv = Canvas("figure9", 4 * len(rows), ncols=4, panel_size=(4.2, 3.4))
    summary = []
    thr = float(settings["kernel_change_threshold"])
    for r, sc in enumerate(rows):
        sub = ds.sel(scaling=sc, init=ini)
        widths = _trained(sub)
        sub = sub.sel(width=widths)
        colors = D.colors(len(widths))
        finals_w, finals_k = [], []
        for w, c in zip(widths, colors):
            g = dict(width=w, scaling=sc, init=ini, n_samples=n)
            s = sub.sel(width=w)
            D.draw_seed_curves(cv, cv.ax(4 * r), s, "loss", "epoch", c, f"width {w}", f"loss {sc}", g)
            _, wm = D.draw_seed_curves(cv, cv.ax(4 * r + 2), s, "weight_change", "epoch", c, f"width {w}",
                                       f"weight_change {sc}", g)
            later = s.sel(checkpoint_epoch=s["checkpoint_epoch"] > 0)  # K_0 against itself is 0: no log point
            km = np.array([])
            if later.sizes["checkpoint_epoch"]:
                _, km = D.draw_seed_curves(cv, cv.ax(4 * r + 3), later, "kernel_change", "checkpoint_epoch", c,
                                           f"width {w}", f"kernel_change {sc}", g, marker="o")
            finals_w.append(wm[-1] if wm.size else np.nan)
            finals_k.append(km[-1] if km.size else np.nan)
        # (b) per weight matrix at the widest trained width (Fig. 9(b))
        if not any(f"weight_change_{k}" in sub for k in PARAM_NAMES):
            cv.ax(4 * r + 1).set_visible(False)
        elif widths:
            s = sub.sel(width=widths[-1])
            for name in PARAM_NAMES:
                var = f"weight_change_{name}"
                if var in s:
                    D.draw_seed_curves(cv, cv.ax(4 * r + 1), s, var, "epoch", "k", MATRIX_LABEL.get(name, name),
                                       f"weight_change per matrix {sc}", dict(width=widths[-1], scaling=sc, init=ini),
                                       ls=MATRIX_LS.get(name, "-"), band=False, marker="")
        if (sub["checkpoint_epoch"] > 0).any():
            cv.ax(4 * r + 3).axhline(thr, color="grey", lw=0.8, ls="--", label=f"threshold {thr:g}")
        else:  # only K_0 stored: no kernel change to draw
            cv.ax(4 * r + 3).set_visible(False)
        D.set_log(cv.ax(4 * r), "y", sub["loss"].values)
        D.set_log(cv.ax(4 * r + 1), "y", [v for k in PARAM_NAMES if f"weight_change_{k}" in sub
                                          for v in sub[f"weight_change_{k}"].values.ravel()])
        D.set_log(cv.ax(4 * r + 2), "y", sub["weight_change"].values)
        D.set_log(cv.ax(4 * r + 3), "y", list(sub["kernel_change"].values.ravel()) + [thr])
        titles = (f"(a) loss, {D.scaling_text(sc)}", f"(b) per matrix, width {widths[-1] if widths else '-'}",
                  "(b) all weights", "(c) NTK change")
        ylabels = ("training loss", r"$\|W_t - W_0\|_F / \|W_0\|_F$", r"$\|\theta_t - \theta_0\|_F / \|\theta_0\|_F$",
                   r"$\|K_t - K_0\|_F / \|K_0\|_F$")
        for j in range(4):
            cv.ax(4 * r + j).set(xlabel="checkpoint epoch" if j == 3 else "epoch", ylabel=ylabels[j], title=titles[j])
        summary.append((sc, widths, finals_w, finals_k))
    cv.title = f"Appendix Fig. 9: training under {D.scaling_text(rows[0])}, {D.INIT_LABEL.get(ini, ini)}"
    sc, widths, fw, fk = summary[0]
    if not widths:
        return cv, "no trained widths"
    finding = (f"under scaling {sc} ({ini}): final weight change {D.fmt(fw[0])} at width {widths[0]} to "
               f"{D.fmt(fw[-1])} at width {widths[-1]}; final NTK change {D.fmt(fk[0])} to {D.fmt(fk[-1])} "
               f"(threshold {thr:g})")
    if len(summary) > 1 and summary[1][1]:
        sc2, w2, fw2, fk2 = summary[1]
        finding += f"; under {sc2} at width {w2[-1]}: weight change {D.fmt(fw2[-1])}, NTK change {D.fmt(fk2[-1])}"
    return cv, finding + D.diverged_clause(ds.sel(scaling=rows, init=ini))


register(Analysis(
    name="figure9", section="kernel_regime", paper="App. Fig. 9",
    summary="loss, per-matrix and total weight change, NTK change (log) per epoch and width under tau0 = d_m^-1",
    numbers=figure9, claims=(5,),
    caption="""**Appendix Fig. 9** under tau0 = d_m^-1 (LeCun when present; the tau0 = d_m^-1/2 row below for
comparison): (a) training loss; (b) weight change ``|W_t - W_0|_F / |W_0|_F`` of each weight matrix at
the widest trained width (line style per matrix), then of all weights per width; (c) NTK change
``|K_t - K_0|_F / |K_0|_F`` (``K_t = J_t J_t^T``, output-averaged) at the checkpoint epochs
{checkpoint_epochs}, on a log axis, with the threshold {kernel_change_threshold} that claim 5 asks
the widest width to reach. One colour per width (seed mean and band).""",
))


def spectrum(ds, settings) -> tuple:
    """lambda_min(K_0) and lambda_max(K_0) vs width for every init x scaling, log-log with slopes."""
    ds, n = D.prepare(ds)
    ds, _ = D.first_step(ds)
    conf = float(settings["confidence"])
    widths = stats.axis_values(ds, "width")
    has_density = "spectral_density_K0" in ds and bool(np.isfinite(ds["spectral_density_K0"].values).any())
    cv = Canvas("spectrum", 3 if has_density else 2)
    fits = {}
    for k, (sc, ini) in enumerate(D.groups(ds)):
        sty = D.group_style(sc, ini, k)
        s = ds.sel(scaling=sc, init=ini)
        for p, var in enumerate(("lambda_min", "lambda_max")):
            x, y, st, sd = D.flat(s, stats.epoch0_kernel(s, var), "width")
            st = np.where(st == stats.STATUS_KERNEL_ONLY, stats.STATUS_COMPLETE, st)  # K_0 exists for kernel-only runs
            fits[(sc, ini, var)] = D.draw_runs_fit(cv, cv.ax(p), x, y, st, sd, sty["color"], D.group_text(sc, ini),
                                                   f"{var}(K_0)", f"{var}_K0", "width",
                                                   dict(scaling=sc, init=ini, n_samples=n),
                                                   D.group_label(init=ini, scaling=sc), conf,
                                                   marker=sty["marker"], ls=sty["ls"])
    for p, (var, lab) in enumerate((("lambda_min", r"$\lambda_{\min}(K_0)$"), ("lambda_max", r"$\lambda_{\max}(K_0)$"))):
        ax = cv.ax(p)
        ax.set(xlabel="width", ylabel=lab, title=f"{lab} at initialisation{D.note_n(n)}")
        D.set_log(ax, "x", widths)
        D.set_log(ax, "y", stats.epoch0_kernel(ds, var).values)
    cv.title = "NTK spectrum at initialisation"
    lmin = "; ".join(f"{ini}/{sc} {D.ci(f)}" for (sc, ini, v), f in fits.items() if v == "lambda_min")
    lmax = "; ".join(f"{ini}/{sc} {D.fmt(f['slope'])}" for (sc, ini, v), f in fits.items() if v == "lambda_max")
    vals = stats.epoch0_kernel(ds, "lambda_min").values
    smallest = np.nanmin(vals) if np.any(np.isfinite(vals)) else np.nan
    density = _draw_density(cv, cv.ax(2), ds, n) if has_density else (
        "no spectral density of K_0 (no K_0 Gram stored its eigenvalues or an SLQ density)")
    return cv, (f"width slope of lambda_min(K_0): {lmin}; of lambda_max(K_0): {lmax}; "
                f"smallest lambda_min(K_0) {D.fmt(smallest)}; {density}" + D.diverged_clause(ds))


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
    for w, c in zip(widths, colors):
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
        ax.plot(centres, y, color=c, marker="o", ms=2.5, lw=1.0,
                ls="-" if "slq" not in kinds else "--", label=f"width {w} ({how}, {int(have.sum())} seed(s))")
        cv.record("spectral density", "spectral_density_K0", "lambda", centres[np.isfinite(y)], y[np.isfinite(y)],
                  "mean", width=w, scaling=sc, init=ini, n_samples=n)
    edges = np.asarray(ds["spectral_density_K0"].attrs.get("bin_edges", [np.nan, np.nan]), dtype=float)
    ax.set(xlabel=r"eigenvalue $\lambda$ of $K_0$", ylabel="fraction of eigenvalues per bin",
           title=f"spectral density of $K_0$, {D.group_text(sc, ini)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    drawn = [r["y"] for r in cv.rows if r["quantity"] == "spectral_density_K0"]
    if drawn:
        ax.set_ylim(min(drawn) / 2, min(1.0, max(drawn) * 2))
    parts = [f"{how} for width(s) {', '.join(str(w) for w in ws)}" for how, ws in by_method.items()]
    clause = (f"spectral density of K_0 ({ini}/{sc}, {centres.size} log bins over "
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
(line style), with fitted log-log slopes (kernel-only widths included). lambda_min governs the theory's
rate, lambda_max the stability limit of the step. Right, when the Gram store holds it: the spectral
density of ``K_0`` per width (colour; LeCun and tau0 = d_m^-1/2 when present, mean over seeds), the
fraction of eigenvalues in each of the log-spaced bins over [min lambda_min, max lambda_max]: from
every eigenvalue (solid; Grams up to ``gram.spectrum_dense_max`` rows) or from stochastic Lanczos
quadrature (dashed; larger Grams with ``gram.spectrum_slq_vectors`` > 0); the legend names the
method of each curve, the finding the widths with neither. Empty bins are not drawn; the point at
the far right is the outlier lambda_max.""",
))


def lazy_training(ds, settings) -> tuple:
    """Final weight change and final NTK change vs width, log-log slopes per init and scaling, with the
    kernel-stability and claim-5 thresholds."""
    ds, n = D.prepare(ds)
    ds, _ = D.first_step(ds)
    conf = float(settings["confidence"])
    widths = stats.axis_values(ds, "width")
    cv = Canvas("lazy_training", 2)
    fits = {}
    for k, (sc, ini) in enumerate(D.groups(ds)):
        sty = D.group_style(sc, ini, k)
        s = ds.sel(scaling=sc, init=ini)
        for p, (var, da) in enumerate((("weight_change", stats.final_value(s, "weight_change")),
                                       ("kernel_change", stats.kernel_change_max(s)))):
            x, y, st, sd = D.flat(s, da, "width")
            fits[(sc, ini, var)] = D.draw_runs_fit(cv, cv.ax(p), x, y, st, sd, sty["color"], D.group_text(sc, ini),
                                                   f"final {var}", f"{var}_final" if p == 0 else "kernel_change_max",
                                                   "width", dict(scaling=sc, init=ini, n_samples=n),
                                                   D.group_label(init=ini, scaling=sc), conf,
                                                   marker=sty["marker"], ls=sty["ls"])
    ks, kt = float(settings["kernel_stability"]), float(settings["kernel_change_threshold"])
    cv.ax(1).axhline(ks, color="grey", ls="--", lw=0.8, label=f"kernel regime {ks:g}")
    cv.ax(1).axhline(kt, color="grey", ls=":", lw=0.8, label=f"claim 5 threshold {kt:g}")
    cv.ax(0).set(xlabel="width", ylabel=r"$\|\theta_E - \theta_0\|_F / \|\theta_0\|_F$", title=f"final weight change{D.note_n(n)}")
    cv.ax(1).set(xlabel="width", ylabel=r"$\max_t \|K_t - K_0\|_F / \|K_0\|_F$", title="largest NTK change")
    for p, var in enumerate(("weight_change_final", "kernel_change_max")):
        D.set_log(cv.ax(p), "x", widths)
        D.set_log(cv.ax(p), "y", [r["y"] for r in cv.rows if r["quantity"] == var] + ([ks, kt] if p else []))
    cv.title = "Lazy training: how much weights and kernel move"
    wpart = "; ".join(f"{ini}/{sc} {D.ci(f)}" for (sc, ini, v), f in fits.items() if v == "weight_change")
    kpart = "; ".join(f"{ini}/{sc} {D.ci(f)}" for (sc, ini, v), f in fits.items() if v == "kernel_change")
    return cv, f"width slope of the final weight change: {wpart}; of the largest NTK change: {kpart}" + D.diverged_clause(ds)


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
