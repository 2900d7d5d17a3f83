"""Real data (paper Sec. 5.2 and 5): ViT on MNIST, the kernel assumption on movie-review text.

Each analysis: a numbers function (aggregate, settings -> Canvas and finding) and its `register`
call; see `tfconv.registry`.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from ..core.spectra import BELOW_PRECISION as S_BELOW, RESOLVED as S_RESOLVED
from ..figures.canvas import Canvas
from ..registry import Analysis, register
from . import draw as D
from . import stats



#: Above this many samples (and past its rank limit) the data kernel's lambda_min is not decomposed: its
#: rank is at most d_s d < N, so lambda_min = 0 exactly.
DATA_KERNEL_DENSE_MAX = 4096


def data_kernel_vars(dataset, exp) -> Dict[str, Any]:
    """lambda_min of the data kernel G_ij = <vec X_i, vec X_j> / d_s of the first n samples, over n_samples,
    with its error and verdict (float64, `tfconv.core.spectra.assess_lambda_min`).  G has rank at most
    d_s d (its rank limit, attribute ``rank_limit``): at and above it lambda_min collapses to rounding, and
    beyond `DATA_KERNEL_DENSE_MAX` samples it is not decomposed (0 exactly, by rank)."""
    from ..core.ntk import gram_eigenvalues
    from ..core.spectra import EigenRecord, assess_lambda_min, rounding_level

    if "n_samples" not in exp.grid:
        return {}
    rank_limit = int(dataset.d_s * dataset.d)
    vals, errs, verdicts, dups = [], [], [], []
    for n in exp.grid["n_samples"]:
        F = dataset.X[:n].reshape(n, -1)
        dups.append(int(n - np.unique(F, axis=0).shape[0]))
        if n <= max(rank_limit, DATA_KERNEL_DENSE_MAX):
            ev = gram_eigenvalues(F @ F.T / dataset.d_s)
            lmin, lmax = float(ev[0]), float(ev[-1])
        else:  # rank <= d_s d < n: lambda_min = 0; lambda_max from the d_s d x d_s d covariance
            lmin, lmax = 0.0, float(np.linalg.eigvalsh(F.T @ F / dataset.d_s)[-1])
        rec = EigenRecord(lmin, "dense", 0, np.nan)
        assess_lambda_min(rec, rounding_level(float(np.max(np.sum(F * F, axis=1)) / dataset.d_s), n, "float64"), lmax)
        vals.append(rec.value)
        errs.append(rec.error)
        verdicts.append(rec.verdict)
    definition = {"definition": "lambda_min of G_ij = <vec X_i, vec X_j> / d_s", "rank_limit": rank_limit}
    return {"data_kernel_lambda_min": (("n_samples",), np.asarray(vals), definition),
            "data_kernel_lambda_min_error": (("n_samples",), np.asarray(errs),
                                             {"definition": "eps_64 N max diag G + eps_64 lambda_max(G)"}),
            "data_kernel_lambda_min_verdict": (("n_samples",), np.asarray(verdicts, dtype=str),
                                               {"definition": "resolved (value > error) or below the precision of K"}),
            "duplicate_inputs": (("n_samples",), np.asarray(dups, dtype=np.int64),
                                 {"definition": "samples among the first N whose input X equals an earlier one's "
                                                "(e.g. a review repeated in the corpus): each makes K_0 singular, "
                                                "lambda_min(K_0) = 0 for every model"}),
            **_ntk_rank_bound_var(dataset, exp)}


def _ntk_rank_bound_var(dataset, exp) -> Dict[str, Any]:
    """``ntk_rank_bound`` over width: rank K_0 <= it for any parameters and inputs
    (`tfconv.core.ntk_structured.rank_bound`); past it K_0 is singular by construction.  {} for the ViT
    variant (no bound)."""
    from ..core.ntk_structured import rank_bound

    by_width = {p.width: p for p in exp.points}
    bounds = [rank_bound(by_width[w].spec(dataset)) for w in exp.grid["width"]]
    if any(b is None for b in bounds):
        return {}
    return {"ntk_rank_bound": (("width",), np.asarray(bounds, dtype=np.int64),
                               {"definition": "an upper bound on rank K_0 for any parameters and inputs: the "
                                              "fewest NTK factor columns (K = F F^T) or the parameter count; "
                                              "lambda_min(K_0) = 0 exactly for N above it"})}


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


def _assessment(s, var: str = "lambda_min"):
    """(value, error, verdict, bracket low, bracket high) of lambda_min(K_0) per run, as arrays over
    (n_samples, seed); verdict "" where not recorded, and None for the whole array when the aggregate has no
    verdicts at all (an aggregate from before the error estimates)."""
    def get(name):
        if name not in s:
            return None
        return np.asarray(stats.epoch0_kernel(s, name).transpose("n_samples", "seed").values)
    value = np.asarray(get(var), dtype=float)
    err, ver = get("lambda_min_error"), get("lambda_min_verdict")
    lo, hi = get("lambda_min_bracket_low"), get("lambda_min_bracket_high")
    nan = np.full(value.shape, np.nan)
    return (value, nan if err is None else np.asarray(err, dtype=float),
            None if ver is None else np.asarray(ver).astype(str),
            nan if lo is None else np.asarray(lo, dtype=float), nan if hi is None else np.asarray(hi, dtype=float))


def _error_bars(ax, x, low, high, color, lw=0.9):
    """Vertical bars from low to high at each x (one plot mark, NaN-separated segments); a low at or
    below zero is drawn from the bottom of the panel (`floor`)."""
    xs = np.repeat(np.asarray(x, dtype=float), 3)
    ys = np.column_stack([low, high, np.full(len(low), np.nan)]).ravel()
    xs[2::3] = np.nan
    ok = np.isfinite(ys[0::3]) & np.isfinite(ys[1::3])
    if ok.any():
        keep = np.repeat(ok, 3)
        ax.plot(xs[keep], ys[keep], color=color, lw=lw, ls="-", marker="", alpha=0.8)


def _trend(cv, ax, x, y, color, label: str, panel: str, quantity: str, group: Dict[str, Any], slope_group: str,
           conf: float, ls: str = ":"):
    """Log-log fit of the points with its interval (the slopes of its confidence interval through the
    points' centroid, a band), drawn with a legend entry and recorded; returns the fit."""
    f = stats.fit_loglog(x, y, conf)
    if not np.isfinite(f["slope"]):
        return f
    xl = np.unique(x)
    yl = np.exp(f["intercept"]) * xl ** f["slope"]
    lx = np.log(x)
    xc, yc = float(lx.mean()), float(f["intercept"] + f["slope"] * lx.mean())
    b1, b2 = (np.exp(yc + sl * (np.log(xl) - xc)) for sl in (f["ci_low"], f["ci_high"]))
    ax.fill_between(xl, np.minimum(b1, b2), np.maximum(b1, b2), color=color, alpha=0.12, lw=0)
    ax.plot(xl, yl, color=color, ls=ls, lw=1.5, label=f"{label}: N^{D.ci(f)}")
    cv.record(panel, quantity, "n_samples", xl, yl, "fit", **group)
    cv.record(panel, quantity, "n_samples", xl, np.minimum(b1, b2), "fit_low", **group)
    cv.record(panel, quantity, "n_samples", xl, np.maximum(b1, b2), "fit_high", **group)
    cv.add_slope(f"{quantity} vs n_samples", slope_group, f)
    return f


def text_assumption(ds, settings) -> tuple:
    """lambda_min(K_0) against n_samples on log axes, per width and (init, scaling) panel: every run with its
    error bar (the error estimate and the certificate's bracket), values below the precision of K drawn as
    open down-triangles at their upper bound, the seed mean of the resolved values, and the fitted trend with
    its interval on the resolved values; the data kernel's lambda_min beside it, fitted below its rank limit
    d_s d only.  Does lambda_min stay away from 0 as N grows?"""
    ds = stats.complete_axes(ds)
    conf = float(settings["confidence"])
    if "n_samples" not in ds.dims:
        cv = Canvas("text_assumption", 1, panel_size=(6.5, 4.8))
        return cv, D.empty(cv, "text_assumption needs an n_samples axis in the grid; none was found")
    groups = D.groups(ds)
    cv = Canvas("text_assumption", len(groups), ncols=min(2, len(groups)), size="double", panel_size=(5.6, 4.4))
    widths = stats.axis_values(ds, "width")
    colors = D.colors(len(widths))
    ns = np.asarray(stats.axis_values(ds, "n_samples"), dtype=float)
    legacy = "lambda_min_verdict" not in ds
    default = D.default_group(ds)
    fits: Dict[Any, Dict[str, float]] = {}
    counts = {"resolved": 0, "below": 0, "unknown": 0}
    below_at: List[float] = []
    max_rel_err = 0.0
    allv = []
    for gi, (sc, ini) in enumerate(groups):
        ax = cv.ax(gi)
        s = ds.sel(scaling=sc, init=ini)
        panel = f"lambda_min(K_0) {ini}/{sc}"
        below_label = True
        for w, c in zip(widths, colors):
            sw = s.sel(width=w)
            value, err, ver, blo, bhi = _assessment(sw)
            st = np.asarray(sw["status"].transpose("n_samples", "seed").values).astype(str)
            seeds = stats.axis_values(sw, "seed")
            X = np.repeat(ns[:, None], len(seeds), axis=1)
            S_ = np.repeat(np.asarray(seeds)[None, :], len(ns), axis=0)
            have = (st != stats.STATUS_MISSING) & np.isfinite(value)
            if legacy:  # no verdicts recorded: every positive value counts, without error bars
                res, below = have & (value > 0), have & ~(value > 0)
            else:
                res, below = have & (ver == S_RESOLVED), have & (ver == S_BELOW)
            counts["resolved"] += int(res.sum())
            counts["below"] += int(below.sum())
            counts["unknown"] += int((have & ~res & ~below).sum())
            if (sc, ini) == default:
                below_at += [float(v) for v in X[below]]
                with np.errstate(invalid="ignore", divide="ignore"):
                    rel = err[res] / value[res]
                if rel.size and np.isfinite(rel).any():
                    max_rel_err = max(max_rel_err, float(np.nanmax(rel)))
            g = dict(width=w, scaling=sc, init=ini)
            # error bars: the error estimate, widened to the certificate's bracket where there is one
            lo_e = np.fmin(value - err, blo)
            hi_e = np.fmax(value + err, bhi)
            lo_e = np.where(lo_e > 0, lo_e, np.nan)  # a bar reaching 0 is drawn to the panel's bottom
            if res.any():
                floor = np.nanmin(value[res]) / 30
                _error_bars(ax, X[res], np.where(np.isfinite(lo_e[res]), lo_e[res], floor), hi_e[res], c)
                ax.plot(X[res], value[res], ls="none", marker="o", ms=4, color=c, alpha=0.75)
            ub = D.upper_bound(value, err)
            if below.any():
                D.mark_below_precision(ax, X[below], ub[below], c, label=below_label)
                below_label = False
            for xi, vi, ei, li, hi_, ui, sti, sdi, bi in zip(X.ravel(), value.ravel(), err.ravel(), blo.ravel(),
                                                           bhi.ravel(), ub.ravel(), st.ravel(), S_.ravel(),
                                                           below.ravel()):
                if sti == stats.STATUS_MISSING:
                    continue
                gr = dict(g, seed=sdi, status=sti, n_samples=xi)
                if bi:  # the stored value, and where it is drawn: its upper bound
                    cv.record(panel, "lambda_min_K0", "n_samples", xi, vi, "below_precision", **gr)
                    cv.record(panel, "lambda_min_K0", "n_samples", xi, ui, "upper_bound", **gr)
                else:
                    cv.record(panel, "lambda_min_K0", "n_samples", xi, vi, "run", **gr)
                if np.isfinite(ei):
                    cv.record(panel, "lambda_min_K0", "n_samples", xi, ei, "error", **gr)
                if np.isfinite(li) or np.isfinite(hi_):
                    cv.record(panel, "lambda_min_K0", "n_samples", xi, li, "certificate_low", **gr)
                    cv.record(panel, "lambda_min_K0", "n_samples", xi, hi_, "certificate_high", **gr)
            # the seed mean of the resolved values, and their trend
            mean = np.array([np.mean(value[k][res[k]]) if res[k].any() else np.nan for k in range(len(ns))])
            fin = np.isfinite(mean)
            if fin.any():
                ax.plot(ns[fin], mean[fin], color=c, lw=1, ls="-", marker="", label=f"width {w}")
                cv.record(panel, "lambda_min_K0", "n_samples", ns[fin], mean[fin], "mean", **g)
            fits[(sc, ini, w)] = _trend(cv, ax, X[res], value[res], c, f"fit width {w}", panel, "lambda_min_K0", g,
                                        D.group_label(width=w, init=ini, scaling=sc), conf)
            allv += list(value[res]) + list(ub[below]) + list(hi_e[res][np.isfinite(hi_e[res])])
            bound = _rank_bound_at(ds, w)
            if bound is not None and ns.min() <= bound <= ns.max():  # past it K_0 is singular by construction
                ax.axvline(bound, color=c, ls="--", lw=0.9, alpha=0.8, label=f"rank bound of K_0, width {w}: N = {bound:,}")
                cv.record(panel, "ntk_rank_bound", "n_samples", float(bound), float(bound), "rank_bound", **g)
        ax.set(xlabel="n_samples N", ylabel=r"$\lambda_{\min}(K_0)$", title=D.group_text(sc, ini))
        D.set_log(ax, "x", ns)
    data_part = _data_kernel(cv, ds, conf, allv)
    for ax in cv.visible_panels():
        D.set_log(ax, "y", allv)
    cv.title = "lambda_min of the NTK at initialisation against N"
    sc, ini = default
    wmax = max(widths)
    s = ds.sel(scaling=sc, init=ini)
    v_at = stats.epoch0_kernel(s, "lambda_min").sel(n_samples=ns.max()).values
    fin = np.isfinite(v_at)
    f = fits.get((sc, ini, wmax), stats._nan_fit())
    total = counts["resolved"] + counts["below"] + counts["unknown"]
    if legacy:
        status = f"{total} values, no error estimates recorded (every positive value is fitted)"
    else:
        status = f"{counts['resolved']} of {total} values resolved"
        if counts["below"]:
            status += (f", {counts['below']} below the precision of K (at N = "
                       f"{', '.join(f'{int(v):g}' for v in sorted(set(below_at)))}; not fitted)")
        if counts["unknown"]:
            status += f", {counts['unknown']} without an error estimate"
        if counts["resolved"]:
            status += f"; relative error at most {D.fmt(max_rel_err, 2)}"
    smallest = np.nanmin(v_at) if fin.any() else np.nan
    finding = (f"lambda_min(K_0) ({D.INIT_LABEL.get(ini, ini)}, {sc}): {status}; at N = {int(ns.max())} it ranges "
               f"over [{D.fmt(smallest)}, {D.fmt(np.nanmax(v_at) if fin.any() else np.nan)}] across widths"
               f"{' (<= 0: the assumption fails there)' if np.isfinite(smallest) and smallest <= 0 else ''}; "
               f"the resolved values scale as N^{D.ci(f)} at width {wmax}") + _rank_bound_clause(ds, ns) + data_part \
        + _duplicates_clause(ds)
    return cv, finding + D.diverged_clause(s)


def _rank_bound_at(ds, width):
    """``ntk_rank_bound`` of one width (None when the aggregate has none)."""
    if "ntk_rank_bound" not in ds:
        return None
    return int(ds["ntk_rank_bound"].sel(width=width).values)


def _rank_bound_clause(ds, ns) -> str:
    """The finding's clause on the NTK's own rank bound G(width): where N passes it, K_0 is singular by
    construction (lambda_min = 0 exactly, whatever the data)."""
    if "ntk_rank_bound" not in ds:
        return ""
    widths = stats.axis_values(ds, "width")
    bounds = {w: _rank_bound_at(ds, w) for w in widths}
    past = {w: b for w, b in bounds.items() if b < ns.max()}
    text = ", ".join(f"{b:,} at width {w}" for w, b in bounds.items())
    if not past:
        return f"; every N is below the NTK's rank bound ({text})"
    return (f"; N passes the NTK's rank bound at width {', '.join(str(w) for w in past)} (bound {text}): "
            "K_0 is singular by construction there, lambda_min(K_0) = 0 exactly")


def _duplicates_clause(ds) -> str:
    """The finding's clause on identical inputs (aggregate variable ``duplicate_inputs``): each one makes
    K_0 singular, so lambda_min(K_0) = 0 there for every width and seed, whatever the model."""
    if "duplicate_inputs" not in ds:
        return ""
    dup = np.asarray(ds["duplicate_inputs"].values, dtype=np.int64)
    ns = np.asarray(ds["n_samples"].values)
    if not dup.any():
        return "; no two inputs are identical at any N"
    first = int(np.argmax(dup > 0))
    counts = f"{int(dup[first])} at N = {int(ns[first])}" + (f", {int(dup[-1])} at N = {int(ns[-1])}"
                                                               if first < len(ns) - 1 else "")
    return (f"; from N = {int(ns[first])} on the data hold identical inputs ({counts}; a repeated review or two "
            f"sharing their first d_s words): K_0 is exactly singular there for every model")


def _data_kernel(cv, ds, conf: float, allv: list) -> str:
    """The data kernel's lambda_min on every panel (black squares): fitted only on resolved values below
    its rank limit d_s d; at and above it drawn open (or as an upper bound when below precision), never
    fitted.  Returns the finding's clause."""
    if "data_kernel_lambda_min" not in ds:
        return ""
    dk = ds["data_kernel_lambda_min"]

    def one(var):
        if var not in ds:
            return None
        da = ds[var]
        return np.asarray(da.isel({d: 0 for d in da.dims if d != "n_samples"}).values)
    xs = np.asarray(ds["n_samples"].values, dtype=float)
    ys = np.asarray(one("data_kernel_lambda_min"), dtype=float)
    err = one("data_kernel_lambda_min_error")
    err = np.full(ys.shape, np.nan) if err is None else np.asarray(err, dtype=float)
    ver = one("data_kernel_lambda_min_verdict")
    rank = dk.attrs.get("rank_limit")
    rank = int(rank) if rank is not None else None
    below_rank = xs < rank if rank is not None else np.ones(xs.shape, bool)
    resolved = (ys > 0) if ver is None else (np.asarray(ver).astype(str) == S_RESOLVED)
    fit_ok = resolved & below_rank & np.isfinite(ys)
    ub = D.upper_bound(ys, err)
    panel = "data kernel"
    first = True
    f = stats._nan_fit()
    for ax in cv.visible_panels():
        if fit_ok.any():
            ax.plot(xs[fit_ok], ys[fit_ok], color="k", marker="s", ms=4, ls="-", lw=1,
                    label=f"data kernel (N < d_s d = {rank})" if rank else "data kernel")
            if np.isfinite(err[fit_ok]).any():
                _error_bars(ax, xs[fit_ok], ys[fit_ok] - err[fit_ok], ys[fit_ok] + err[fit_ok], "k")
        at_rank = ~below_rank & resolved & np.isfinite(ys)
        if at_rank.any():
            ax.plot(xs[at_rank], ys[at_rank], color="k", marker="s", ms=5, ls="none", mfc="none",
                    label="data kernel at/above its rank limit (not fitted)")
        gone = ~resolved & np.isfinite(ys)
        if gone.any():
            ax.plot(xs[gone], ub[gone], color="k", marker="v", ms=6, ls="none", mfc="none",
                    label="data kernel below the precision of K (upper bound)")
        if first:
            first = False
            f = _trend(cv, ax, xs[fit_ok], ys[fit_ok], "k", "fit data kernel", panel, "data_kernel_lambda_min",
                       {}, "data kernel", conf)
        else:
            _plot_fit_again(ax, xs[fit_ok], ys[fit_ok], f, conf)
    for x, y, e, ok in zip(xs, ys, err, resolved):
        cv.record(panel, "data_kernel_lambda_min", "n_samples", x, y, "run" if ok else "below_precision", n_samples=x)
        if np.isfinite(e):
            cv.record(panel, "data_kernel_lambda_min", "n_samples", x, e, "error", n_samples=x)
    allv += list(ys[resolved & np.isfinite(ys)]) + list(ub[~resolved & np.isfinite(ys)])
    n_fit = int(fit_ok.sum())
    clause = f"; the data kernel's lambda_min scales as N^{D.ci(f)} below its rank limit d_s d = {rank} (fitted on {n_fit} N)"
    if not np.isfinite(f["slope"]):
        clause = f"; the data kernel's lambda_min has too few resolved values below its rank limit d_s d = {rank} to fit"
    gone_n = xs[~resolved & np.isfinite(ys)]
    if gone_n.size:
        clause += (f", and is below the precision of K at N = {', '.join(f'{int(v):g}' for v in gone_n)}"
                   + (" (rank <= d_s d < N)" if rank is not None and np.all(gone_n >= rank) else ""))
    return clause


def _plot_fit_again(ax, x, y, f, conf):
    """The data kernel's fit on a further panel (drawn and labelled like the first; recorded once)."""
    if not np.isfinite(f["slope"]):
        return
    xl = np.unique(x)
    ax.plot(xl, np.exp(f["intercept"]) * xl ** f["slope"], color="k", ls=":", lw=1.5, label=f"fit data kernel: N^{D.ci(f)}")


register(Analysis(
    name="text_assumption", section="realdata", paper="Sec. 5",
    summary="lambda_min(K_0) of review text vs n_samples (and the data kernel's)",
    numbers=text_assumption,
    aggregate_vars=data_kernel_vars,
    caption="""**Assumption check on review text** (paper Sec. 5): the minimum eigenvalue ``lambda_min(K_0)``
of the model's empirical NTK at initialisation against n_samples N on log axes, one panel per (init,
scaling) and one colour per width. Each run is a dot with an error bar: its error estimate (the rounding
of K, eps_K N max diag K in the Gram precision, plus the solver's error), widened to the Cholesky
certificate's bracket where the spectrum was iterative; a value below the precision of K is an open
down-triangle at its upper bound and is never fitted. The line is the seed mean of the resolved values,
the dotted line and band the fitted power law N^slope with its confidence interval (resolved values
only). The data kernel's minimum eigenvalue (black squares) is fitted only below its rank limit
d_s x d; at and above it, it is drawn open and not fitted. A dashed vertical line (a width's colour)
marks the NTK's own rank bound where it falls inside the N range: past it K_0 has more rows than its
factor F (K_0 = F F^T) has columns, so it is singular by construction. The assumption holds when
lambda_min stays resolved and away from zero as N grows.""",
))
