"""Convergence of the training loss (paper Sec. 5.1, claims 1-3): loss curves, the theory's rate, the
initialisation comparison and the over-parameterisation exponent.

Each analysis: a numbers function (aggregate, settings -> Canvas and finding) and its `register`
call; see `tfconv.analyses.registry`.
"""
from __future__ import annotations


import numpy as np

from . import draw as D
from ..figures.canvas import Canvas
from . import stats as A
from ..registry import Analysis, Requires, register


def loss_per_width(ds, settings) -> tuple:
    """Training loss vs epoch (log y) per width, LeCun & tau0 = d_m^-1/2 when present (paper Sec. 5.1)."""
    ds, n = D.prepare(ds)
    sc, ini = D.default_group(ds)
    sub = ds.sel(scaling=sc, init=ini)
    cv = Canvas("loss_per_width", 1, panel_size=(6.5, 4.5))
    ax = cv.ax(0)
    widths = A.axis_values(sub, "width")
    rate, r2 = A.rates(sub, settings)
    finals = []
    for w, c in zip(widths, D.colors(len(widths))):
        _, mean = D.draw_seed_curves(cv, ax, sub.sel(width=w), "loss", "epoch", c, f"width {w}", "loss",
                                    dict(width=w, scaling=sc, init=ini, n_samples=n))
        finals.append(mean[-1] if mean.size else np.nan)
    D.set_log(ax, "y", sub["loss"].values)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"training loss ({sub.attrs.get('loss', 'mean')})")
    ax.set_title(f"init={ini}, scaling={sc}{D.note_n(n)}", fontsize=9)
    thr = float(settings.get("linear_fit_r2", 0.9))
    min_r2 = [float(np.nanmin(r2.sel(width=w).values)) if np.any(np.isfinite(r2.sel(width=w).values)) else np.nan
              for w in widths]
    k = sum(1 for v in min_r2 if np.isfinite(v) and v >= thr)
    fin = [(w, f) for w, f in zip(widths, finals) if np.isfinite(f)]
    finding = (f"{ini}/{sc}: log-loss is linear in epoch (R^2 >= {D.fmt(thr)} over the rate window) at "
               f"{k} of {len(widths)} widths (lowest R^2 {D.fmt(np.nanmin(min_r2) if np.any(np.isfinite(min_r2)) else np.nan)})")
    if fin:
        finding += (f"; final loss (seed mean) is {D.fmt(fin[0][1])} at width {fin[0][0]} and "
                    f"{D.fmt(fin[-1][1])} at width {fin[-1][0]}")
    finding += D.diverged_clause(sub)
    return cv, finding

register(Analysis(
    name="loss_per_width", section="convergence", paper="Sec. 5.1",
    summary="training loss per epoch (log), one line per width",
    requires=Requires(), numbers=loss_per_width,
    caption="""**Training loss per width** (paper Sec. 5.1): training loss against epoch on a log axis, one
line per width, for init LeCun and scaling inv_sqrt when the grid has them (else the first value).
A straight line on this axis is linear (geometric) convergence. The finding reports at how many
widths the log-loss fit over the rate window {rate_window} of the budget reaches
R^2 >= {linear_fit_r2}, and the final loss at the smallest and largest width.""",
))


def theory_rate(ds, settings) -> tuple:
    """Measured loss curves beside the predicted decay L_0 exp(-rate t) from lambda_min(K_0); stable step size."""
    ds, n = D.prepare(ds)
    conf = float(settings.get("confidence", 0.95))
    N = float(n) if n is not None else A.n_samples_of(ds, settings.get("n_samples"))
    eta = float(ds.attrs.get("step_size", settings.get("step_size", np.nan)))
    loss_kind = str(ds.attrs.get("loss", settings.get("loss", "mean")))
    groups = D.groups(ds)
    widths = A.axis_values(ds, "width")
    colors = D.colors(len(widths))
    cv = Canvas("theory_rate", len(groups) + 1)
    rate, _ = A.rates(ds, settings)
    ratios, too_big = [], []
    for gi, (sc, ini) in enumerate(groups):
        ax = cv.ax(gi)
        s = ds.sel(scaling=sc, init=ini)
        for w, c in zip(widths, colors):
            sw = s.sel(width=w)
            g = dict(width=w, scaling=sc, init=ini, n_samples=n)
            x, mean = D.draw_seed_curves(cv, ax, sw, "loss", "epoch", c, f"width {w}", f"{ini}/{sc}", g)
            present = D.run_status(sw) != "missing"
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
        D.set_log(ax, "y", vals)
        fin = vals[np.isfinite(vals) & (vals > 0)]
        if fin.size:
            ax.set_ylim(fin.min() / 3, fin.max() * 3)
        ax.plot([], [], color="k", ls=":", label="predicted L_0 exp(-rate t)")
        ax.set(xlabel="epoch", ylabel="training loss", title=f"init={ini}, scaling={sc}{D.note_n(n)}")
        # stable step size 2N/lambda_max(K_0) vs width
        x, y, st, sd = D.flat(s, A.epoch0_kernel(s, "lambda_max"), "width")
        stable = np.asarray(A.stable_step_size(y, N, loss_kind), dtype=float) if y.size else y
        D.draw_runs_fit(cv, cv.ax(len(groups)), x, stable, st, sd, D.GROUP_COLORS[gi % 10], f"{ini}/{sc}",
                       "stable step size", "stable_step_size", "width", dict(scaling=sc, init=ini, n_samples=n),
                       D.group_label(init=ini, scaling=sc), conf)
        bad = sorted({int(xi) for xi, v, t in zip(x, stable, st) if t != "missing" and np.isfinite(v) and eta > v})
        if bad:
            too_big.append(f"{ini}/{sc} width {', '.join(map(str, bad))}")
    ax = cv.ax(len(groups))
    ax.axhline(eta, color="red", ls="--", lw=1, label=f"configured step size {eta:g}")
    cv.record("stable step size", "step_size", "width", [min(widths), max(widths)], [eta, eta], "reference")
    stable_word = "2N/lambda_max(K_0)" if loss_kind == "mean" else "2/lambda_max(K_0)"
    ax.set(xlabel="width", ylabel=f"stable step {stable_word}", title=f"N = {D.fmt(N)}, loss = {loss_kind}")
    D.set_log(ax, "x", widths)
    D.set_log(ax, "y", [r["y"] for r in cv.rows if r["quantity"] == "stable_step_size"] + [eta])
    if ratios:
        finding = (f"measured/predicted rate ratio (seed means, all widths) ranges over "
                   f"[{D.fmt(min(ratios))}, {D.fmt(max(ratios))}] (median {D.fmt(float(np.median(ratios)))})")
    else:
        finding = "no predicted rate could be formed (needs lambda_min(K_0) > 0, N and eta lambda_min/N < 1)"
    if too_big:
        finding += f"; step size {eta:g} exceeds the stable step {stable_word} at " + "; ".join(too_big)
    else:
        finding += f"; step size {eta:g} is below the stable step {stable_word} at every width"
    return cv, finding + D.diverged_clause(ds)

register(Analysis(
    name="theory_rate", section="convergence", paper="beyond",
    summary="measured loss beside the predicted decay from lambda_min(K_0); stable step size vs width",
    requires=Requires(gram=True), numbers=theory_rate,
    caption="""**Measured against predicted rate** (beyond the paper): every panel draws the measured loss
(seed mean per width, solid) beside the theory's linear decay ``L_0 exp(-rate t)`` (dotted) with
``rate = -2 log(1 - eta lambda_min(K_0)/N)`` (mean loss; ``eta`` instead of ``eta/N`` for the sum
loss), from the linearised dynamics, averaged over seeds. The last panel draws the stable step size
``2N / lambda_max(K_0)`` (mean loss; ``2 / lambda_max`` for the sum loss) against width with the
configured step size {step_size} as a red line; the finding names the widths
where the step exceeds it (for any seed).""",
))


def init_comparison(ds, settings) -> tuple:
    """LeCun vs He vs NTK at equal width and step size: loss curves at the largest width, rate vs width."""
    ds, n = D.prepare(ds)
    sc = A.preferred(A.axis_values(ds, "scaling"), "inv_sqrt")
    inits = A.axis_values(ds, "init")
    widths = A.axis_values(ds, "width")
    wmax = max(widths)
    conf = float(settings.get("confidence", 0.95))
    cv = Canvas("init_comparison", 2)
    sub = ds.sel(scaling=sc)
    rate, _ = A.rates(sub, settings)
    rate_at = {}
    for k, ini in enumerate(inits):
        c = D.GROUP_COLORS[k % 10]
        D.draw_seed_curves(cv, cv.ax(0), sub.sel(init=ini, width=wmax), "loss", "epoch", c, f"init {ini}",
                          "loss at largest width", dict(width=wmax, scaling=sc, init=ini, n_samples=n))
        s = sub.sel(init=ini)
        x, y, st, sd = D.flat(s, rate.sel(init=ini), "width")
        D.draw_runs_fit(cv, cv.ax(1), x, y, st, sd, c, f"init {ini}", "rate vs width", "rate", "width",
                       dict(scaling=sc, init=ini, n_samples=n), D.group_label(init=ini, scaling=sc), conf)
        rate_at[ini] = float(np.nanmean(rate.sel(init=ini, width=wmax).values)) \
            if np.any(np.isfinite(rate.sel(init=ini, width=wmax).values)) else np.nan
    D.set_log(cv.ax(0), "y", sub["loss"].sel(width=wmax).values)
    cv.ax(0).set(xlabel="epoch", ylabel="training loss", title=f"width {wmax}, scaling={sc}, step {ds.attrs.get('step_size', '?')}")
    cv.ax(1).set(xlabel="width", ylabel="fitted linear rate per epoch", title=f"scaling={sc}")
    D.set_log(cv.ax(1), "x", widths)
    D.set_log(cv.ax(1), "y", rate.values)
    parts = ", ".join(f"{i} {D.fmt(v)}" for i, v in rate_at.items())
    finding = f"at width {wmax} ({sc}) the fitted rate per epoch is: {parts}"
    if "ntk" in rate_at:
        for i in ("lecun", "he"):
            if i in rate_at:
                pr = A.paired_ratio(rate.sel(init=i, width=wmax).values, rate.sel(init="ntk", width=wmax).values, conf)
                if pr["n"]:
                    finding += f"; {i}/ntk rate ratio {D.fmt(pr['ratio'])} (paired by seed, {pr['n']} pair(s))"
    finding += D.diverged_clause(sub)
    return cv, finding

register(Analysis(
    name="init_comparison", section="convergence", paper="claim 3",
    summary="LeCun vs He vs NTK: loss at the largest width, fitted rate vs width",
    requires=Requires(axes={"init": 2}), numbers=init_comparison,
    caption="""**Initialisation comparison** (claim 3): left, the training loss of every init at the largest
width and the same step size (scaling inv_sqrt when present); right, the fitted linear rate per epoch
(``-d log L / d epoch`` over the rate window {rate_window}) against width per init,
log-log with fitted slopes.""",
))


def overparam_exponent(ds, settings) -> tuple:
    """Smallest sufficient width vs n_samples, log-log fit with its interval and references of slope 2 and 3."""
    ds = A.complete_axes(ds)
    conf = float(settings.get("confidence", 0.95))
    target = float(settings.get("loss_target", 1e-3))
    frac = float(settings.get("success_fraction", 0.9))
    cv = Canvas("overparam_exponent", 1, panel_size=(6.5, 4.8))
    ax = cv.ax(0)
    if "n_samples" not in ds.dims:
        return cv, D.empty(cv, "overparam_exponent needs an n_samples axis in the grid; none was found")
    table = A.smallest_sufficient_width(ds, target, frac)
    wmax = max(A.axis_values(ds, "width"))
    parts = []
    anchor = None
    for k, (sc, ini) in enumerate(D.groups(ds)):
        c = D.GROUP_COLORS[k % 10]
        t = table[(table["scaling"] == sc) & (table["init"] == ini)]
        fit = A.overparam_exponent(t, conf)
        nn = np.asarray(t["n_samples"], dtype=float)
        ws = np.asarray(t["width_star"], dtype=float)
        cens = np.asarray(t["censored"], dtype=bool)
        g = dict(scaling=sc, init=ini)
        lab = f"{ini}/{sc}" + (f": slope {D.ci(fit)}" if np.isfinite(fit["slope"]) else "")
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
            cv.add_slope("width_star vs n_samples", D.group_label(init=ini, scaling=sc), fit)
            if anchor is None:
                anchor = (xs[0], yfit[0], xs)
        verdict = ("within" if fit.get("within_ci_2") else "above" if fit.get("below_2") else "below") \
            if np.isfinite(fit["slope"]) else "undetermined"
        parts.append(f"{ini}/{sc} {D.ci(fit)} (n={fit['n']}, {fit['n_censored']} censored; theory 2 is {verdict} the interval)")
    if anchor is not None:
        x0, y0, xs = anchor
        for p, ls in ((2, "--"), (3, "-.")):
            yr = y0 * (xs / x0) ** p
            ax.plot(xs, yr, color="grey", ls=ls, lw=1, label=f"reference slope {p}")
            cv.record("width_star", f"reference_slope_{p}", "n_samples", xs, yr, "reference")
    ax.plot([], [], marker="^", mfc="none", color="k", ls="none", label=f"no sufficient width <= {wmax}")
    ax.set(xlabel="n_samples", ylabel="smallest sufficient width",
           title=f"loss_E/loss_0 <= {target:g} in >= {frac:g} of seeds")
    D.set_log(ax, "x", table["n_samples"])
    D.set_log(ax, "y", list(table["width_star"]) + [wmax])
    finding = "smallest sufficient width grows as n_samples^slope: " + "; ".join(parts)
    return cv, finding

register(Analysis(
    name="overparam_exponent", section="convergence", paper="claim 1",
    summary="smallest sufficient width vs n_samples, log-log fit",
    requires=Requires(axes={"n_samples": 2, "width": 2}), numbers=overparam_exponent,
    caption="""**Over-parameterisation exponent** (beyond the paper, claim 1): the smallest width of the ladder
at which at least {success_fraction} of the seeds end the budget complete with
``loss_E / loss_0 <= {loss_target}``, against n_samples, log-log, with the
fitted slope, its interval (shaded) and reference lines of slope 2 (the paper) and 3. Hollow
triangles mark n_samples where no width of the ladder suffices (censored, left out of the fit).""",
))
