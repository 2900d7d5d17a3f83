"""The empirical NTK (appendix Fig. 9 and beyond): its change during training, its spectrum at
initialisation, lazy training.

Each analysis: a numbers function (aggregate, settings -> Canvas and finding) and its `register`
call; see `tfconv.analyses.registry`.
"""
from __future__ import annotations


import numpy as np

from . import draw as D
from ..figures.canvas import Canvas
from . import stats as A
from ..registry import Analysis, Requires, register


def figure9(ds, settings) -> tuple:
    """Appendix Fig. 9: loss, weight change and NTK change per width under tau0 = d_m^-1 (and its inv_sqrt row)."""
    ds, n = D.prepare(ds)
    scalings = A.axis_values(ds, "scaling")
    rows = [s for s in ("inv", "inv_sqrt") if s in scalings] or scalings[:2]
    ini = A.preferred(A.axis_values(ds, "init"), "lecun")
    cv = Canvas("figure9", 3 * len(rows), ncols=3)
    widths = A.axis_values(ds, "width")
    colors = D.colors(len(widths))
    summary = []
    for r, sc in enumerate(rows):
        sub = ds.sel(scaling=sc, init=ini)
        finals_w, finals_k, e90 = [], [], np.nan
        for w, c in zip(widths, colors):
            g = dict(width=w, scaling=sc, init=ini, n_samples=n)
            s = sub.sel(width=w)
            D.draw_seed_curves(cv, cv.ax(3 * r), s, "loss", "epoch", c, f"width {w}", f"loss {sc}", g)
            x, wm = D.draw_seed_curves(cv, cv.ax(3 * r + 1), s, "weight_change", "epoch", c, f"width {w}",
                                      f"weight_change {sc}", g)
            _, km = D.draw_seed_curves(cv, cv.ax(3 * r + 2), s, "kernel_change", "checkpoint_epoch", c,
                                      f"width {w}", f"kernel_change {sc}", g)
            finals_w.append(wm[-1] if wm.size else np.nan)
            finals_k.append(km[-1] if km.size else np.nan)
            if wm.size and np.isfinite(wm[-1]) and wm[-1] > 0:
                e90 = float(x[np.nonzero(wm >= 0.9 * wm[-1])[0][0]])
        D.set_log(cv.ax(3 * r), "y", sub["loss"].values)
        for j, (lab, xl) in enumerate((("training loss", "epoch"),
                                       ("weight change |theta_t - theta_0| / |theta_0|", "epoch"),
                                       ("NTK change |K_t - K_0|_F / |K_0|_F", "checkpoint epoch"))):
            ax = cv.ax(3 * r + j)
            ax.set_xlabel(xl)
            ax.set_ylabel(lab, fontsize=8)
            ax.set_title(f"scaling={sc} ({D.SCALING_LABEL.get(sc, sc)}), init={ini}{D.note_n(n)}", fontsize=8)
        summary.append((sc, finals_w, finals_k, e90))
    sc, fw, fk, e90 = summary[0]
    finding = (f"under scaling {sc} ({ini}): final weight change goes from {D.fmt(fw[0])} at width {widths[0]} to "
               f"{D.fmt(fw[-1])} at width {widths[-1]}, final NTK change from {D.fmt(fk[0])} to {D.fmt(fk[-1])}; "
               f"at width {widths[-1]} the weights reach 90% of their final change by epoch {D.fmt(e90)}")
    if len(summary) > 1:
        sc2, fw2, fk2, _ = summary[1]
        finding += f" (under {sc2} at width {widths[-1]}: weight change {D.fmt(fw2[-1])}, NTK change {D.fmt(fk2[-1])})"
    finding += D.diverged_clause(ds.sel(scaling=rows, init=ini))
    return cv, finding

register(Analysis(
    name="figure9", section="kernel", paper="App. Fig. 9",
    summary="loss, weight change and NTK change per epoch and width under tau0 = d_m^-1",
    requires=Requires(gram=True), numbers=figure9,
    caption="""**Appendix Fig. 9** under tau0 = d_m^-1 (LeCun when present): (a) training loss, (b) weight change
``|theta_t - theta_0|_F / |theta_0|_F`` against epoch, (c) NTK change ``|K_t - K_0|_F / |K_0|_F``
(``K_t = J_t J_t^T``, output-averaged) at the checkpoint epochs {checkpoint_epochs},
one line per width. When the grid also has tau0 = d_m^-1/2, its row is drawn below for comparison.""",
))


def spectrum(ds, settings) -> tuple:
    """lambda_min(K_0) and lambda_max(K_0) vs width for every init x scaling, log-log with slopes."""
    ds, n = D.prepare(ds)
    conf = float(settings.get("confidence", 0.95))
    widths = A.axis_values(ds, "width")
    cv = Canvas("spectrum", 2)
    fits = {}
    for k, (sc, ini) in enumerate(D.groups(ds)):
        c = D.GROUP_COLORS[k % 10]
        s = ds.sel(scaling=sc, init=ini)
        for p, var in enumerate(("lambda_min", "lambda_max")):
            x, y, st, sd = D.flat(s, A.epoch0_kernel(s, var), "width")
            fits[(sc, ini, var)] = D.draw_runs_fit(cv, cv.ax(p), x, y, st, sd, c, f"{ini}/{sc}", f"{var}(K_0)",
                                                  f"{var}_K0", "width", dict(scaling=sc, init=ini, n_samples=n),
                                                  D.group_label(init=ini, scaling=sc), conf)
    for p, var in enumerate(("lambda_min", "lambda_max")):
        ax = cv.ax(p)
        ax.set(xlabel="width", ylabel=f"{var}(K_0)", title=f"{var} of the NTK at init{D.note_n(n)}")
        D.set_log(ax, "x", widths)
        D.set_log(ax, "y", A.epoch0_kernel(ds, var).values)
    lmin = "; ".join(f"{ini}/{sc} {D.ci(f)}" for (sc, ini, v), f in fits.items() if v == "lambda_min")
    lmax = "; ".join(f"{ini}/{sc} {D.fmt(f['slope'])}" for (sc, ini, v), f in fits.items() if v == "lambda_max")
    vals = A.epoch0_kernel(ds, "lambda_min").values
    smallest = np.nanmin(vals) if np.any(np.isfinite(vals)) else np.nan
    return cv, (f"width slope of lambda_min(K_0): {lmin}; of lambda_max(K_0): {lmax}; "
                f"smallest lambda_min(K_0) {D.fmt(smallest)}" + D.diverged_clause(ds))

register(Analysis(
    name="spectrum", section="kernel", paper="beyond",
    summary="lambda_min(K_0) and lambda_max(K_0) vs width, slopes",
    requires=Requires(axes={"width": 2}, gram=True), numbers=spectrum,
    caption="""**NTK spectrum at initialisation**: ``lambda_min(K_0)`` (left) and ``lambda_max(K_0)`` (right)
of the empirical NTK ``K_0 = J_0 J_0^T`` against width, one series per init and scaling, with
fitted log-log slopes. lambda_min governs the theory's rate, lambda_max the stable step size.""",
))


def lazy_training(ds, settings) -> tuple:
    """Final weight change and final NTK change vs width, log-log slopes per init and scaling."""
    ds, n = D.prepare(ds)
    conf = float(settings.get("confidence", 0.95))
    widths = A.axis_values(ds, "width")
    cv = Canvas("lazy_training", 2)
    fits = {}
    for k, (sc, ini) in enumerate(D.groups(ds)):
        c = D.GROUP_COLORS[k % 10]
        s = ds.sel(scaling=sc, init=ini)
        for p, (var, dim) in enumerate((("weight_change", "epoch"), ("kernel_change", "checkpoint_epoch"))):
            x, y, st, sd = D.flat(s, A.final_value(s, var, dim), "width")
            fits[(sc, ini, var)] = D.draw_runs_fit(cv, cv.ax(p), x, y, st, sd, c, f"{ini}/{sc}", f"final {var}",
                                                  f"{var}_final", "width", dict(scaling=sc, init=ini, n_samples=n),
                                                  D.group_label(init=ini, scaling=sc), conf)
    last_ck = int(ds["checkpoint_epoch"].values[-1]) if ds.sizes.get("checkpoint_epoch", 0) else None
    for p, (var, lab) in enumerate((("weight_change", f"|theta_E - theta_0| / |theta_0| (epoch {ds.sizes['epoch'] - 1})"),
                                    ("kernel_change", f"|K_t - K_0|_F / |K_0|_F (checkpoint {last_ck})"))):
        ax = cv.ax(p)
        ax.set(xlabel="width", ylabel=lab, title=f"final {var.replace('_', ' ')}{D.note_n(n)}")
        D.set_log(ax, "x", widths)
        D.set_log(ax, "y", A.final_value(ds, var, "epoch" if p == 0 else "checkpoint_epoch").values)
    wpart = "; ".join(f"{ini}/{sc} {D.ci(f)}" for (sc, ini, v), f in fits.items() if v == "weight_change")
    kpart = "; ".join(f"{ini}/{sc} {D.ci(f)}" for (sc, ini, v), f in fits.items() if v == "kernel_change")
    finding = f"width slope of the final weight change: {wpart}; of the final NTK change: {kpart}"
    if not last_ck:
        finding += " (NTK change needs a checkpoint epoch after 0)"
    return cv, finding + D.diverged_clause(ds)

register(Analysis(
    name="lazy_training", section="kernel", paper="beyond",
    summary="final weight change and NTK change vs width, slopes",
    requires=Requires(axes={"width": 2}, gram=True), numbers=lazy_training,
    caption="""**Lazy training**: the final weight change ``|theta_E - theta_0|_F / |theta_0|_F`` (left) and the
NTK change ``|K_t - K_0|_F / |K_0|_F`` at the last checkpoint epoch (right) against width, one
series per init and scaling, with fitted log-log slopes (negative: the larger the width, the less
the weights and the kernel move).""",
))
