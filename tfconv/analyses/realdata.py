"""Real data (paper Sec. 5.2 and 5): ViT on MNIST, the kernel assumption on movie-review text.

Each analysis: a numbers function (aggregate, settings -> Canvas and finding) and its `register`
call; see `tfconv.registry`.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..figures.canvas import Canvas
from ..registry import Analysis, register
from . import draw as D
from . import stats


def data_kernel_vars(dataset, exp) -> Dict[str, Any]:
    """lambda_min of the data kernel <vec X_i, vec X_j> / d_s of the first n samples, over n_samples."""
    from ..core.ntk import gram_eigenvalues

    if "n_samples" not in exp.grid:
        return {}
    vals = []
    for n in exp.grid["n_samples"]:
        F = dataset.X[:n].reshape(n, -1)
        vals.append(float(gram_eigenvalues(F @ F.T / dataset.d_s)[0]))
    return {"data_kernel_lambda_min": (("n_samples",), np.asarray(vals),
                                       {"definition": "lambda_min of G_ij = <vec X_i, vec X_j> / d_s"})}


#: mnist_accuracy: the measured loss and accuracy per scaling (line style), the linearised loss per scaling
_MNIST_LS = {"inv_sqrt": dict(ls="-", lw=1.0), "inv": dict(ls="--", lw=0.55)}
#: the linearised loss: wide pale lines under the measured ones (narrower for the second scaling)
_MNIST_LIN = {"inv_sqrt": dict(ls="-", lw=3.2, alpha=0.25, zorder=1.5), "inv": dict(ls="-", lw=1.8, alpha=0.3, zorder=1.6)}


def mnist_accuracy(ds, settings) -> tuple:
    """A grid with one column per init: the training loss per width and scaling with the linearised
    prediction (top, log), and train and test accuracy per width and scaling (bottom); widths are colours,
    scalings line styles."""
    ds, n = D.prepare(ds)
    ds, step = D.first_step(ds)
    inits = stats.axis_values(ds, "init")
    scalings = stats.axis_values(ds, "scaling")
    widths = stats.axis_values(ds, "width")
    colors = D.colors(len(widths))
    acc_vars = [v for v in ("train_accuracy", "test_accuracy") if v in ds]
    rows = 2 if acc_vars else 1
    nc = len(inits)
    # one column per init; a single init puts its loss and accuracy side by side (a row, not a stack)
    cv = Canvas("mnist_accuracy", rows * nc, ncols=nc if nc > 1 else rows, legend="figure", aspect=0.85)
    meas = stats.rates(ds, settings)
    lin = stats.rates(ds, settings, "loss_linearised")
    pred = stats.predicted_rates(ds, settings)
    E, rr = stats.budget_epochs(ds), settings["rate_range"]
    trained = [w for w in widths if D.trained(ds.sel(width=w))]
    wmax = max(trained or widths)
    summary = []
    for j, ini in enumerate(inits):
        top, bottom = cv.ax(j), (cv.ax(nc + j) if acc_vars else None)
        for sc in scalings:
            s = ds.sel(scaling=sc, init=ini)
            for w, c in zip(widths, colors):
                g = dict(width=w, scaling=sc, init=ini, n_samples=n)
                sw = s.sel(width=w)
                D.draw_seed_curves(cv, top, sw, "loss", "epoch", c, f"width {w}", f"loss {ini}/{sc}", g,
                                   **_MNIST_LS.get(sc, _MNIST_LS["inv_sqrt"]))
                D.draw_seed_curves(cv, top, sw, "loss_linearised", "epoch", c, None, f"loss {ini}/{sc}", g,
                                   band=False, marker="", stat="predicted", role="predicted",
                                   **_MNIST_LIN.get(sc, _MNIST_LIN["inv_sqrt"]))
                for var, marker in zip(acc_vars, ("o", "s")):
                    D.draw_seed_curves(cv, bottom, sw, var, "epoch", c, None, f"accuracy {ini}/{sc}", g,
                                       band=False, marker=marker, **_MNIST_LS.get(sc, _MNIST_LS["inv_sqrt"]))
            sw = s.sel(width=wmax)
            m, li, pr = meas.sel(scaling=sc, init=ini, width=wmax), lin.sel(scaling=sc, init=ini, width=wmax), \
                pred.sel(scaling=sc, init=ini, width=wmax)
            loss = np.asarray(stats.final_value(sw, "loss").values, dtype=float) / np.asarray(
                sw["loss"].isel(epoch=0).values, dtype=float)
            acc = {v: D.median(stats.final_value(sw, v).values) for v in acc_vars}
            p = D.predicted_rate_words(pr, li)
            summary.append(f"{D.group_words(sc, ini)}: loss_E/loss_0 {D.fmt(D.median(loss))}, rate {D.rate_words(m, E, rr)}"
                           + (f" (predicted {p})" if p != "n/a" else "")
                           + "".join(f", {v.split('_')[0]} accuracy {D.fmt(a)}" for v, a in acc.items() if np.isfinite(a)))
        vals = D.values_of_good_runs(ds.sel(init=ini), "loss", "loss_linearised")
        D.set_log(top, "y", vals)
        D.log_ylim(top, vals)
        top.set(xlabel="epoch", ylabel="training loss", title=f"({chr(97 + j)}) {D.INIT_LABEL.get(ini, ini)}: loss")
        if bottom is not None:
            bottom.set(xlabel="epoch", ylabel="accuracy",
                       title=f"({chr(97 + nc + j)}) {D.INIT_LABEL.get(ini, ini)}: accuracy")
            bottom.set_ylim(0.0, 1.02)
    ax = cv.ax(0)
    for sc in scalings:
        D.key(ax, f"{D.scaling_text(sc)} (measured)", color="k", **_MNIST_LS.get(sc, _MNIST_LS["inv_sqrt"]))
        lin_key = {k: v for k, v in _MNIST_LIN.get(sc, _MNIST_LIN["inv_sqrt"]).items() if k != "zorder"}
        D.key(ax, f"{D.scaling_text(sc)}: linearised from $K_0$ (wide pale)", color="k", **lin_key)
    if acc_vars:
        for var, marker in zip(acc_vars, ("o", "s")):
            D.key(cv.ax(nc), f"{var.split('_')[0]} accuracy", color="k", marker=marker, ls="none", ms=3)
    cv.title = "ViT on MNIST: training loss and accuracy"
    return cv, (f"at width {wmax}, {D.step_words(step, ds)} (median seed; rate per epoch over L/L_0 from {rr[0]:g} to "
                f"{rr[1]:g}): " + "; ".join(summary) + D.diverged_clause(ds))


register(Analysis(
    name="mnist_accuracy", section="realdata", paper="Sec. 5.2",
    summary="ViT on MNIST: training loss with the linearised prediction, train and test accuracy per epoch and width",
    numbers=mnist_accuracy,
    caption="""**ViT on MNIST** (paper Sec. 5.2; our ViT, the paper's exact set-up is not known: standardised
7x7 pixel patches as tokens, a learned linear patch embedding and learned positional embeddings when the
experiment's ``model`` section asks for them, then the paper's encoder, 10 outputs, squared loss on
one-hot targets): per init and scaling, the training loss per width (left, log axis; wide pale lines: the
linearised prediction from K_0) and the accuracy of ``argmax f(X)`` (right) on the training subset
(circles, dashed) and the held-out test subset (squares, solid), recorded every 10 epochs.""",
))


def text_assumption(ds, settings) -> tuple:
    """lambda_min(K_0) vs n_samples per width (and the data kernel's if present): does it stay away from 0?"""
    ds = stats.complete_axes(ds)
    conf = float(settings["confidence"])
    cv = Canvas("text_assumption", 1, panel_size=(6.5, 4.8))
    ax = cv.ax(0)
    if "n_samples" not in ds.dims:
        return cv, D.empty(cv, "text_assumption needs an n_samples axis in the grid; none was found")
    sc, ini = D.default_group(ds)
    s = ds.sel(scaling=sc, init=ini)
    widths = stats.axis_values(s, "width")
    fits = {}
    lm = stats.epoch0_kernel(s, "lambda_min")
    for w, c in zip(widths, D.colors(len(widths))):
        sw = s.sel(width=w)
        x, y, st, sd = D.flat(sw, lm.sel(width=w), "n_samples")
        fits[w] = D.draw_runs_fit(cv, ax, x, y, st, sd, c, f"width {w}", "lambda_min(K_0)", "lambda_min_K0",
                                 "n_samples", dict(width=w, scaling=sc, init=ini), D.group_label(width=w, init=ini, scaling=sc), conf)
    data_part = ""
    if "data_kernel_lambda_min" in ds:
        dk = ds["data_kernel_lambda_min"]
        other = [d for d in dk.dims if d != "n_samples"]
        if other:
            dk = dk.isel({d: 0 for d in other})
        xs = np.asarray(ds["n_samples"].values, dtype=float)
        ys = np.asarray(dk.values, dtype=float)
        f = stats.fit_loglog(xs, ys, conf)
        lab = "data kernel" + (f": slope {D.ci(f)}" if np.isfinite(f["slope"]) else "")
        ax.plot(xs, ys, color="k", marker="s", label=lab)
        cv.record("lambda_min(K_0)", "data_kernel_lambda_min", "n_samples", xs, ys, "mean")
        if np.isfinite(f["slope"]):
            cv.add_slope("data_kernel_lambda_min vs n_samples", "data kernel", f)
            yl = np.exp(f["intercept"]) * xs ** f["slope"]
            ax.plot(xs, yl, color="k", ls=":")
            cv.record("lambda_min(K_0)", "data_kernel_lambda_min", "n_samples", xs, yl, "fit")
        pos = ys[np.isfinite(ys)]
        data_part = f"; the data kernel's lambda_min is {D.fmt(pos.min() if pos.size else np.nan)} at its smallest"
    ax.set(xlabel="n_samples", ylabel="lambda_min(K_0)", title=f"init={ini}, scaling={sc}")
    D.set_log(ax, "x", ds["n_samples"].values)
    D.set_log(ax, "y", lm.values)
    vals = np.asarray(lm.values, dtype=float)
    nmax = max(stats.axis_values(s, "n_samples"))
    at_max = lm.sel(n_samples=nmax).values
    smallest = np.nanmin(vals) if np.any(np.isfinite(vals)) else np.nan
    wmax = max(widths)
    finding = (f"lambda_min(K_0) ({ini}/{sc}) is {D.fmt(smallest)} at its smallest"
               f" ({'<= 0: the assumption fails' if np.isfinite(smallest) and smallest <= 0 else 'positive'}); "
               f"at n_samples = {nmax} it ranges over [{D.fmt(np.nanmin(at_max) if np.any(np.isfinite(at_max)) else np.nan)}, "
               f"{D.fmt(np.nanmax(at_max) if np.any(np.isfinite(at_max)) else np.nan)}] across widths; "
               f"it scales as n_samples^{D.ci(fits[wmax])} at width {wmax}") + data_part
    return cv, finding + D.diverged_clause(s)


register(Analysis(
    name="text_assumption", section="realdata", paper="Sec. 5",
    summary="lambda_min(K_0) of review text vs n_samples (and the data kernel's)",
    numbers=text_assumption,
    aggregate_vars=data_kernel_vars,
    caption="""**Assumption check on review text** (paper Sec. 5): the minimum eigenvalue ``lambda_min(K_0)``
of the model's empirical NTK at initialisation against n_samples, one series per width (init LeCun
and scaling inv_sqrt when present), with fitted log-log slopes; the data kernel's minimum eigenvalue
is drawn in black when the aggregate has it. The assumption holds when lambda_min stays away from zero.""",
))
