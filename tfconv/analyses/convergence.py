"""Convergence of the training loss (paper Sec. 5.1, claims 1-3): loss curves beside the kernel's
prediction, how far from lazy each width is, the initialisation comparison and the
over-parameterisation exponent.

Each analysis: a numbers function (aggregate, settings -> Canvas and finding) and its `register`
call; see `tfconv.registry`.  Every rate is `stats.rates` (late window, measured and linearised
alike); every ratio is `stats.paired_ratio`.
"""
from __future__ import annotations

import numpy as np

from ..figures.canvas import Canvas
from ..registry import Analysis, register
from . import draw as D
from . import stats


def _step_note(ds, step) -> str:
    return f", step {step}" if step is not None else f", step {ds.attrs.get('step', '?')}"


# ---------------------------------------------------------------------------------------------
# loss_per_width
# ---------------------------------------------------------------------------------------------

def loss_per_width(ds, settings) -> tuple:
    """Training loss vs epoch (log) per width with the linearised prediction (dotted); default group."""
    ds, n = D.prepare(ds)
    ds, step = D.first_step(ds)
    sc, ini = D.default_group(ds)
    sub = ds.sel(scaling=sc, init=ini)
    cv = Canvas("loss_per_width", 1, panel_size=(6.2, 4.4))
    ax = cv.ax(0)
    widths = stats.axis_values(sub, "width")
    meas, pred = stats.rates(sub, settings), stats.rates(sub, settings, "loss_linearised")
    parts = []
    for w, c in zip(widths, D.colors(len(widths))):
        s = sub.sel(width=w)
        g = dict(width=w, scaling=sc, init=ini, n_samples=n)
        kernel_only = bool((D.run_status(s) == stats.STATUS_KERNEL_ONLY).all())
        if not kernel_only:
            D.draw_seed_curves(cv, ax, s, "loss", "epoch", c, f"width {w}", "loss", g)
        D.draw_seed_curves(cv, ax, s, "loss_linearised", "epoch", c,
                           f"width {w}: linearised" + (" (kernel only)" if kernel_only else ""), "loss", g,
                           ls=":", band=False, marker="", stat="predicted")
        rm = float(np.nanmedian(meas["rate"].sel(width=w).values)) if np.isfinite(meas["rate"].sel(width=w).values).any() else np.nan
        rp = float(np.nanmedian(pred["rate"].sel(width=w).values)) if np.isfinite(pred["rate"].sel(width=w).values).any() else np.nan
        gaps = [stats.linearisation_gap(s["loss"].sel(seed=sd).values, s["loss_linearised"].sel(seed=sd).values)
                for sd in stats.axis_values(s, "seed")] if "loss_linearised" in s and not kernel_only else []
        gap = float(np.nanmedian(gaps)) if np.isfinite(gaps).any() else np.nan
        parts.append(f"width {w}: rate {D.fmt(rm)} measured vs {D.fmt(rp)} linearised"
                     + (f", gap {D.fmt(gap, 2)} decades" if np.isfinite(gap) else ""))
    vals = D.values_of_good_runs(sub, "loss", "loss_linearised")
    D.set_log(ax, "y", vals)
    D.log_ylim(ax, vals)
    ax.set(xlabel="epoch", ylabel=f"training loss ({sub.attrs.get('loss', 'mean')})",
           title=f"{D.group_text(sc, ini)}{D.note_n(n)}{_step_note(ds, step)}")
    cv.title = "Training loss per width, with the kernel's prediction"
    finding = (f"{ini}/{sc}: late-window rate (median seed) " + "; ".join(parts)
               + "; the gap is the largest distance in decades between the measured and the linearised loss")
    return cv, finding + D.diverged_clause(sub)


register(Analysis(
    name="loss_per_width", section="convergence", paper="Sec. 5.1",
    summary="training loss per epoch (log), one line per width, with the linearised prediction",
    numbers=loss_per_width, claims=(2,),
    caption="""**Training loss per width** (paper Sec. 5.1): the training loss against epoch on a log axis,
one colour per width (seed mean, band from the lowest to the highest seed), for LeCun and
tau0 = d_m^-1/2 when the grid has them. Dotted: the loss of gradient descent on the model linearised at
initialisation, ``L_t = 1/(2N) sum_i (1 - eta lambda_i/N)^(2t) (u_i^T r_0)^2`` from each run's K_0 and
initial residual (exact for the linearised model). A straight solid line is geometric convergence; the
distance to the dotted line is how far the run is from the kernel regime (reported as the gap in
decades). Rates are measured over the range of L/L_0 {rate_range} (from the first value down to the float floor; tfconv.analyses.stats.range_rate), on both curves alike.""",
))


# ---------------------------------------------------------------------------------------------
# kernel_prediction
# ---------------------------------------------------------------------------------------------

def kernel_prediction(ds, settings) -> tuple:
    """Per group: measured vs linearised loss per width with the lambda_min bound; the gap vs width;
    the stability limit vs width with each run's step."""
    ds, n = D.prepare(ds)
    ds, step = D.first_step(ds)
    conf = float(settings["confidence"])
    N = float(n) if n is not None else stats.n_samples_of(ds)
    loss_kind = str(ds.attrs.get("loss", "mean"))
    groups = D.groups(ds)
    widths = stats.axis_values(ds, "width")
    colors = D.colors(len(widths))
    cv = Canvas("kernel_prediction", len(groups) + 2)
    c_bound = float(settings["bound_constant"])
    gaps_by_group = {}
    for gi, (sc, ini) in enumerate(groups):
        ax = cv.ax(gi)
        s = ds.sel(scaling=sc, init=ini)
        for w, c in zip(widths, colors):
            sw = s.sel(width=w)
            g = dict(width=w, scaling=sc, init=ini, n_samples=n)
            trained = bool((D.run_status(sw) == stats.STATUS_COMPLETE).any() or (D.run_status(sw) == stats.STATUS_DIVERGED).any())
            if trained:
                D.draw_seed_curves(cv, ax, sw, "loss", "epoch", c, f"width {w}", f"{ini}/{sc}", g)
            D.draw_seed_curves(cv, ax, sw, "loss_linearised", "epoch", c, None, f"{ini}/{sc}", g, ls=":", band=False,
                               marker="", stat="predicted")
            # the lambda_min bound of the median seed, drawn as the bound it is
            present = D.run_status(sw) != stats.STATUS_MISSING
            if present.any() and "eta" in sw:
                k = int(np.nonzero(present)[0][len(np.nonzero(present)[0]) // 2])
                r = sw.isel(seed=k)
                L = np.asarray(r["loss_linearised" if not trained else "loss"].values, dtype=float)
                b = stats.geometric_bound(L[0], float(r["eta"].values), float(stats.epoch0_kernel(r, "lambda_min").values),
                                          L.size - 1, N, loss_kind, c_bound)
                if np.isfinite(b).any():
                    x = np.asarray(sw["epoch"].values, dtype=float)
                    ax.plot(x, b, color=c, ls="--", lw=0.8, alpha=0.7)
                    cv.record(f"{ini}/{sc}", "lambda_min_bound", "epoch", x, b, "predicted", **dict(g, seed=stats.axis_values(sw, "seed")[k]))
        vals = D.values_of_good_runs(s, "loss", "loss_linearised")
        D.set_log(ax, "y", vals)
        D.log_ylim(ax, vals)
        ax.plot([], [], color="k", ls=":", label="linearised (from K_0)")
        ax.plot([], [], color="k", ls="--", lw=0.8, label=rf"bound $L_0(1-{c_bound:g}\,\eta\lambda_{{\min}}/N)^{{2t}}$")
        ax.set(xlabel="epoch", ylabel="training loss", title=D.group_text(sc, ini))
        # gap vs width for this group
        x, y, st, sd = D.flat(s, _gap(s), "width")
        st = np.where(st == stats.STATUS_KERNEL_ONLY, stats.STATUS_MISSING, st)
        sty = D.group_style(sc, ini, gi)
        gaps_by_group[(sc, ini)] = D.draw_runs_fit(
            cv, cv.ax(len(groups)), x, y, st, sd, sty["color"], D.group_text(sc, ini), "linearisation gap",
            "linearisation_gap", "width", dict(scaling=sc, init=ini, n_samples=n), D.group_label(init=ini, scaling=sc),
            conf, marker=sty["marker"], ls=sty["ls"])
        # stability limit vs width, with each run's step
        x, y, st, sd = D.flat(s, s["step_limit"] if "step_limit" in s else stats.epoch0_kernel(s, "lambda_max") * np.nan, "width")
        D.draw_runs_fit(cv, cv.ax(len(groups) + 1), x, y, st, sd, sty["color"], D.group_text(sc, ini) + ": limit",
                        "stability limit", "step_limit", "width", dict(scaling=sc, init=ini, n_samples=n),
                        D.group_label(init=ini, scaling=sc), conf, marker=sty["marker"], ls=sty["ls"])
        if "eta" in s:
            x, y, st, sd = D.flat(s, s["eta"], "width")
            ok = np.isfinite(y) & (st != stats.STATUS_MISSING)
            cv.ax(len(groups) + 1).plot(x[ok], y[ok], ls="none", marker="_", ms=10, color=sty["color"])
            cv.record("stability limit", "eta", "width", x[ok], y[ok], "run", scaling=sc, init=ini)
    ax = cv.ax(len(groups))
    ax.set(xlabel="width", ylabel="max |log10 L - log10 L_lin| (decades)", title="distance from the kernel regime")
    D.set_log(ax, "x", widths)
    D.set_log(ax, "y", [r["y"] for r in cv.rows if r["quantity"] == "linearisation_gap"])
    ax = cv.ax(len(groups) + 1)
    ax.plot([], [], ls="none", marker="_", ms=10, color="k", label=r"step $\eta$ of each run")
    stable_word = "2N/lambda_max(K_0)" if loss_kind == "mean" else "2/lambda_max(K_0)"
    ax.set(xlabel="width", ylabel=f"stability limit {stable_word}", title=f"step and stability limit (N = {D.fmt(N)})")
    D.set_log(ax, "x", widths)
    D.set_log(ax, "y", [r["y"] for r in cv.rows if r["quantity"] in ("step_limit", "eta")])
    cv.title = "Measured loss against the kernel's prediction"
    parts = "; ".join(f"{ini}/{sc} {D.ci(f)}" for (sc, ini), f in gaps_by_group.items())
    over = []
    if "eta" in ds and "step_limit" in ds:
        ratio = (ds["eta"] / ds["step_limit"]).values
        if np.isfinite(ratio).any():
            over = [f"eta/limit ranges over [{D.fmt(np.nanmin(ratio))}, {D.fmt(np.nanmax(ratio))}]"]
    finding = f"width slope of the linearisation gap (decades): {parts}" + ("; " + over[0] if over else "")
    return cv, finding + D.diverged_clause(ds)


def _gap(s):
    """linearisation_gap per run of `s` as a DataArray over its run axes."""
    import xarray as xr

    axes = list(s["status"].dims)
    loss = s["loss"].transpose(*axes, "epoch").values
    lin = s["loss_linearised"].transpose(*axes, "epoch").values if "loss_linearised" in s else np.full_like(loss, np.nan)
    out = np.full(loss.shape[:-1], np.nan)
    for idx in np.ndindex(*out.shape):
        out[idx] = stats.linearisation_gap(loss[idx], lin[idx])
    return xr.DataArray(out, coords={a: s[a].values for a in axes}, dims=axes)


register(Analysis(
    name="kernel_prediction", section="convergence", paper="beyond",
    summary="measured loss beside the linearised prediction and the lambda_min bound; gap and stability limit vs width",
    numbers=kernel_prediction, claims=(2,),
    caption="""**Measured loss against the kernel's prediction** (beyond the paper): one panel per init and
scaling draws the measured loss per width (solid, seed mean and band), the loss of the linearised model
from each run's K_0 (dotted) and the theory's bound ``L_0 (1 - c eta lambda_min(K_0)/N)^(2t)`` with
c = {bound_constant} (dashed, median seed): the lambda_min rate is a bound on the slowest mode, not a
fit. Next panel: the linearisation gap (the largest distance in decades between measured and
linearised loss) against width, with its log-log slope: zero in the kernel regime. Last panel: each
run's stability limit ``2N / lambda_max(K_0)`` (mean loss) against width with each run's step
(horizontal ticks; the configured step is {step_size}).""",
))


# ---------------------------------------------------------------------------------------------
# init_comparison
# ---------------------------------------------------------------------------------------------

def init_comparison(ds, settings) -> tuple:
    """LeCun vs He vs NTK: loss at the largest trained width, late-window rate vs width (measured points,
    linearised lines), one row per step setting."""
    ds, n = D.prepare(ds)
    sc = stats.preferred(stats.axis_values(ds, "scaling"), "inv_sqrt")
    inits = stats.axis_values(ds, "init")
    steps = stats.axis_values(ds, "step_size") or [None]
    conf = float(settings["confidence"])
    cv = Canvas("init_comparison", 2 * len(steps), ncols=2)
    parts = []
    for si, step in enumerate(steps):
        sub = (ds.sel(step_size=step) if step is not None else ds).sel(scaling=sc)
        trained = [w for w in stats.axis_values(sub, "width") if (D.run_status(sub.sel(width=w)) != stats.STATUS_KERNEL_ONLY).any()]
        wmax = max(trained) if trained else max(stats.axis_values(sub, "width"))
        meas, pred = stats.rates(sub, settings), stats.rates(sub, settings, "loss_linearised")
        st_label = f"step {step}" if step is not None else f"step {ds.attrs.get('step', '?')}"
        for k, ini in enumerate(inits):
            sty = D.group_style(sc, ini, k)
            g = dict(width=wmax, scaling=sc, init=ini, n_samples=n)
            D.draw_seed_curves(cv, cv.ax(2 * si), sub.sel(init=ini, width=wmax), "loss", "epoch", sty["color"],
                               D.INIT_LABEL.get(ini, ini), f"loss, {st_label}", g)
            x, y, st, sd = D.flat(sub.sel(init=ini), meas["rate"].sel(init=ini), "width")
            D.draw_runs_fit(cv, cv.ax(2 * si + 1), x, y, st, sd, sty["color"], f"{D.INIT_LABEL.get(ini, ini)} measured",
                            f"rate, {st_label}", "rate", "width", dict(scaling=sc, init=ini, n_samples=n),
                            D.group_label(init=ini, scaling=sc, step=step), conf, fit=False, marker=sty["marker"], ls="none")
            pm, _, _ = stats.mean_band(pred["rate"].sel(init=ini).transpose("width", "seed").values, axis=1)
            xw = np.asarray(sub["width"].values, dtype=float)
            if np.isfinite(pm).any():
                cv.ax(2 * si + 1).plot(xw[np.isfinite(pm)], pm[np.isfinite(pm)], color=sty["color"], ls=":",
                                       label=f"{D.INIT_LABEL.get(ini, ini)} linearised")
            cv.record(f"rate, {st_label}", "rate_predicted", "width", xw, pm, "predicted", scaling=sc, init=ini)
        D.set_log(cv.ax(2 * si), "y", sub["loss"].sel(width=wmax).values)
        cv.ax(2 * si).set(xlabel="epoch", ylabel="training loss", title=f"width {wmax}, {st_label}")
        cv.ax(2 * si + 1).set(xlabel="width", ylabel="late-window rate per epoch", title=f"{D.scaling_text(sc)}, {st_label}")
        D.set_log(cv.ax(2 * si + 1), "x", stats.axis_values(sub, "width"))
        D.set_log(cv.ax(2 * si + 1), "y", np.concatenate([meas["rate"].values.ravel(), pred["rate"].values.ravel()]))
        ratios = {}  # init -> (width, paired ratio): the claims table's width and number (claim 3)
        for a in ("lecun", "he"):
            if a in inits and "ntk" in inits:
                w, res = stats.ratio_at_largest_width(meas["rate"].sel(init=a), meas["rate"].sel(init="ntk"), conf)
                if res["n"]:
                    ratios[a] = (w, res)
        parts.append(f"{st_label}: " + _ratios_text(ratios, wmax))
    cv.title = "Initialisation: LeCun / He / NTK"
    return cv, "; ".join(parts) + " (paired by seed)" + D.diverged_clause(ds)


def _ratios_text(ratios, wmax) -> str:
    """'rate ratio at width W lecun/ntk r [lo, hi], he/ntk ...' (each ratio at its own width when they differ)."""
    def one(a, res):
        return f"{a}/ntk {D.fmt(res['ratio'])} [{D.fmt(res['ci_low'])}, {D.fmt(res['ci_high'])}]"

    widths = {w for w, _ in ratios.values()}
    if len(widths) > 1:
        return "rate ratio " + ", ".join(f"{one(a, res)} at width {w}" for a, (w, res) in ratios.items())
    at = widths.pop() if widths else wmax
    return f"rate ratio at width {at} " + (", ".join(one(a, res) for a, (_, res) in ratios.items()) or "not available")


register(Analysis(
    name="init_comparison", section="convergence", paper="claim 3",
    summary="LeCun vs He vs NTK: loss at the largest width, measured and linearised rate vs width, per step setting",
    numbers=init_comparison, claims=(3,),
    caption="""**Initialisation comparison** (claim 3): for every step setting of the grid ({step_size}: a
fixed step is the paper's Algorithm 1, a common step for every init; '<c>limit' gives each run c times its
own stability limit ``2N/lambda_max(K_0)``), left: the training loss of every init at the largest trained
width (scaling inv_sqrt when present); right: the late-window rate per epoch against width, one point per
run (measured) and the seed mean of the linearised prediction (dotted). The finding gives the paired
ratio LeCun/NTK (and He/NTK) with its interval at the largest width with two seed pairs or more (the
width and number of the claims table).""",
))


# ---------------------------------------------------------------------------------------------
# overparam_exponent
# ---------------------------------------------------------------------------------------------

def overparam_exponent(ds, settings) -> tuple:
    """Smallest sufficient width vs n_samples: kernel-stability criterion and each loss target; the
    width = N^2 line; the fitted exponents with intervals."""
    ds = stats.complete_axes(ds)
    conf = float(settings["confidence"])
    frac = float(settings["success_fraction"])
    cv = Canvas("overparam_exponent", 1, panel_size=(6.4, 4.8))
    ax = cv.ax(0)
    if "n_samples" not in ds.dims:
        return cv, D.empty(cv, "overparam_exponent needs an n_samples axis in the grid; none was found")
    ds, _ = D.first_step(ds)
    sc = stats.preferred(stats.axis_values(ds, "scaling"), "inv_sqrt")
    ini = stats.preferred(stats.axis_values(ds, "init"), "lecun", "he")
    sub = ds.sel(scaling=[sc], init=[ini])
    wmax = max(stats.axis_values(ds, "width"))
    criteria = [("kernel", None, f"kernel-stable (max |K_t-K_0|/|K_0| <= {settings['kernel_stability']:g})")]
    criteria += [("loss", t, f"loss_E/loss_0 <= {t:g}") for t in settings["loss_targets"]]
    markers = ["o", "s", "^", "D", "v"]
    parts = []
    ns_all = np.asarray(stats.axis_values(ds, "n_samples"), dtype=float)
    for k, (crit, target, label) in enumerate(criteria):
        table = stats.smallest_sufficient_width(sub, crit, target if target is not None else 1e-3, frac,
                                                float(settings["kernel_stability"]))
        fit = stats.overparam_exponent(table, conf)
        nn = np.asarray(table["n_samples"], dtype=float)
        ws = np.asarray(table["width_star"], dtype=float)
        cens = np.asarray(table["censored"], dtype=bool)
        c = D.GROUP_COLORS[k % 10]
        lab = label + (f": slope {D.ci(fit)}" if np.isfinite(fit["slope"]) else "")
        if (~cens).any():
            ax.plot(nn[~cens], ws[~cens], marker=markers[k % 5], color=c, ls="none", label=lab)
        g = dict(scaling=sc, init=ini)
        for ni, wi in zip(nn[~cens], ws[~cens]):
            cv.record("width_star", f"width_star_{crit}" + (f"_{target:g}" if target else ""), "n_samples", ni, wi, "run",
                      **dict(g, n_samples=ni))
        if cens.any():
            ax.plot(nn[cens], np.full(cens.sum(), wmax), marker=markers[k % 5], color=c, ls="none", mfc="none")
            for ni in nn[cens]:
                cv.record("width_star", f"width_star_{crit}", "n_samples", ni, wmax, "censored", **dict(g, n_samples=ni))
        if np.isfinite(fit["slope"]):
            ok = ~cens & (ws > 0)
            xs = np.unique(nn[ok])
            yfit = np.exp(fit["intercept"]) * xs ** fit["slope"]
            ax.plot(xs, yfit, color=c, ls="-", lw=1)
            cv.record("width_star", f"width_star_{crit}", "n_samples", xs, yfit, "fit", **g)
            cv.add_slope(f"width_star ({label}) vs n_samples", D.group_label(init=ini, scaling=sc), fit)
        parts.append(f"{label}: {D.ci(fit)} over {fit['decades']:.2f} decades of N "
                     f"({fit['n']} fitted, {fit['n_censored']} censored)")
    xs = np.geomspace(ns_all.min(), ns_all.max(), 20)
    ax.plot(xs, xs ** 2, color="grey", ls="--", lw=1, label=r"width $= N^2$")
    cv.record("width_star", "reference_N2", "n_samples", xs, xs ** 2, "reference")
    ax.plot([], [], marker="o", mfc="none", color="k", ls="none", label=f"none sufficient up to width {wmax}")
    ax.set(xlabel="n_samples N", ylabel="smallest sufficient width",
           title=f"{D.group_text(sc, ini)}, {frac:g} of seeds")
    D.set_log(ax, "x", ns_all)
    ax.set_yscale("log")
    cv.title = "Over-parameterisation: the width N samples need"
    return cv, "smallest sufficient width grows as N^slope: " + "; ".join(parts)


register(Analysis(
    name="overparam_exponent", section="convergence", paper="claim 1",
    summary="smallest sufficient width vs n_samples (kernel-stability and loss criteria) with the width = N^2 line",
    numbers=overparam_exponent, claims=(1,),
    caption="""**Over-parameterisation exponent** (beyond the paper, claim 1): the smallest width of the
ladder at which at least {success_fraction} of the seeds succeed, against n_samples, log-log, for
LeCun and tau0 = d_m^-1/2: by the kernel-stability criterion (``max_t |K_t - K_0|_F / |K_0|_F <=
{kernel_stability}``, which does not depend on the epoch budget) and by each loss target
({loss_targets}, which does), each with its fitted exponent and interval. Hollow markers at the top:
no width of the ladder suffices (censored, not fitted). Dashed: width = N^2, the paper's sufficient
width; the claims table tests directly whether every seed at width >= N^2 converges.""",
))
