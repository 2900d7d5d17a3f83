"""Real data (paper Sec. 5.2 and 5): ViT on MNIST, the kernel assumption on movie-review text.

Each analysis: a numbers function (aggregate, settings -> Canvas and finding) and its `register`
call; see `tfconv.analyses.registry`.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from . import draw as D
from ..figures.canvas import Canvas
from . import stats as A
from ..registry import Analysis, Requires, register


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


def mnist_accuracy(ds, settings) -> tuple:
    """Train loss and test accuracy vs epoch per width, one row per scaling x init."""
    ds, n = D.prepare(ds)
    groups = D.groups(ds)
    widths = A.axis_values(ds, "width")
    colors = D.colors(len(widths))
    has_test = "test_accuracy" in ds
    cv = Canvas("mnist_accuracy", 2 * len(groups), ncols=2)
    best = []
    for gi, (sc, ini) in enumerate(groups):
        s = ds.sel(scaling=sc, init=ini)
        for w, c in zip(widths, colors):
            g = dict(width=w, scaling=sc, init=ini, n_samples=n)
            D.draw_seed_curves(cv, cv.ax(2 * gi), s.sel(width=w), "loss", "epoch", c, f"width {w}", f"loss {ini}/{sc}", g)
            if has_test:
                _, m = D.draw_seed_curves(cv, cv.ax(2 * gi + 1), s.sel(width=w), "test_accuracy", "epoch", c,
                                         f"width {w} (test)", f"accuracy {ini}/{sc}", g)
                fin = m[np.isfinite(m)]
                if fin.size:
                    best.append((float(fin[-1]), w, f"{ini}/{sc}"))
            if "train_accuracy" in s:
                D.draw_seed_curves(cv, cv.ax(2 * gi + 1), s.sel(width=w), "train_accuracy", "epoch", c,
                                  None, f"accuracy {ini}/{sc}", g, ls="--", band=False)
        D.set_log(cv.ax(2 * gi), "y", s["loss"].values)
        cv.ax(2 * gi).set(xlabel="epoch", ylabel="training loss", title=f"init={ini}, scaling={sc}")
        cv.ax(2 * gi + 1).set(xlabel="epoch", ylabel="accuracy (test solid, train dashed)", title=f"init={ini}, scaling={sc}")
    if best:
        best.sort()
        finding = (f"final test accuracy (seed mean) ranges from {D.fmt(best[0][0])} (width {best[0][1]}, {best[0][2]}) "
                   f"to {D.fmt(best[-1][0])} (width {best[-1][1]}, {best[-1][2]})")
    else:
        fl = A.final_value(ds, "loss").values
        finding = (f"no test_accuracy curve was recorded; final training loss ranges over "
                   f"[{D.fmt(np.nanmin(fl) if np.any(np.isfinite(fl)) else np.nan)}, "
                   f"{D.fmt(np.nanmax(fl) if np.any(np.isfinite(fl)) else np.nan)}]")
    return cv, finding + D.diverged_clause(ds)

register(Analysis(
    name="mnist_accuracy", section="realdata", paper="Sec. 5.2",
    summary="ViT on MNIST: training loss and accuracy per epoch and width",
    requires=Requires(kinds=("mnist",)), numbers=mnist_accuracy,
    caption="""**ViT on MNIST** (paper Sec. 5.2): per init and scaling, the training loss (left) and the test
accuracy of ``argmax f(X)`` on the held-out subset (right, solid; training accuracy dashed when
recorded) against epoch, one line per width.""",
))


def text_assumption(ds, settings) -> tuple:
    """lambda_min(K_0) vs n_samples per width (and the data kernel's if present): does it stay away from 0?"""
    ds = A.complete_axes(ds)
    conf = float(settings.get("confidence", 0.95))
    cv = Canvas("text_assumption", 1, panel_size=(6.5, 4.8))
    ax = cv.ax(0)
    if "n_samples" not in ds.dims:
        return cv, D.empty(cv, "text_assumption needs an n_samples axis in the grid; none was found")
    sc, ini = D.default_group(ds)
    s = ds.sel(scaling=sc, init=ini)
    widths = A.axis_values(s, "width")
    fits = {}
    lm = A.epoch0_kernel(s, "lambda_min")
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
        f = A.fit_loglog(xs, ys, conf)
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
    nmax = max(A.axis_values(s, "n_samples"))
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
    requires=Requires(axes={"n_samples": 2}, gram=True), numbers=text_assumption,
    aggregate_vars=data_kernel_vars,
    caption="""**Assumption check on review text** (paper Sec. 5): the minimum eigenvalue ``lambda_min(K_0)``
of the model's empirical NTK at initialisation against n_samples, one series per width (init LeCun
and scaling inv_sqrt when present), with fitted log-log slopes; the data kernel's minimum eigenvalue
is drawn in black when the aggregate has it. The assumption holds when lambda_min stays away from zero.""",
))
