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


def _rates_at(meas, lin, pred, w):
    return (meas.sel(width=w), lin.sel(width=w) if lin is not None else None,
            pred.sel(width=w) if pred is not None else None)


# ---------------------------------------------------------------------------------------------
# loss_per_width
# ---------------------------------------------------------------------------------------------

def loss_per_width(ds, settings) -> tuple:
    """Training loss vs epoch (log) per width with the linearised prediction (wide pale lines); default group.
    The finding gives each width's measured range rate against the kernel's predicted one."""
    ds, n = D.prepare(ds)
    ds, step = D.first_step(ds)
    sc, ini = D.default_group(ds)
    sub = ds.sel(scaling=sc, init=ini)
    cv = Canvas("loss_per_width", 1, aspect=0.8)
    ax = cv.ax(0)
    widths = stats.axis_values(sub, "width")
    meas = stats.rates(sub, settings)
    lin = stats.rates(sub, settings, "loss_linearised")
    pred = stats.predicted_rates(sub, settings)
    E, rr = stats.budget_epochs(sub), settings["rate_range"]
    parts, no_pred = [], []
    for w, c in zip(widths, D.colors(len(widths))):
        s = sub.sel(width=w)
        g = dict(width=w, scaling=sc, init=ini, n_samples=n)
        kernel_only = not D.trained(s) and bool((D.run_status(s) == stats.STATUS_KERNEL_ONLY).any())
        if D.trained(s):
            D.draw_seed_curves(cv, ax, s, "loss", "epoch", c, f"width {w}", "loss", g)
        D.draw_seed_curves(cv, ax, s, "loss_linearised", "epoch", c, f"width {w} (kernel only)" if kernel_only else None,
                           "loss", g, band=False, marker="", stat="predicted", role="predicted", **D.PREDICTED_STYLE)
        m, li, pr = _rates_at(meas, lin, pred, w)
        p = D.predicted_rate_words(pr, li)
        if p == "n/a":
            no_pred.append(w)
        gaps = [stats.linearisation_gap(s["loss"].sel(seed=sd).values, s["loss_linearised"].sel(seed=sd).values)
                for sd in stats.axis_values(s, "seed")] if "loss_linearised" in s and D.trained(s) else []
        gap = D.median(gaps)
        parts.append(f"width {w}: " + ("kernel only" if kernel_only else f"measured {D.rate_words(m, E, rr)}")
                     + (f", predicted {p}" if p != "n/a" else "") + (f", gap {D.fmt(gap, 2)} decades" if np.isfinite(gap) else ""))
    D.key(ax, D.PREDICTED_KEY, color="k", ls="-", lw=2.6, alpha=0.3)
    vals = D.values_of_good_runs(sub, "loss", "loss_linearised")
    D.set_log(ax, "y", vals)
    D.log_ylim(ax, vals)
    ax.set(xlabel="epoch", ylabel=f"training loss ({sub.attrs.get('loss', 'mean')})",
           title=f"{D.group_text(sc, ini)}, {D.step_text(step, ds)}{D.note_n(n)}")
    cv.title = "Training loss per width, with the kernel's prediction"
    finding = (f"{D.group_words(sc, ini)}, {D.step_words(step, ds)}: rate per epoch over L/L_0 from {rr[0]:g} to {rr[1]:g} "
               "(median seed), measured against the kernel's prediction from K_0: " + "; ".join(parts))
    if no_pred:
        finding += (f"; no predicted rate at width(s) {', '.join(str(w) for w in no_pred)} (the aggregate has no K_0 modes "
                    f"and the stored linearised curve does not reach L/L_0 = {rr[0]:g} in {E} epochs)")
    finding += "; the gap is the largest distance in decades between the measured and the linearised loss"
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
distance to the wide pale line is how far the run is from the kernel regime (reported as the gap in
decades). Rates are measured over the range of L/L_0 {rate_range} (from the first value down to the float floor; tfconv.analyses.stats.range_rate), on both curves alike.""",
))


# ---------------------------------------------------------------------------------------------
# kernel_prediction
# ---------------------------------------------------------------------------------------------

def kernel_prediction(ds, settings) -> tuple:
    """Per group: measured vs linearised loss per width, with the lambda_min bound where it reaches
    ``power_level`` within the budget; the linearisation gap vs width; the stability limit vs width with
    each run's step."""
    from ..core.linearised import bound_epochs

    ds, n = D.prepare(ds)
    ds, step = D.first_step(ds)
    conf = float(settings["confidence"])
    N = float(n) if n is not None else stats.n_samples_of(ds)
    loss_kind = str(ds.attrs.get("loss", "mean"))
    groups = D.groups(ds)
    widths = stats.axis_values(ds, "width")
    colors = D.colors(len(widths))
    cv = Canvas("kernel_prediction", len(groups) + 2, legend="figure", aspect=0.8)
    c_bound, level, E = float(settings["bound_constant"]), float(settings["power_level"]), stats.budget_epochs(ds)
    gaps_by_group, bound_notes, drawn_bound = {}, [], False
    gap_ax, lim_ax = cv.ax(len(groups)), cv.ax(len(groups) + 1)
    for gi, (sc, ini) in enumerate(groups):
        ax = cv.ax(gi)
        s = ds.sel(scaling=sc, init=ini)
        unpowered = []
        for w, c in zip(widths, colors):
            sw = s.sel(width=w)
            g = dict(width=w, scaling=sc, init=ini, n_samples=n)
            trained = D.trained(sw)
            if trained:
                D.draw_seed_curves(cv, ax, sw, "loss", "epoch", c, f"width {w}", f"{ini}/{sc}", g)
            kernel_only = not trained and bool((D.run_status(sw) == stats.STATUS_KERNEL_ONLY).any())
            D.draw_seed_curves(cv, ax, sw, "loss_linearised", "epoch", c, f"width {w} (kernel only)" if kernel_only else None,
                               f"{ini}/{sc}", g, band=False, marker="", stat="predicted", role="predicted",
                               **D.PREDICTED_STYLE)
            # the lambda_min bound of the median seed, drawn only where it reaches power_level within the budget
            present = np.nonzero(D.run_status(sw) != stats.STATUS_MISSING)[0]
            if not present.size or "eta" not in sw:
                continue
            r = sw.isel(seed=int(present[len(present) // 2]))
            eta, lmin = float(r["eta"].values), float(stats.epoch0_kernel(r, "lambda_min").values)
            L = np.asarray(r["loss" if trained else "loss_linearised"].values, dtype=float)
            if not (np.isfinite(eta) and np.isfinite(lmin) and L.size and np.isfinite(L[0])):
                continue
            T = bound_epochs(eta, lmin, N, loss_kind, c_bound, level)
            b = stats.geometric_bound(L[0], eta, lmin, L.size - 1, N, loss_kind, c_bound)
            if np.isfinite(T) and T <= E and np.isfinite(b).any():
                x = np.asarray(sw["epoch"].values, dtype=float)
                ax.plot(x, b, color=c, ls="--", lw=0.8, alpha=0.8, role="predicted")
                cv.record(f"{ini}/{sc}", "lambda_min_bound", "epoch", x, b, "predicted",
                          **dict(g, seed=stats.axis_values(sw, "seed")[int(present[len(present) // 2])]))
                drawn_bound = True
            else:
                reach = float(b[-1] / L[0]) if np.isfinite(b).any() else np.nan
                unpowered.append((w, reach, T))
        if unpowered:
            ws = [w for w, _, _ in unpowered]
            w, reach, T = max(unpowered, key=lambda u: u[2] if np.isfinite(u[2]) else np.inf)
            bound_notes.append(f"{D.group_words(sc, ini)}: not drawn at width(s) {', '.join(str(v) for v in ws)} "
                               f"(at width {w} it reaches only {D.fmt(reach, 2)} L_0 in {E} epochs; needs "
                               + (f">= {int(T):,} epochs" if np.isfinite(T) else "a positive lambda_min") + ")")
        vals = D.values_of_good_runs(s, "loss", "loss_linearised")
        D.set_log(ax, "y", vals)
        D.log_ylim(ax, vals)
        ax.set(xlabel="epoch", ylabel="training loss", title=f"({chr(97 + gi)}) {D.group_text(sc, ini)}")
        # gap vs width for this group
        x, y, st, sd = D.flat(s, _gap(s), "width")
        sty = D.group_style(sc, ini, gi)
        gaps_by_group[(sc, ini)] = D.draw_runs_fit(
            cv, gap_ax, x, y, st, sd, sty["color"], D.group_text(sc, ini), "linearisation gap",
            "linearisation_gap", "width", dict(scaling=sc, init=ini, n_samples=n), D.group_label(init=ini, scaling=sc),
            conf, marker=sty["marker"], ls=sty["ls"])
        # stability limit vs width, with each run's step (kernel-only runs have their K_0 and step too)
        x, y, st, sd = D.flat(s, s["step_limit"] if "step_limit" in s else stats.epoch0_kernel(s, "lambda_max") * np.nan, "width")
        st = np.where(st == stats.STATUS_KERNEL_ONLY, stats.STATUS_COMPLETE, st)
        D.draw_runs_fit(cv, lim_ax, x, y, st, sd, sty["color"], D.group_text(sc, ini) + ": limit", "stability limit",
                        "step_limit", "width",
                        dict(scaling=sc, init=ini, n_samples=n), D.group_label(init=ini, scaling=sc), conf,
                        marker=sty["marker"], ls=sty["ls"])
        if "eta" in s:
            x, y, st, sd = D.flat(s, s["eta"], "width")
            ok = np.isfinite(y) & (st != stats.STATUS_MISSING)
            lim_ax.plot(x[ok], y[ok], ls="none", marker="_", ms=7, mew=1.0, color=sty["color"])
            cv.record("stability limit", "eta", "width", x[ok], y[ok], "run", scaling=sc, init=ini)
    ax = cv.ax(0)
    D.key(ax, D.PREDICTED_KEY, color="k", ls="-", lw=2.6, alpha=0.3)
    if drawn_bound:
        D.key(ax, rf"dashed: bound $L_0(1-{c_bound:g}\,\eta\lambda_{{\min}}/N)^{{2t}}$", color="k", ls="--", lw=0.8)
    k = len(groups)
    gap_ax.set(xlabel="width", ylabel=r"max $|\log_{10} L - \log_{10} L_{\mathrm{lin}}|$ (decades)",
               title=f"({chr(97 + k)}) distance from the kernel regime", yformat="plain")
    D.set_log(gap_ax, "x", widths)
    D.set_log(gap_ax, "y", [r["y"] for r in cv.rows if r["quantity"] == "linearisation_gap"])
    D.key(lim_ax, r"step $\eta$ of each run", ls="none", marker="_", ms=7, mew=1.0, color="k")
    stable_word = r"$2N/\lambda_{\max}(K_0)$" if loss_kind == "mean" else r"$2/\lambda_{\max}(K_0)$"
    lim_ax.set(xlabel="width", ylabel=f"step and limit {stable_word}", title=f"({chr(98 + k)}) step and stability limit")
    D.set_log(lim_ax, "x", widths)
    D.set_log(lim_ax, "y", [r["y"] for r in cv.rows if r["quantity"] in ("step_limit", "eta")])
    cv.title = "Measured loss against the kernel's prediction"
    parts = "; ".join(f"{D.group_words(sc, ini)} {D.ci(f)}" for (sc, ini), f in gaps_by_group.items())
    finding = f"width slope of the linearisation gap (decades): {parts}"
    finding += (f"; the lambda_min bound (c = {c_bound:g}) is drawn where it reaches {level:g} L_0 within {E} epochs"
                + (": " + "; ".join(bound_notes) if bound_notes else " (at every width)"))
    if "eta" in ds and "step_limit" in ds:
        ratio = (ds["eta"] / ds["step_limit"]).values
        if np.isfinite(ratio).any():
            lo, hi = np.nanmin(ratio), np.nanmax(ratio)
            finding += f"; eta / own limit {D.fmt(lo)}" if np.isclose(lo, hi) else f"; eta / own limit in [{D.fmt(lo)}, {D.fmt(hi)}]"
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
from each run's K_0 (wide pale lines) and the theory's bound ``L_0 (1 - c eta lambda_min(K_0)/N)^(2t)`` with
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
    """Claim 3's regime map: per step setting, the loss of every init at the largest trained width; per
    pair LeCun/NTK (and He/NTK), the rate ratio against width in every framing (`stats.comparison_by_width`:
    measured at each step setting where trained, the kernel's prediction from K_0 at a common step and at
    each init's own limit at every width) with the band of no material difference."""
    ds, n = D.prepare(ds)
    sc = stats.preferred(stats.axis_values(ds, "scaling"), "inv_sqrt")
    ds = ds.sel(scaling=sc)
    inits = stats.axis_values(ds, "init")
    steps = stats.axis_values(ds, "step_size") or [None]
    pairs = [(a, "ntk") for a in ("lecun", "he") if a in inits and "ntk" in inits]
    cv = Canvas("init_comparison", len(steps) + len(pairs), legend="figure", aspect=0.8)
    k = 0
    for step in steps:
        sub = ds.sel(step_size=step) if step is not None else ds
        trained = stats.trained_widths(sub, "init", inits)
        ax = cv.ax(k)
        if trained:
            wmax, var = max(trained), "loss"
        else:  # nothing trained: the kernel's prediction at the widest width
            wmax, var = max(stats.axis_values(sub, "width")), "loss_linearised"
        for j, ini in enumerate(inits):
            sty = D.group_style(sc, ini, j)
            g = dict(width=wmax, scaling=sc, init=ini, n_samples=n)
            D.draw_seed_curves(cv, ax, sub.sel(init=ini, width=wmax), var, "epoch", sty["color"],
                               D.INIT_LABEL.get(ini, ini), f"loss, {D.step_words(step, ds)}", g)
        vals = D.values_of_good_runs(sub.sel(width=wmax), var)
        D.set_log(ax, "y", vals)
        D.log_ylim(ax, vals)
        ax.set(xlabel="epoch", ylabel="training loss" + (" (linearised)" if var != "loss" else ""),
               title=f"({chr(97 + k)}) width {wmax}, {D.step_text(step, ds)}")
        k += 1
    parts = []
    for a, b in pairs:
        by_width = stats.comparison_by_width(ds, "init", a, b, settings)
        clause = D.draw_comparison(cv, cv.ax(k), ds, by_width, D.INIT_LABEL[a], D.INIT_LABEL[b], f"rate ratio {a}/{b}",
                                   settings, dict(scaling=sc, n_samples=n))
        cv.ax(k).set_title(f"({chr(97 + k)}) rate ratio {D.INIT_LABEL[a]} / {D.INIT_LABEL[b]}, {D.scaling_text(sc)}")
        parts.append(f"rate ratio {D.INIT_LABEL[a]}/{D.INIT_LABEL[b]}: {clause}")
        k += 1
    cv.title = "Initialisation: " + " / ".join(D.INIT_LABEL.get(i, i) for i in inits)
    if not pairs:
        parts.append("no rate ratio: the grid needs init ntk and lecun or he")
    return cv, f"{D.scaling_words(sc)}{D.note_n(n)}: " + "; ".join(parts) + " (paired by seed)" + D.diverged_clause(ds)


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

def _ladder_brackets(sub, table) -> tuple:
    """Per row of `stats.smallest_sufficient_width`: (lower, upper) bracket of the smallest sufficient
    width on the ladder of widths with runs at that N: upper = the rung found, lower = the rung below it
    (0 when the first rung already suffices: censored at the bottom); (top rung, inf) when no rung does."""
    lower, upper, first, top = [], [], [], []
    for n, w_star in zip(table["n_samples"], table["width_star"]):
        st = np.asarray(sub["status"].sel(n_samples=n).transpose("width", ...).values).astype(str)
        rungs = [w for w, row in zip(stats.axis_values(sub, "width"), st.reshape(st.shape[0], -1))
                 if (row != stats.STATUS_MISSING).any()]
        rungs = sorted(float(w) for w in rungs)
        first.append(rungs[0] if rungs else np.nan)
        top.append(rungs[-1] if rungs else np.nan)
        if not np.isfinite(w_star):
            lower.append(rungs[-1] if rungs else np.nan)
            upper.append(np.inf)
            continue
        i = rungs.index(float(w_star))
        lower.append(rungs[i - 1] if i > 0 else 0.0)
        upper.append(float(w_star))
    return np.asarray(lower), np.asarray(upper), np.asarray(first), np.asarray(top)


def overparam_exponent(ds, settings) -> tuple:
    """Smallest sufficient width vs n_samples, each N a bracket on the width ladder (the rung below to
    the rung found; censored N drawn as bounds with an arrow): (a) the kernel-stability criterion
    (budget-free, claim 1(b)), (b) each loss target (budget-dependent); the exponents every power law
    through the brackets allows (`stats.exponent_brackets`, as claim 1(b)), the fit through the bracket
    midpoints and the width = N^2 line."""
    ds = stats.complete_axes(ds)
    frac = float(settings["success_fraction"])
    if "n_samples" not in ds.dims:
        cv = Canvas("overparam_exponent", 1)
        return cv, D.empty(cv, "overparam_exponent needs an n_samples axis in the grid; none was found")
    ds, _ = D.first_step(ds)
    sc = stats.preferred(stats.axis_values(ds, "scaling"), "inv_sqrt")
    ini = stats.preferred(stats.axis_values(ds, "init"), "lecun", "he")
    sub = ds.sel(scaling=[sc], init=[ini])
    ladder = sorted(float(w) for w in stats.axis_values(ds, "width"))
    step = float(np.median(np.asarray(ladder[1:]) / np.asarray(ladder[:-1]))) if len(ladder) > 1 else 2.0
    ns_all = np.asarray(stats.axis_values(ds, "n_samples"), dtype=float)
    ks = float(settings["kernel_stability"])
    measured = "kernel_change" in ds and bool(np.isfinite(ds["kernel_change"].where(ds["checkpoint_epoch"] > 0)).any())
    panels = ([("(a) kernel stability (budget-free)",
                [("kernel", None, f"kernel-stable (max $|K_t-K_0|/|K_0| \\leq$ {ks:g})", f"kernel-stable (<= {ks:g})")])]
              if measured else [])
    panels.append((f"({'b' if measured else 'a'}) loss targets (budget-dependent)",
                   [("loss", t, f"$L_E/L_0 \\leq$ {t:g}", f"loss_E/loss_0 <= {t:g}") for t in settings["loss_targets"]]))
    cv = Canvas("overparam_exponent", len(panels), aspect=0.9)
    parts = []
    g = dict(scaling=sc, init=ini)
    for p, (title, criteria) in enumerate(panels):
        ax = cv.ax(p)
        K = len(criteria)
        for k, (crit, target, label, words) in enumerate(criteria):
            table = stats.smallest_sufficient_width(sub, crit, target if target is not None else 1e-3, frac, ks)
            nn = np.asarray(table["n_samples"], dtype=float)
            lower, upper, first, top = _ladder_brackets(sub.isel(scaling=0, init=0), table)
            color = D.GROUP_COLORS[(k + (1 if crit == "loss" else 0)) % 10]
            marker = ["o", "s", "^", "D", "v"][k % 5]
            ms = 4.5 - 0.8 * k  # later criteria smaller: a shared rung never hides an earlier marker
            shift = 2.0 ** (0.16 * (k - (K - 1) / 2.0))  # and a small offset along N
            x = nn * shift
            quantity = f"width_star_{crit}" + (f"_{target:g}" if target is not None else "")
            found = np.isfinite(upper) & (lower > 0)
            if found.any():
                ax.errorbar(x[found], upper[found], lower[found], upper[found], color=color, marker=marker, ms=ms,
                            ls="none", elinewidth=0.9, capsize=0, label=label)
            low_c, high_c = lower <= 0, ~np.isfinite(upper)
            for xi, yi, direction, mask in ((x, first, "down", low_c), (x, top, "up", high_c)):
                for a, b in zip(xi[mask], yi[mask]):
                    ax.plot([a], [b], color=color, marker=marker, ms=ms, mfc="none", ls="none")
                    ax.arrow(a, b, direction, color=color)
            if not found.any() and (low_c | high_c).any():
                ax.plot([], [], color=color, marker=marker, ms=ms, mfc="none", ls="none", label=label, role="key")
            for ni, lo_, up_ in zip(nn, lower, upper):
                gn = dict(g, n_samples=ni)
                if np.isfinite(up_) and lo_ > 0:
                    cv.record("width_star", quantity, "n_samples", ni, up_, "run", **gn)
                    cv.record("width_star", quantity, "n_samples", ni, lo_, "low", **gn)
            for ni, yi in zip(nn[low_c], first[low_c]):
                cv.record("width_star", quantity, "n_samples", ni, yi, "censored", **dict(g, n_samples=ni, status="below"))
            for ni, yi in zip(nn[high_c], top[high_c]):
                cv.record("width_star", quantity, "n_samples", ni, yi, "censored", **dict(g, n_samples=ni, status="above"))
            fit = stats.exponent_brackets(nn, lower, upper)
            slack = ""
            if nn.size and not fit["feasible"]:
                fit = stats.exponent_brackets(nn, lower, upper, slack=step)
                slack = f", every bracket widened by one rung (x{step:.3g})"
            both = (lower > 0) & np.isfinite(upper)
            mid = stats.fit_loglog(nn[both], np.sqrt(lower[both] * upper[both]))
            if np.isfinite(mid["slope"]):
                xs = np.unique(nn[both])
                yfit = np.exp(mid["intercept"]) * xs ** mid["slope"]
                rng = (f", power laws through every bracket: [{D.fmt(fit['b_min'], 2)}, {D.fmt(fit['b_max'], 2)}]"
                       if fit["feasible"] and abs(fit["b_min"]) < 49 and abs(fit["b_max"]) < 49 else "")
                ax.plot(xs, yfit, color=color, ls="-", lw=0.8, role="fit",
                        label=(f"fit: width $\\propto N^{{{D.fmt(mid['slope'], 2)}}}$" + rng) if K == 1 else
                        f"{label}: fit $\\propto N^{{{D.fmt(mid['slope'], 2)}}}$")
                cv.record("width_star", quantity, "n_samples", xs, yfit, "fit", **g)
                cv.add_slope(f"width_star ({words}) vs n_samples", D.group_label(init=ini, scaling=sc), mid)
            cens = []
            if low_c.any():
                cens.append(f"N = {', '.join(f'{v:g}' for v in nn[low_c])} sufficient at the first rung already "
                            f"(width {D.fmt(first[low_c][0])}: upper bounds)")
            if high_c.any():
                cens.append(f"N = {', '.join(f'{v:g}' for v in nn[high_c])} with no sufficient rung up to width "
                            f"{D.fmt(top[high_c][0])} (lower bounds)")
            lo_b = "-inf" if fit["b_min"] <= -49.0 else D.fmt(fit["b_min"], 2)  # linprog's bounds: not bounded
            hi_b = "inf" if fit["b_max"] >= 49.0 else D.fmt(fit["b_max"], 2)
            expo = (f"exponent in [{lo_b}, {hi_b}] for every power law through the brackets{slack}" if fit["feasible"]
                    else "no power law passes through every bracket")
            through = (f"{D.fmt(mid['slope'], 2)} through the bracket midpoints" if np.isfinite(mid["slope"])
                       else "too few two-sided brackets for a fit")
            parts.append(f"{words}: {expo}; {through}" + (f" ({'; '.join(cens)})" if cens else ""))
        xs = np.geomspace(ns_all.min(), ns_all.max(), 20)
        ax.plot(xs, xs ** 2, color="grey", ls="--", lw=0.8, label=r"width $= N^2$", role="reference")
        cv.record("width_star", "reference_N2", "n_samples", xs, xs ** 2, "reference")
        D.key(ax, "open, arrow: bound (ladder ends)", color="k", marker="o", mfc="none", ls="none", ms=3.5)
        ax.set(xlabel="n_samples N", ylabel="smallest sufficient width", title=title)
        D.set_log(ax, "x", ns_all)
        D.set_log(ax, "y", ladder + list(xs ** 2))
        ax.set_ylim(ladder[0] / 3.0, max(ladder[-1], float(xs[-1] ** 2)) * 3.0)  # room for the arrows of bounds
    cv.title = f"Smallest sufficient width against N, {D.group_text(sc, ini)}"
    if not measured:
        parts.append("kernel stability not measured (no kernel change after checkpoint 0)")
    return cv, (f"smallest sufficient width against N ({D.group_words(sc, ini)}, {frac:g} of the seeds; each N a "
                f"bracket on the width ladder): " + "; ".join(parts))


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
