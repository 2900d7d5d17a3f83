"""The claims table: each of the paper's five claims (docs/science.md section 3) tested in numbers, each
test first asking whether this experiment can tell the claim from its negation (its *power*).

`evaluate_claims(aggregates, claims_of, settings, controls)` returns one row per (claim, test,
experiment that tests it); `synthesis(table)` one sentence per claim.  Columns (`COLUMNS`): claim,
statement, experiment, role ("test", or "control": an experiment that by design should show no
difference; never counted as a test of the claim), test, framing, value, ci_low, ci_high, threshold,
verdict, power (what the test could detect on this data, or what it would need), reason, summary (the
phrase the synthesis quotes).

Verdicts: "consistent" and "refuted" only where the test could have come out the other way on this
data; "no material difference" where a comparison's interval lies within the stated minimum effect
(``analysis.min_effect``); otherwise "not measurable" with what would make it measurable.  No verdict
depends on where the epoch budget ends, on a run left out without a word, or on a fallback width.

lambda_min(K_0) is scored only where it is resolved: a run whose lambda_min(K_0) is below the precision
of K (`stats.lambda_min0_verdict`) is left out of every test that rests on it (claims 1 (a) and 2), and
the row's power says how many; where none is left the verdict is "not measurable" (`NEEDS_PRECISION`).

Rates are `stats.range_rate` (the mean geometric rate over L/L_0 from ``rate_range[0]`` down to the
float floor; a run that reaches the floor counts as converged, one that never enters the range is
counted, and decides a comparison only against one that did); the kernel's predictions are computed
from K_0's modes at any number of epochs (`stats.predicted_rates`).

1. Width of order N^2 suffices (LeCun, else He; inv_sqrt).  (a) every seed at every width of the ladder
   >= max(c N^2, the kernel-stable width of N) converges (c = ``sufficiency_constant``): reaches the
   float floor, or still decreases at its end at >= ``min_rate_fraction`` of its own lambda_min(K_0)
   rate; refuted only by a persistent failure (divergence, or a tail decreasing slower than that with
   confidence); transient spikes are reported; runs whose lambda_min(K_0) is below the precision of K are
   left out (the theorem assumes lambda_min(K_0) > 0, and their lambda_min rate is unknown).  (b) the exponent of the smallest sufficient width
   (kernel-stable; converging) in N, every N a bracket on the ladder (censored N are bounds): refuted
   when every power law through the brackets is steeper than N^2, consistent when every one is flatter.
2. Linear convergence governed by lambda_min(K_0) (LeCun/He, inv_sqrt, at kernel-stable widths).
   (a) L_t <= L_0 (1 - c eta lambda_min/N)^(2t) at every epoch, scored only for runs whose bound reaches
   ``power_level`` within their budget (else: the epochs it needs); a plateau above that level, a
   sublinear curve or a stall violates it.  (b) the measured rate against the slowest mode's rate
   -2 log(1 - eta lambda_min/N), within a factor ``rate_factor``, scored where the kernel's own
   prediction is governed by lambda_min over the rate range (else: the level below which it would be).
   Both only over runs whose lambda_min(K_0) is resolved.
3. LeCun/He faster than NTK; 4. inv_sqrt faster than inv.  For every framing (a common step: a fixed
   step or '<c>common'; each setting at c times its own limit: '<c>limit'), the paired rate ratio of the
   trained runs at the largest trained width, and the kernel's prediction from K_0 in both framings at
   the largest width; the ratio at every width in the reason (the trend).  Consistent when the interval
   lies above 1 + min_effect, refuted below 1 / (1 + min_effect), no material difference inside.
5. Under tau0 = d_m^-1 attention tends to uniform and the NTK is stable, against tau0 = d_m^-1/2.
   (a) the width slope of the attention deviation after training under inv, against inv_sqrt's, scored
   where training moves attention; (b) the final NTK change under inv: slope and level, with the width
   at which the level would reach ``kernel_change_threshold``; (c) its level against inv_sqrt's.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from ..config import analysis_settings
from ..core.linearised import asymptotic_onset, bound_epochs, parse_step, predicted_rate, step_framing
from ..registry import all_analyses, get_analysis
from . import stats

CLAIMS = {
    1: "width of order N^2 suffices for global convergence (LeCun/He, tau0 = d_m^-1/2)",
    2: "the training loss converges linearly at a rate governed by lambda_min(K_0)",
    3: "LeCun/He initialisation converges faster than NTK initialisation",
    4: "tau0 = d_m^-1/2 converges faster than tau0 = d_m^-1 at large width",
    5: "under tau0 = d_m^-1 attention tends to uniform and the NTK is stable",
}
COLUMNS = ["claim", "experiment", "role", "test", "framing", "value", "ci_low", "ci_high", "threshold", "verdict",
           "power", "reason", "summary"]
CONSISTENT, REFUTED, NO_DIFFERENCE, NOT_MEASURABLE = "consistent", "refuted", "no material difference", "not measurable"
VERDICTS = (CONSISTENT, REFUTED, NO_DIFFERENCE, NOT_MEASURABLE)
ROLE_TEST, ROLE_CONTROL = "test", "control"
#: what a row says where every run it would score has lambda_min(K_0) below the precision of K
NEEDS_PRECISION = "needs lambda_min(K_0) above the precision of K (gram.precision float64, or fewer samples)"


def _below_note(left_out: Sequence[str], total: int) -> str:
    """The power column's word on the runs left out because lambda_min(K_0) is below the precision of K."""
    return (f"{len(left_out)} of {total} run(s) left out: lambda_min(K_0) below the precision of K "
            f"({', '.join(left_out[:3])}{', ...' if len(left_out) > 3 else ''})")

#: how a comparison's outcome (`stats.compare_rates`) reads as a verdict on "A is faster than B"
_OUTCOME_VERDICT = {stats.FASTER: CONSISTENT, stats.SLOWER: REFUTED, stats.NO_DIFFERENCE: NO_DIFFERENCE,
                    stats.UNDECIDED: NOT_MEASURABLE}


def analyses_testing(claim: int) -> List[str]:
    """The analyses whose experiments test `claim` (the registry's `Analysis.claims`)."""

    return [a.name for a in all_analyses() if claim in a.claims]


def _row(claim: int, experiment: str, test: str, value=np.nan, ci_low=np.nan, ci_high=np.nan, threshold: str = "",
         verdict: str = NOT_MEASURABLE, reason: str = "", power: str = "", framing: str = "", summary: str = "",
         role: str = ROLE_TEST) -> Dict[str, Any]:
    return dict(claim=claim, experiment=experiment, role=role, test=test, framing=framing, value=float(value),
                ci_low=float(ci_low), ci_high=float(ci_high), threshold=threshold, verdict=verdict, power=power,
                reason=reason, summary=summary)


def _fmt(x, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "inf" if x is not None and np.isinf(x) and x > 0 else "n/a"
    return f"{x:.{digits}g}"


def _epochs(x) -> str:
    return "never" if not np.isfinite(x) else f"{int(round(x)):,}"


def _theory_group(ds) -> tuple:
    """(scaling, init) of the theory's setting: inv_sqrt with lecun (else he, else the first)."""
    return (stats.preferred(stats.axis_values(ds, "scaling"), "inv_sqrt"),
            stats.preferred(stats.axis_values(ds, "init"), "lecun", "he"))


def _steps(ds) -> List[Any]:
    return stats.axis_values(ds, "step_size") or [None]


def _at_step(ds, step):
    return ds if step is None else ds.sel(step_size=step)


def _step_of(ds, step):
    """The step specification of a step_size coordinate (stored as text) or of the experiment."""
    s = step if step is not None else ds.attrs.get("step", "?")
    try:
        return float(s)
    except (TypeError, ValueError):
        return s


def _step_label(ds, step) -> str:
    s = _step_of(ds, step)
    try:
        kind, c = parse_step(s)
    except (ValueError, TypeError):
        return f"step {s}"
    return {"fixed": f"step {c:g}", "limit": f"{c:g} x own limit"}.get(kind, f"{c:g} x common limit")


def _framing_of(ds, step) -> str:
    try:
        return step_framing(_step_of(ds, step))
    except (ValueError, TypeError):
        return ""


def _n_values(ds) -> List[Any]:
    return stats.axis_values(ds, "n_samples") or [None]


def _at_n(ds, n):
    return ds if n is None else ds.sel(n_samples=n)


def _N(ds, n) -> float:
    return float(n) if n is not None else stats.n_samples_of(ds)


def _trained_widths(sub) -> List[Any]:
    return [w for w in stats.axis_values(sub, "width")
            if (stats.run_status(sub.sel(width=w)) == stats.STATUS_COMPLETE).any()
            or (stats.run_status(sub.sel(width=w)) == stats.STATUS_DIVERGED).any()]


def _kernel_stable(sub, settings) -> Dict[Any, bool]:
    """Per width of `sub` (one group, one N): does the median seed stay in the kernel regime
    (max_t |K_t - K_0|/|K_0| <= kernel_stability)?  Diverged seeds count as unstable."""
    kc = stats.kernel_change_max(sub)
    out = {}
    for w in stats.axis_values(sub, "width"):
        st = stats.run_status(sub.sel(width=w)).ravel()
        present = (st == stats.STATUS_COMPLETE) | (st == stats.STATUS_DIVERGED)
        if not present.any():
            continue
        v = np.asarray(kc.sel(width=w).values, dtype=float).ravel()[present]
        ok = np.where(st[present] == stats.STATUS_DIVERGED, False, np.isfinite(v) & (v <= settings["kernel_stability"]))
        out[w] = bool(ok.mean() >= settings["success_fraction"])
    return out


# ---------------------------------------------------------------------------------------------
# One run: does it converge (in the theorem's sense, without a budget or a target)?
# ---------------------------------------------------------------------------------------------

CONVERGED, CONVERGING, FAILING, UNDETERMINED = "converged", "converging", "failing", "undetermined"


def classify_run(loss, status: str, slowest: float, settings) -> Dict[str, Any]:
    """How one run ends, independently of a target: "converged" (reached the float floor),
    "converging" (its tail still decreases geometrically at >= min_rate_fraction of its own
    lambda_min(K_0) rate, with confidence), "failing" (diverged, or a tail decreasing slower than that
    with confidence: a plateau, a rise), "undetermined" (the tail's interval holds the threshold).
    A transient spike (a jump above ``spike_factor`` times the running minimum) is reported as such."""
    loss = np.asarray(loss, dtype=float)
    ep, height = stats.spike(loss, settings["spike_factor"])
    base = dict(spike_epoch=ep, spike_height=height, tail=np.nan, tail_low=np.nan, tail_high=np.nan,
                min_ratio=float(np.nanmin(loss) / loss[0]) if np.isfinite(loss[0]) and loss[0] > 0 else np.nan)
    if status == stats.STATUS_DIVERGED:
        return dict(base, state=FAILING, why="diverged")
    tr = stats.tail_trend(loss, confidence=settings["confidence"])
    if tr["floor_reached"]:
        return dict(base, state=CONVERGED, why="reached the float floor")
    need = settings["min_rate_fraction"] * slowest if np.isfinite(slowest) and slowest > 0 else 0.0
    base.update(tail=tr["rate"], tail_low=tr["ci_low"], tail_high=tr["ci_high"])
    if not np.isfinite(tr["rate"]):
        return dict(base, state=UNDETERMINED, why="no tail to fit")
    if tr["ci_low"] > need:
        return dict(base, state=CONVERGING, why=f"tail rate {_fmt(tr['rate'])} > {_fmt(need)}")
    if tr["ci_high"] < need:
        return dict(base, state=FAILING, why=f"tail rate {_fmt(tr['rate'])} [{_fmt(tr['ci_low'])}, "
                                              f"{_fmt(tr['ci_high'])}] below {_fmt(need)} (stalls)")
    return dict(base, state=UNDETERMINED, why=f"tail rate interval [{_fmt(tr['ci_low'])}, {_fmt(tr['ci_high'])}] "
                                              f"holds {_fmt(need)}")


def _slowest(r, N, loss_kind) -> float:
    """lambda_min(K_0)'s rate -2 log(1 - eta lambda_min/N) of one run (NaN without K_0)."""
    lmin = float(stats.epoch0_kernel(r, "lambda_min").values)
    eta = float(r["eta"].values) if "eta" in r else np.nan
    return float(predicted_rate(lmin, eta, N, loss_kind)) if np.isfinite(lmin) and np.isfinite(eta) else np.nan


def _run_states(sub, N, settings) -> tuple:
    """(classify_run for every present seed of `sub` (one width) whose lambda_min(K_0) is resolved or not
    assessed, the seeds left out because their lambda_min(K_0) is below the precision of K)."""
    loss_kind = str(sub.attrs.get("loss", "mean"))
    below = stats.below_precision(sub).ravel()
    out, left_out = [], []
    for k, seed in enumerate(stats.axis_values(sub, "seed")):
        r = sub.sel(seed=seed)
        st = str(r["status"].values)
        if st not in (stats.STATUS_COMPLETE, stats.STATUS_DIVERGED):
            continue
        if below[k]:
            left_out.append(seed)
            continue
        c = classify_run(r["loss"].values, st, _slowest(r, N, loss_kind), settings)
        c["seed"] = seed
        out.append(c)
    return out, left_out


# ---------------------------------------------------------------------------------------------
# Claim 1
# ---------------------------------------------------------------------------------------------

def _ladder_step(widths) -> float:
    w = np.sort(np.asarray(widths, dtype=float))
    return float(np.median(w[1:] / w[:-1])) if w.size > 1 else 2.0


def _brackets(ladder, good: Mapping[Any, bool], monotone: bool) -> tuple:
    """(lower, upper) bracket of the smallest sufficient width on the ladder: upper = the smallest rung
    that suffices (with ``monotone``: from which every larger rung suffices too), lower = the rung below
    (0 when it is the first rung); (largest rung, inf) when none does."""
    ws = [w for w in ladder if w in good]
    found = None
    for i, w in enumerate(ws):
        if good[w] and (not monotone or all(good[v] for v in ws[i:])):
            found = i
            break
    if found is None:
        return (float(ws[-1]) if ws else np.nan), np.inf
    return (float(ws[found - 1]) if found > 0 else 0.0), float(ws[found])


def claim1(name: str, ds, settings) -> List[Dict[str, Any]]:
    if not ({"n_samples", "width"} <= set(ds.dims)) or ds.sizes["n_samples"] < 2:
        return [_row(1, name, "needs", reason="the experiment needs an n_samples axis with >= 2 values and a width axis",
                     power="needs n_samples values and a width ladder")]
    sc, ini = _theory_group(ds)
    rows = []
    for step in _steps(ds):
        sub = _at_step(ds, step).sel(scaling=sc, init=ini)
        grp = f"{ini}/{sc}, {_step_label(ds, step)}"
        ladder = sorted(stats.axis_values(sub, "width"))
        per_n = []
        for n in stats.axis_values(sub, "n_samples"):
            s = sub.sel(n_samples=n)
            stable = _kernel_stable(s, settings)
            both = {w: _run_states(s.sel(width=w), float(n), settings) for w in ladder}
            states = {w: v[0] for w, v in both.items()}
            below = {w: v[1] for w, v in both.items()}
            conv = {w: bool(v) and all(x["state"] in (CONVERGED, CONVERGING) for x in v) for w, v in states.items() if v}
            per_n.append(dict(n=n, stable=stable, states=states, below=below, conv=conv))
        rows.append(_sufficiency(name, per_n, ladder, settings, grp))
        rows.append(_exponent_row(name, per_n, ladder, "kernel", f"kernel-stable: median seed max_t |K_t-K_0|/|K_0| <= "
                                                                 f"{settings['kernel_stability']:g}", settings, grp))
    return rows


def _sufficiency(name, per_n, ladder, settings, grp) -> Dict[str, Any]:
    c = float(settings["sufficiency_constant"])
    test = f"(a) every seed converges at every width >= max({c:g} N^2, kernel-stable width) ({grp})"
    thr = "refuted by one persistent failure (divergence, or a tail slower than its lambda_min rate allows)"
    scored, failures, undetermined, spikes, untestable, cmin, left_out = [], [], [], [], [], [], []
    for p in per_n:
        n = p["n"]
        lo, hi = _brackets(ladder, p["stable"], monotone=False)
        if not np.isfinite(hi):
            untestable.append(f"N={n}: no kernel-stable width up to {ladder[-1]}")
            continue
        need = max(c * float(n) ** 2, hi)
        widths = [w for w in ladder if w >= need]
        if not widths:
            untestable.append(f"N={n} needs widths >= {_fmt(need)}")
            continue
        for w in widths:
            left_out += [f"N={n} width {w} seed {seed}" for seed in p["below"][w]]
            for x in p["states"][w]:
                lab = f"N={n} width {w} seed {x['seed']}"
                scored.append(lab)
                if x["state"] == FAILING:
                    failures.append(f"{lab} ({x['why']})")
                elif x["state"] == UNDETERMINED:
                    undetermined.append(f"{lab} ({x['why']})")
                if x["spike_epoch"] >= 0 and x["state"] != FAILING:
                    spikes.append(f"{lab} at epoch {x['spike_epoch']} (x{_fmt(x['spike_height'], 2)}), then {x['state']}")
        lo_c, hi_c = _brackets(ladder, p["conv"], monotone=True)
        if np.isfinite(hi_c):
            cmin.append(f"N={n}: from width {hi_c:g} = {_fmt(hi_c / float(n) ** 2, 2)} N^2")
    where = f"{len(scored)} runs at N = {', '.join(sorted({s.split()[0][2:] for s in scored}, key=float))}" if scored else ""
    power = (f"a run that diverges or stalls would refute it: {where}" if scored else "no N has a width >= max(c N^2, "
             "kernel-stable width) on the ladder") + (f"; not testable: {'; '.join(untestable)}" if untestable else "")
    if left_out:
        power += "; " + _below_note(left_out, len(scored) + len(left_out))
    cnote = ("; every seed converges " + "; ".join(cmin)) if cmin else ""
    snote = ("; transient spikes: " + "; ".join(spikes[:3])) if spikes else ""
    if not scored and left_out:
        return _row(1, name, test, threshold=thr, power=power, summary=NEEDS_PRECISION,
                    reason=f"every run at a width >= max({c:g} N^2, kernel-stable width) has lambda_min(K_0) below "
                           "the precision of K: whether the theorem's assumption lambda_min(K_0) > 0 holds is unknown")
    if not scored:
        return _row(1, name, test, threshold=thr, power=power, reason="nothing to score" + cnote,
                    summary="not testable on this ladder")
    ok = len(scored) - len(failures) - len(undetermined)
    lo, hi = stats.proportion_interval(ok, len(scored), settings["confidence"])
    if failures:
        return _row(1, name, test, ok / len(scored), lo, hi, thr, REFUTED,
                    f"{len(failures)} of {len(scored)} runs fail persistently: " + "; ".join(failures[:4]) + snote,
                    power, summary=f"{len(failures)} of {len(scored)} runs at widths >= max({c:g} N^2, kernel-stable width) "
                                   "fail to converge")
    if undetermined:
        return _row(1, name, test, ok / len(scored), lo, hi, thr, NOT_MEASURABLE,
                    f"{len(undetermined)} of {len(scored)} runs end undecided (needs a longer budget): "
                    + "; ".join(undetermined[:3]) + cnote + snote, power,
                    summary=f"{len(undetermined)} runs end undecided")
    return _row(1, name, test, 1.0, lo, hi, thr, CONSISTENT,
                f"all {len(scored)} runs converge" + cnote + snote, power,
                summary=f"every seed converges at widths >= max({c:g} N^2, kernel-stable width) ({where})")


def _exponent_row(name, per_n, ladder, crit, label, settings, grp) -> Dict[str, Any]:
    test = f"(b) exponent of the smallest width that suffices in N ({label}; {grp})"
    thr = "refuted if every power law through the brackets is steeper than N^2; consistent if every one is flatter"
    ns, lower, upper = [], [], []
    for p in per_n:
        good = p["stable"] if crit == "kernel" else p["conv"]
        if not good:
            continue
        lo, hi = _brackets(ladder, good, monotone=(crit == "converging"))
        ns.append(float(p["n"]))
        lower.append(lo)
        upper.append(hi)
    fit = stats.exponent_brackets(ns, lower, upper) if ns else dict(feasible=False, n=0, decades=0.0)
    slack = ""
    if ns and not fit["feasible"]:
        step = _ladder_step(ladder)
        fit = stats.exponent_brackets(ns, lower, upper, slack=step)
        slack = f" (every bracket widened by one rung, x{step:.3g}: no power law passes through the exact brackets)"
    brackets = "; ".join(f"N={n:g}: ({lo:g}, {hi:g}]" for n, lo, hi in zip(ns, lower, upper))
    power = (f"{len(ns)} N over {fit['decades']:.2f} decades, ladder {ladder[0]}..{ladder[-1]} "
             f"(x{_ladder_step(ladder):.3g} per rung): brackets {brackets}")
    finite = sum(1 for lo, hi in zip(lower, upper) if lo > 0 or np.isfinite(hi))
    if len(ns) < 3 or finite < 3:
        return _row(1, name, test, threshold=thr, power=power, reason=f"{len(ns)} N with a bracket (3 needed)",
                    summary="too few N")
    if fit["decades"] < float(settings["min_n_decades"]):
        return _row(1, name, test, fit["slope"], threshold=thr, power=power,
                    reason=f"n_samples spans {fit['decades']:.2f} decades (< {settings['min_n_decades']:g})",
                    summary="N spans too little")
    if not fit["feasible"]:
        return _row(1, name, test, fit["slope"], threshold=thr, power=power,
                    reason="no power law passes through every bracket, even one rung wider: the requirement is not a "
                           "power law on this ladder", summary="not a power law")
    lo, hi = fit["b_min"], fit["b_max"]
    cens = f"; {fit['n_low']} N below the ladder, {fit['n_high']} above it (bounds)" if fit["n_low"] or fit["n_high"] else ""
    what = f"exponents [{_fmt(lo)}, {_fmt(hi)}] pass through every bracket{slack}{cens}"
    if lo > 2.0:
        return _row(1, name, test, fit["slope"], lo, hi, thr, REFUTED, f"{what}: steeper than N^2", power,
                    summary=f"the {crit} width grows faster than N^2 (exponent >= {_fmt(lo)})")
    if hi < 2.0:
        return _row(1, name, test, fit["slope"], lo, hi, thr, CONSISTENT, f"{what}: flatter than N^2", power,
                    summary=f"the {crit} width grows as N^{_fmt(fit['slope'], 2)} (at most N^{_fmt(hi, 2)})")
    return _row(1, name, test, fit["slope"], lo, hi, thr, NOT_MEASURABLE,
                f"{what}, which holds 2: needs more N or a finer ladder", power,
                summary=f"the {crit} width's exponent is not pinned down ([{_fmt(lo)}, {_fmt(hi)}])")


# ---------------------------------------------------------------------------------------------
# Claim 2
# ---------------------------------------------------------------------------------------------

def claim2(name: str, ds, settings) -> List[Dict[str, Any]]:
    inits = [i for i in ("lecun", "he") if i in stats.axis_values(ds, "init")]
    if not inits or "inv_sqrt" not in stats.axis_values(ds, "scaling"):
        return [_row(2, name, "needs", reason="the experiment needs LeCun or He runs under scaling inv_sqrt",
                     power="no runs in the theory's setting")]
    loss_kind = str(ds.attrs.get("loss", "mean"))
    if loss_kind == "cross_entropy":
        return [_row(2, name, "needs", reason="the linear-rate theory is for the squared loss; this experiment uses "
                                              "cross-entropy", power="squared loss needed")]
    rows = []
    E = stats.budget_epochs(ds)
    c = float(settings["bound_constant"])
    level = float(settings["power_level"])
    for step in _steps(ds):
        runs = []  # (label, width, N, record of the run)
        left_out = []  # labels of the runs whose lambda_min(K_0) is below the precision of K
        for ini in inits:
            for n in _n_values(ds):
                sub = _at_n(_at_step(ds, step), n).sel(scaling="inv_sqrt", init=ini)
                N = _N(ds, n)
                stable = _kernel_stable(sub, settings)
                for w in [w for w, ok in stable.items() if ok]:
                    s = sub.sel(width=w)
                    pred = stats.predicted_rates(s, settings)
                    meas = stats.rates(s, settings)
                    below = stats.below_precision(s).ravel()
                    for k, seed in enumerate(stats.axis_values(s, "seed")):
                        r = s.sel(seed=seed)
                        st = str(r["status"].values)
                        if st not in (stats.STATUS_COMPLETE, stats.STATUS_DIVERGED):
                            continue
                        label = f"{ini} " + (f"N={n} " if n is not None else "") + f"width {w} seed {seed}"
                        if below[k]:
                            left_out.append(label)
                            continue
                        runs.append(dict(label=label, width=w, N=N, r=r, status=st, pred=pred.sel(seed=seed), meas=meas.sel(seed=seed),
                                         lmin=float(stats.epoch0_kernel(r, "lambda_min").values),
                                         eta=float(r["eta"].values) if "eta" in r else np.nan))
        grp = "/".join(inits) + " inv_sqrt, " + _step_label(ds, step)
        framing = _framing_of(ds, step)
        note = _below_note(left_out, len(runs) + len(left_out)) if left_out else ""
        if not runs and left_out:
            for t in ("(a) geometric bound", "(b) rate governed by lambda_min(K_0)"):
                rows.append(_row(2, name, f"{t} ({grp})", power=note, framing=framing, summary=NEEDS_PRECISION,
                                 reason="every kernel-stable run has lambda_min(K_0) below the precision of K: "
                                        "neither its bound nor its rate is known"))
            continue
        if not runs:
            why = ("no width keeps the kernel regime (median seed max_t |K_t-K_0|/|K_0| <= "
                   f"{settings['kernel_stability']:g}): the widths are too narrow for the theory")
            for t in ("(a) geometric bound", "(b) rate governed by lambda_min(K_0)"):
                rows.append(_row(2, name, f"{t} ({grp})", reason=why, power="needs kernel-stable widths", framing=framing,
                                 summary="no kernel-stable width"))
            continue
        step_text = _step_label(ds, step)
        for r in (_bound_row(name, runs, E, c, level, loss_kind, settings, grp, framing),
                  _lambda_row(name, runs, loss_kind, settings, grp, framing)):
            if len(_steps(ds)) > 1 and r["summary"]:
                r["summary"] += f" ({step_text})"
            if note:
                r["power"] = f"{r['power']}; {note}" if r["power"] else note
            rows.append(r)
    return rows


def _where(runs) -> str:
    ws = sorted({x["width"] for x in runs})
    ns = sorted({x["N"] for x in runs})
    return f"widths {ws}" + (f", N = {[int(n) for n in ns]}" if len(ns) > 1 else "")


def theorem_condition(r, c: float) -> tuple:
    """(holds, max kernel change, allowed): the condition under which the theory guarantees the rate
    c eta lambda_min(K_0)/N, |K_t - K_0| <= (1 - c) lambda_min(K_0) (then lambda_min(K_t) >= c lambda_min(K_0)).
    Checked at the run's checkpoints with the Frobenius norm, which bounds the spectral one:
    max_t |K_t - K_0|_F / |K_0|_F <= (1 - c) lambda_min / |K_0|_F, |K_0|_F from K_0's eigenvalues."""
    kc = float(stats.kernel_change_max(r).values)
    if "k0_eigenvalues" in r:
        lam = np.asarray(r["k0_eigenvalues"].values, dtype=float)
        lam = lam[np.isfinite(lam)]
        norm = float(np.sqrt((lam ** 2).sum())) if lam.size else np.nan
        lmin = float(lam.min()) if lam.size else np.nan
    else:  # no modes: |K_0|_F <= sqrt(N) lambda_max (conservative: a smaller allowance)
        lmin = float(stats.epoch0_kernel(r, "lambda_min").values)
        norm = float(stats.epoch0_kernel(r, "lambda_max").values) * np.sqrt(stats.n_samples_of(r))
    allowed = (1.0 - c) * lmin / norm if np.isfinite(norm) and norm > 0 else np.nan
    return bool(np.isfinite(kc) and np.isfinite(allowed) and kc <= allowed), kc, allowed


def _bound_row(name, runs, E, c, level, loss_kind, settings, grp, framing) -> Dict[str, Any]:
    test = f"(a) L_t <= L_0 (1 - {c:g} eta lambda_min(K_0)/N)^(2t) at every epoch ({grp})"
    thr = (f"scored where the theorem's condition holds (|K_t - K_0| <= {1 - c:g} lambda_min(K_0)) and the bound reaches "
           f"{level:g} L_0 within the budget; refuted by one violating run")
    powered, unpowered, bad, outside = [], [], [], []
    below_outside = 0  # runs outside the condition that stay below the bound anyway (support, never a verdict)
    for x in runs:
        holds, kc, allowed = theorem_condition(x["r"], c)
        if not holds:
            outside.append((x, kc, allowed))
            loss = np.asarray(x["r"]["loss"].values, dtype=float)
            bound = stats.geometric_bound(loss[0], x["eta"], x["lmin"], loss.size - 1, x["N"], loss_kind, c)
            below_outside += stats.bound_holds(loss, bound, settings["bound_tolerance"],
                                               diverged=x["status"] == stats.STATUS_DIVERGED)[0]
            continue
        T = bound_epochs(x["eta"], x["lmin"], x["N"], loss_kind, c, level)
        if np.isfinite(T) and T <= E:
            powered.append(x)
            loss = np.asarray(x["r"]["loss"].values, dtype=float)
            bound = stats.geometric_bound(loss[0], x["eta"], x["lmin"], loss.size - 1, x["N"], loss_kind, c)
            holds, at = stats.bound_holds(loss, bound, settings["bound_tolerance"],
                                          diverged=x["status"] == stats.STATUS_DIVERGED)
            if not holds:
                bad.append(f"{x['label']} (epoch {at})")
        else:
            reach = float(np.exp(2.0 * E * np.log1p(-c * x["eta"] * x["lmin"] / x["N"]))) if loss_kind == "mean" and \
                np.isfinite(x["lmin"]) and 0 < c * x["eta"] * x["lmin"] / x["N"] < 1 else np.nan
            unpowered.append((x, T, reach))
    need = max((T for _, T, _ in unpowered), default=np.nan)
    un = ""
    if outside:
        x, kc, allowed = min(outside, key=lambda o: o[1] / o[2] if o[2] > 0 else np.inf)
        un = (f"{len(outside)} of {len(runs)} runs outside the theorem's condition (their kernel moves more than "
              f"{1 - c:g} lambda_min(K_0); the closest, {x['label']}, moves {_fmt(kc)} of |K_0|_F against {_fmt(allowed)} "
              f"allowed; kernel change at the checkpoints)")
    if unpowered:
        worst = max(unpowered, key=lambda u: u[1] if np.isfinite(u[1]) else np.inf)
        un += ("; " if un else "") + (f"{len(unpowered)} of {len(runs)} runs not scored: the bound reaches only "
                                      f"{_fmt(worst[2])} L_0 in {E} epochs at width {worst[0]['width']}; needs >= "
                                      f"{_epochs(need)} epochs")
    if not powered:
        why = ("no run keeps its kernel within the theorem's condition: needs wider networks" if not unpowered
               else "the bound cannot bite within the budget")
        need_txt = f"needs >= {_epochs(need)} epochs" if unpowered else "needs wider networks"
        return _row(2, name, test, threshold=thr, power=un, framing=framing, reason=f"{why} at {_where(runs)}",
                    summary=f"the bound is not measurable at {_where(runs)} ({need_txt})")
    k = len(powered) - len(bad)
    lo, hi = stats.proportion_interval(k, len(powered), settings["confidence"])
    power = (f"{len(powered)} runs at {_where(powered)} whose bound reaches {level:g} L_0 within {E} epochs: a plateau "
             f"above it, a sublinear or a stalled curve would violate it" + (f"; {un}" if un else ""))
    if bad:
        return _row(2, name, test, k / len(powered), lo, hi, thr, REFUTED,
                    f"{len(bad)} of {len(powered)} runs violate it: " + "; ".join(bad[:4]), power, framing,
                    summary=f"{len(bad)} of {len(powered)} runs converge slower than the lambda_min bound")
    extra = (f"; outside the condition {below_outside} of {len(outside)} more runs stay below it too" if outside else "")
    return _row(2, name, test, 1.0, lo, hi, thr, CONSISTENT, f"all {len(powered)} scored runs stay below it" + extra, power,
                framing, summary=f"every scored run stays below the lambda_min bound ({_where(powered)})")


def _lambda_row(name, runs, loss_kind, settings, grp, framing) -> Dict[str, Any]:
    f = float(settings["rate_factor"])
    tol = float(settings["asymptotic_tolerance"])
    rr = settings["rate_range"]
    test = (f"(b) measured rate over L/L_0 in [{rr[1]:g}, {rr[0]:g}] against lambda_min(K_0)'s rate "
            f"-2 log(1 - eta lambda_min/N) ({grp})")
    thr = f"consistent if the ratio's interval lies within [1/{f:g}, {f:g}]; refuted if it lies outside"
    if not all(np.isfinite(float(x["pred"]["slowest"])) for x in runs):
        return _row(2, name, test, threshold=thr, framing=framing, power="needs K_0's modes per run",
                    reason="the aggregate has no K_0 modes (k0_eigenvalues, k0_projection): rerun the experiment",
                    summary="needs K_0's modes")
    governed = [x for x in runs if float(x["pred"]["lambda_share"]) <= 1.0 + tol]
    not_gov = [x for x in runs if x not in governed]
    note = ""
    if not_gov:
        x = max(not_gov, key=lambda x: float(x["pred"]["lambda_share"]) if np.isfinite(x["pred"]["lambda_share"]) else np.inf)
        lam = np.asarray(x["r"]["k0_eigenvalues"].values, dtype=float)
        proj = np.asarray(x["r"]["k0_projection"].values, dtype=float)
        t_on, l_on = asymptotic_onset(lam, proj, x["eta"], x["N"], loss_kind, tol)
        note = (f"{len(not_gov)} of {len(runs)} runs not scored: over this range the kernel's own prediction decays at "
                f"{_fmt(float(x['pred']['lambda_share']))} x its lambda_min rate ({x['label']}); lambda_min governs it only "
                f"below L/L_0 = {_fmt(l_on)} (epoch {_epochs(t_on)})")
    vals, short, labels = [], [], []
    for x in governed:
        m = x["meas"]
        if str(m["kind"].values) in ("measured", "floor") and float(m["rate"]) > 0:
            vals.append(np.log(float(m["rate"]) / float(x["pred"]["slowest"])))
            labels.append(x["label"])
        else:
            short.append(x["label"])
    power = (f"{len(governed)} runs at {_where(governed)} where lambda_min governs the kernel's prediction over the range"
             if governed else "no run where lambda_min governs the kernel's prediction over the range")
    power += f"; {note}" if note else ""
    if short:
        power += f"; {len(short)} runs did not enter the range (L/L_0 <= {rr[0]:g}) in their budget: {', '.join(short[:3])}"
    if len(vals) < 2:
        return _row(2, name, test, threshold=thr, power=power, framing=framing,
                    reason=f"{len(vals)} scored run(s) with a measured rate (2 needed)",
                    summary="whether lambda_min governs the rate is not measurable here")
    v = np.asarray(vals)
    res = stats.paired_ratio(np.exp(v), np.ones_like(v), settings["confidence"])
    lo, hi = res["ci_low"], res["ci_high"]
    what = f"measured / lambda_min rate {_fmt(res['ratio'])} [{_fmt(lo)}, {_fmt(hi)}] over {len(v)} runs"
    if lo >= 1.0 / f and hi <= f:
        return _row(2, name, test, res["ratio"], lo, hi, thr, CONSISTENT, what, power, framing,
                    summary=f"the measured rate is {_fmt(res['ratio'], 2)} x lambda_min(K_0)'s rate")
    if lo > f or hi < 1.0 / f:
        return _row(2, name, test, res["ratio"], lo, hi, thr, REFUTED, what + f": beyond a factor {f:g}", power, framing,
                    summary=f"the measured rate is {_fmt(res['ratio'], 2)} x lambda_min(K_0)'s rate, beyond a factor {f:g}")
    return _row(2, name, test, res["ratio"], lo, hi, thr, NOT_MEASURABLE, what + f": the interval reaches across {f:g}",
                power, framing, summary=f"the measured rate is {_fmt(res['ratio'], 2)} x lambda_min(K_0)'s rate (undecided)")


# ---------------------------------------------------------------------------------------------
# Claims 3 and 4: one setting converges faster than another
# ---------------------------------------------------------------------------------------------

def _trend(per_width) -> str:
    return "; ".join(f"width {w}: {_fmt(res['ratio'])}" + (f" [{_fmt(res['ci_low'])}, {_fmt(res['ci_high'])}]"
                                                            if np.isfinite(res["ci_low"]) else "")
                     for w, res in per_width)


def _comparison_row(claim, name, test, res, per_width, w, settings, role, framing, power_extra, what) -> Dict[str, Any]:
    m = float(settings["min_effect"])
    thr = (f"consistent if the interval lies above {1 + m:g}; refuted if below {1 / (1 + m):.3g}; no material difference "
           f"if inside")
    counts = (f"at width {w}: {res['n_values']} seed pair(s) with both rates, {res['n_a'] + res['n_b']} decided by "
              f"one run entering the range, {res['n_undecided']} undecided, {res['n_excluded']} not trained")
    power = f"{counts}{'; ' + power_extra if power_extra else ''}"
    verdict = _OUTCOME_VERDICT[res["outcome"]]
    reason = (res["note"] + "; " if res["note"] else "") + "ratio by width: " + _trend(per_width)
    if role == ROLE_CONTROL:
        reason = "control (expected: no material difference): " + reason
    ratio = (_fmt(res["ratio"], 3) + "x" if np.isfinite(res["ratio"]) else
             (f">= {_fmt(res['bound'], 3)}x" if res["outcome"] == stats.FASTER else
              f"<= {_fmt(res['bound'], 3)}x" if res["outcome"] == stats.SLOWER else "n/a"))
    word = {CONSISTENT: "faster", REFUTED: "slower", NO_DIFFERENCE: "no material difference",
            NOT_MEASURABLE: "undecided"}[verdict]
    summary = f"{what} {word} ({ratio} at width {w}, {framing or 'as run'})"
    return _row(claim, name, test, res["ratio"], res["ci_low"], res["ci_high"], thr, verdict, reason, power, framing,
                summary, role)


def _compare(claim, name, ds, axis, a, b, settings, role) -> List[Dict[str, Any]]:
    """Rows comparing setting `a` with `b` along `axis` (init or scaling): measured per step setting at
    the largest trained width; predicted from K_0 in both framings at the largest width; the ratio at
    every width (the trend) in the reason.  The numbers are `stats.comparison_by_width`'s, which the
    figures init_comparison and scaling_comparison draw."""
    rows = []
    by_width = stats.comparison_by_width(ds, axis, a, b, settings)
    for step in _steps(ds):
        sub = _at_step(ds, step)
        per_width = [(w, res) for w, res, _ in by_width[(stats.MEASURED, step)]]
        framing = _framing_of(ds, step)
        test = f"measured rate ratio {a}/{b} ({_step_label(ds, step)})"
        if not per_width:
            rows.append(_row(claim, name, test, reason="no trained width", power="needs trained runs", framing=framing,
                             role=role, summary=f"{a} vs {b}: no trained width at {_step_label(ds, step)}"))
            continue
        w, res = per_width[-1]
        eta = ""
        if "eta" in sub and "step_limit" in sub:
            r = (sub["eta"] / sub["step_limit"]).sel(width=w)
            eta = f"eta / own limit: {a} {_fmt(float(r.sel({axis: a}).median()))}, {b} {_fmt(float(r.sel({axis: b}).median()))}"
        if res["n_undecided"] and "k0_eigenvalues" in sub:
            t1 = stats.predicted_rates(sub.sel(width=[w]), settings)["t1"]
            need = {v: float(np.nanmedian(t1.sel({axis: v}).values)) if np.isfinite(t1.sel({axis: v}).values).any() else np.inf
                    for v in (a, b)}
            eta += (f"; the kernel predicts L/L_0 = {settings['rate_range'][0]:g} at epoch {_epochs(need[a])} ({a}) and "
                    f"{_epochs(need[b])} ({b}): undecided pairs need that budget")
        rows.append(_comparison_row(claim, name, test + f" at width {w}", res, per_width, w, settings, role, framing, eta,
                                    f"{a} vs {b}, measured:"))
    # the kernel's prediction from K_0, in both framings, at every width (kernel-only included)
    if (stats.PREDICTED, "common") not in by_width:
        rows.append(_row(claim, name, f"linearised rate ratio {a}/{b} from K_0", role=role,
                         reason="the aggregate has no K_0 modes (k0_eigenvalues): rerun the experiment",
                         power="needs K_0's modes", summary="needs K_0's modes"))
        return rows
    c = stats.step_fraction(ds)
    for framing in stats.PREDICTED_FRAMINGS:
        per_width = [(w, res) for w, res, _ in by_width[(stats.PREDICTED, framing)]]
        w, res = per_width[-1]
        label = "common step" if framing == "common" else "own limit"
        test = f"linearised rate ratio {a}/{b} from K_0 at width {w} ({c:g} x {'common' if framing == 'common' else 'own'} limit)"
        rows.append(_comparison_row(claim, name, test, res, per_width, w, settings, role, label,
                                    "the kernel's prediction: budget-free, every width", f"{a} vs {b}, predicted:"))
    return rows


def claim3(name: str, ds, settings, role: str = ROLE_TEST) -> List[Dict[str, Any]]:
    inits = stats.axis_values(ds, "init")
    if "ntk" not in inits or not ({"lecun", "he"} & set(inits)):
        return [_row(3, name, "needs", reason="the experiment needs init ntk and lecun or he",
                     power="needs both inits", role=role)]
    sc = stats.preferred(stats.axis_values(ds, "scaling"), "inv_sqrt")
    rows = []
    for n in _n_values(ds)[-1:]:
        sub = _at_n(ds, n).sel(scaling=sc)
        for a in ("lecun", "he"):
            if a in inits:
                rows.extend(_compare(3, name, sub, "init", a, "ntk", settings, role))
    return rows


def claim4(name: str, ds, settings, role: str = ROLE_TEST) -> List[Dict[str, Any]]:
    if not ({"inv_sqrt", "inv"} <= set(stats.axis_values(ds, "scaling"))):
        return [_row(4, name, "needs", reason="the experiment needs scalings inv_sqrt and inv", power="needs both scalings",
                     role=role)]
    ini = stats.preferred(stats.axis_values(ds, "init"), "lecun", "he")
    rows = []
    for n in _n_values(ds)[-1:]:
        rows.extend(_compare(4, name, _at_n(ds, n).sel(init=ini), "scaling", "inv_sqrt", "inv", settings, role))
    return rows


# ---------------------------------------------------------------------------------------------
# Claim 5
# ---------------------------------------------------------------------------------------------

def _slope_over_width(sub, values, confidence):
    st = np.asarray(sub["status"].transpose("width", "seed").values).astype(str).ravel()
    y = np.asarray(values.transpose("width", "seed").values, dtype=float).ravel()
    x = np.repeat(np.asarray(sub["width"].values, dtype=float), sub.sizes["seed"])
    ok = st == stats.STATUS_COMPLETE
    return stats.fit_loglog(x[ok], y[ok], confidence)


def _ci(f) -> str:
    return f"{_fmt(f['slope'])} [{_fmt(f['ci_low'])}, {_fmt(f['ci_high'])}]"


def claim5(name: str, ds, settings, role: str = ROLE_TEST) -> List[Dict[str, Any]]:
    if "inv" not in stats.axis_values(ds, "scaling") or len(stats.axis_values(ds, "width")) < 2:
        return [_row(5, name, "needs", reason="the experiment needs scaling inv and >= 2 widths", role=role,
                     power="needs scaling inv and a width axis")]
    ini = stats.preferred(stats.axis_values(ds, "init"), "lecun", "he")
    has_sq = "inv_sqrt" in stats.axis_values(ds, "scaling")
    conf, m, thr_k = settings["confidence"], float(settings["min_effect"]), float(settings["kernel_change_threshold"])
    rows = []
    for n in _n_values(ds)[-1:]:
        for step in _steps(ds):
            base = _at_step(_at_n(ds, n), step)
            inv = base.sel(scaling="inv", init=ini)
            widths = _trained_widths(inv)
            framing = _framing_of(ds, step)
            lab = f"{ini}, {_step_label(ds, step)}"
            if len(widths) < 2:
                rows.append(_row(5, name, f"(a)-(c) under inv ({lab})", reason="needs >= 2 trained widths", role=role,
                                 power="needs trained widths", framing=framing, summary="too few trained widths"))
                continue
            inv = inv.sel(width=widths)
            sq = base.sel(scaling="inv_sqrt", init=ini, width=widths) if has_sq else None
            rows.append(_attention_row(name, inv, sq, widths, lab, conf, m, role, framing))
            rows.extend(_kernel_rows(name, inv, sq, widths, lab, conf, m, thr_k, role, framing))
    return rows


def _moved(sub) -> float:
    """Median over complete runs of |dev_E - dev_0| / dev_0: how much training moved attention."""
    d0 = sub["attention_deviation_mean"].isel(epoch=0, drop=True)
    dE = stats.final_value(sub, "attention_deviation_mean")
    rel = (abs(dE - d0) / d0).where(sub["status"] == stats.STATUS_COMPLETE)
    v = np.asarray(rel.values, dtype=float)
    return float(np.nanmedian(v)) if np.isfinite(v).any() else np.nan


def _attention_row(name, inv, sq, widths, lab, conf, m, role, framing) -> Dict[str, Any]:
    test = f"(a) width slope of the attention deviation after training, inv against inv_sqrt ({lab})"
    thr = "consistent if inv's slope is negative and below inv_sqrt's interval; refuted if inv's slope is >= 0"
    moved = {w: max(_moved(inv.sel(width=w)), _moved(sq.sel(width=w)) if sq is not None else np.nan) for w in widths}
    most = max((v for v in moved.values() if np.isfinite(v)), default=np.nan)
    power = (f"training moves attention by up to {_fmt(most)} of its initial deviation (median run; "
             f"{m:g} needed for the after-training slope to differ from the algebra at init)")
    f_inv = _slope_over_width(inv, stats.final_value(inv, "attention_deviation_mean"), conf)
    f_sq = _slope_over_width(sq, stats.final_value(sq, "attention_deviation_mean"), conf) if sq is not None else None
    f0 = _slope_over_width(inv, inv["attention_deviation_mean"].isel(epoch=0, drop=True), conf)
    ctx = f"inv {_ci(f_inv)}" + (f", inv_sqrt {_ci(f_sq)}" if f_sq is not None else "") + f"; at init inv {_ci(f0)}"
    if not (np.isfinite(most) and most >= m):
        return _row(5, name, test, f_inv["slope"], f_inv["ci_low"], f_inv["ci_high"], thr, NOT_MEASURABLE,
                    f"training does not move attention measurably here, so the after-training slope repeats the algebra "
                    f"at init ({ctx}): needs a setting where attention moves (larger step, O(1) logits, longer training)",
                    power, framing, summary="attention barely moves in training: not measurable", role=role)
    if not np.isfinite(f_inv["slope"]):
        return _row(5, name, test, threshold=thr, reason="needs >= 3 complete runs over >= 2 widths", power=power,
                    framing=framing, role=role, summary="too few runs")
    separated = f_sq is None or (np.isfinite(f_sq["ci_low"]) and f_inv["ci_high"] < f_sq["ci_low"])
    if f_inv["ci_high"] < 0 and separated:
        return _row(5, name, test, f_inv["slope"], f_inv["ci_low"], f_inv["ci_high"], thr, CONSISTENT, ctx, power,
                    framing, summary=f"attention tends to uniform under inv after training (slope {_fmt(f_inv['slope'], 2)})",
                    role=role)
    if f_inv["ci_low"] >= 0:
        return _row(5, name, test, f_inv["slope"], f_inv["ci_low"], f_inv["ci_high"], thr, REFUTED, ctx, power, framing,
                    summary="attention does not approach uniform with width under inv", role=role)
    return _row(5, name, test, f_inv["slope"], f_inv["ci_low"], f_inv["ci_high"], thr, NOT_MEASURABLE,
                ctx + ": not separated from inv_sqrt or not significantly negative", power, framing,
                summary="attention's trend under inv is not separated from inv_sqrt's", role=role)


def _kernel_rows(name, inv, sq, widths, lab, conf, m, thr_k, role, framing) -> List[Dict[str, Any]]:
    rows = []
    if "checkpoint_epoch" not in inv.dims or not bool((inv["checkpoint_epoch"] > 0).any()):
        return [_row(5, name, f"(b) final NTK change under inv ({lab})", reason="needs a checkpoint epoch after 0",
                     power="needs checkpoints", framing=framing, role=role, summary="no kernel checkpoints")]
    kc_inv = stats.final_kernel_change(inv)
    f = _slope_over_width(inv, kc_inv, conf)
    wmax = widths[-1]
    level = float(np.nanmedian(kc_inv.sel(width=wmax).values)) if np.isfinite(kc_inv.sel(width=wmax).values).any() else np.nan
    test = f"(b) final NTK change |K_E-K_0|/|K_0| under inv: width slope, level at width {wmax} ({lab})"
    thr = f"consistent if the slope is negative and the level <= {thr_k:g}; refuted if the slope is >= 0"
    power = f"{len(widths)} trained widths {widths}"
    if not np.isfinite(f["slope"]) or not np.isfinite(level):
        rows.append(_row(5, name, test, level, threshold=thr, reason="needs >= 3 complete runs with a kernel change",
                         power=power, framing=framing, role=role, summary="no kernel change measured"))
    else:
        ctx = f"slope {_ci(f)}, level {_fmt(level)} at width {wmax}"
        if f["ci_high"] < 0 and level <= thr_k:
            rows.append(_row(5, name, test, level, f["ci_low"], f["ci_high"], thr, CONSISTENT, ctx, power, framing,
                             summary=f"the NTK change falls with width to {_fmt(level, 2)} at width {wmax}", role=role))
        elif f["ci_high"] < 0:
            w_star = wmax * (thr_k / level) ** (1.0 / f["slope"])
            rows.append(_row(5, name, test, level, f["ci_low"], f["ci_high"], thr, NOT_MEASURABLE,
                             f"{ctx}: falling, but above {thr_k:g}; at this slope it reaches {thr_k:g} near width {_fmt(w_star)}",
                             power + f"; needs widths up to ~{_fmt(w_star)}", framing,
                             summary=f"the NTK change falls with width (slope {_fmt(f['slope'], 2)}) but reaches {thr_k:g} "
                                     f"only near width {_fmt(w_star, 2)}", role=role))
        elif f["ci_low"] >= 0:
            rows.append(_row(5, name, test, level, f["ci_low"], f["ci_high"], thr, REFUTED, ctx + ": not falling with width",
                             power, framing, summary="the NTK change does not fall with width under inv", role=role))
        else:
            rows.append(_row(5, name, test, level, f["ci_low"], f["ci_high"], thr, NOT_MEASURABLE,
                             ctx + ": the slope's interval holds 0", power, framing,
                             summary="the NTK change's trend with width is not significant", role=role))
    if sq is None:
        return rows
    kc_sq = stats.final_kernel_change(sq)
    a = np.asarray(kc_inv.sel(width=wmax).values, dtype=float).ravel()
    b = np.asarray(kc_sq.sel(width=wmax).values, dtype=float).ravel()
    res = stats.compare_rates([(dict(kind="measured", rate=y, t_enter=0, budget=1), dict(kind="measured", rate=x, t_enter=0,
                                                                                      budget=1))
                               for x, y in zip(a, b) if np.isfinite(x) and np.isfinite(y) and x > 0 and y > 0], conf, m)
    # res compares inv_sqrt's change (A) with inv's (B): the claim expects inv's kernel to move less
    test = f"(c) final NTK change inv_sqrt/inv at width {wmax} ({lab})"
    thr = (f"consistent if inv's kernel moves materially less (ratio above {1 + m:g}); refuted if it moves materially "
           f"more (below {1 / (1 + m):.3g}); no material difference inside")
    verdict = _OUTCOME_VERDICT[res["outcome"]]
    word = {CONSISTENT: "moves less under inv", REFUTED: "moves more under inv than under inv_sqrt",
            NO_DIFFERENCE: "moves as much under inv as under inv_sqrt", NOT_MEASURABLE: "undecided"}[verdict]
    rows.append(_row(5, name, test, res["ratio"], res["ci_low"], res["ci_high"], thr, verdict,
                     f"median change inv {_fmt(float(np.nanmedian(a)))}, inv_sqrt {_fmt(float(np.nanmedian(b)))}"
                     + (f"; {res['note']}" if res["note"] else ""),
                     f"{res['n_values']} seed pairs at width {wmax}", framing,
                     summary=f"the NTK {word} (inv_sqrt/inv {_fmt(res['ratio'], 3)} at width {wmax})", role=role))
    return rows


TESTS: Dict[int, Callable[..., List[Dict[str, Any]]]] = {1: claim1, 2: claim2, 3: claim3, 4: claim4, 5: claim5}
_ROLE_AWARE = (3, 4, 5)


def evaluate_claims(aggregates: Mapping[str, Any], claims_of: Mapping[str, Iterable[int]],
                    analysis_cfg: Optional[Mapping[str, Any]] = None,
                    controls: Optional[Mapping[str, str]] = None):
    """The claims table (pandas.DataFrame, columns "claim", "statement" and `COLUMNS`).

    aggregates: experiment name -> aggregate Dataset; claims_of: experiment name -> the claims its
    analyses test (`claims_tested`); controls: experiment name -> why it is a control (its rows get
    role "control": expected no material difference, never a test of the claim)."""
    import pandas as pd

    settings = analysis_settings(analysis_cfg)
    controls = dict(controls or {})
    rows: List[Dict[str, Any]] = []
    for k in sorted(CLAIMS):
        tested = [name for name in aggregates if k in set(claims_of.get(name, ()))]
        for name in tested:
            ds = stats.complete_axes(aggregates[name])
            role = ROLE_CONTROL if name in controls else ROLE_TEST
            new = TESTS[k](name, ds, settings, role) if k in _ROLE_AWARE else TESTS[k](name, ds, settings)
            if role == ROLE_CONTROL:
                for r in new:
                    r["role"] = ROLE_CONTROL
            st = stats.run_status(ds)
            n_div = int((st == stats.STATUS_DIVERGED).sum())
            if n_div:  # say so in every row of the experiment
                note = f"{n_div} of {st.size} run(s) diverged (counted where a test scores them)"
                for r in new:
                    r["reason"] = f"{r['reason']}; {note}" if r["reason"] else note
            rows.extend(new)
        if not tested:
            rows.append(_row(k, "", "-", reason=f"no experiment lists an analysis that tests it ({', '.join(analyses_testing(k))})",
                             power="not run", summary="no experiment of this configuration tests it (add one listing "
                                                      f"{' or '.join(analyses_testing(k))})"))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.insert(1, "statement", df["claim"].map(CLAIMS))
    return df


def claims_tested(analyses: Sequence[str]) -> List[int]:
    """The claims tested by an experiment that lists `analyses` (from the registry)."""

    return sorted({c for a in analyses for c in get_analysis(a).claims})


# ---------------------------------------------------------------------------------------------
# The synthesis: one sentence per claim
# ---------------------------------------------------------------------------------------------

def synthesis(table) -> List[Dict[str, Any]]:
    """One sentence per claim that a reviewer can quote, generated from the rows: the overall verdict
    ("holds", "fails", "holds in part", "no material difference", "not measurable"), where it holds or
    fails (the rows' summaries, with experiment and framing), what is not measurable and why, and how
    the controls came out.  Returns [dict(claim, verdict, sentence, counts)]."""
    out = []
    for k in sorted(CLAIMS):
        rows = table[table["claim"] == k]
        tests = rows[rows["role"] == ROLE_TEST]
        ctrl = rows[rows["role"] == ROLE_CONTROL]
        counts = {v: int((tests["verdict"] == v).sum()) for v in VERDICTS}
        if counts[CONSISTENT] and counts[REFUTED]:
            overall = "holds in part"
        elif counts[CONSISTENT]:
            overall = "holds"
        elif counts[REFUTED]:
            overall = "fails"
        elif counts[NO_DIFFERENCE]:
            overall = "no material difference"
        else:
            overall = "not measurable"

        def parts(verdict, limit=3):
            sel = tests[tests["verdict"] == verdict]
            ps = [r.summary + (f" [{r.experiment}]" if r.experiment else "") for r in sel.itertuples() if r.summary]
            return ps[:limit] + ([f"{len(ps) - limit} more"] if len(ps) > limit else [])

        bits = []
        for verdict, word in ((CONSISTENT, "holds"), (REFUTED, "fails"), (NO_DIFFERENCE, "no material difference")):
            p = parts(verdict)
            if p:
                bits.append(f"{word}: " + "; ".join(p))
        nm = tests[tests["verdict"] == NOT_MEASURABLE]
        if len(nm):
            bits.append("not measurable: " + "; ".join(r.summary + (f" [{r.experiment}]" if r.experiment else "")
                                                        for r in nm.itertuples() if r.summary))
        fr_c = set(tests[tests["verdict"] == CONSISTENT]["framing"]) - {""}
        fr_r = set(tests[tests["verdict"] == REFUTED]["framing"]) - {""}
        if fr_c and fr_r and not (fr_c & fr_r):
            bits.append(f"the verdict follows the framing: it holds at the {' and '.join(sorted(fr_c))} and reverses "
                        f"at the {' and '.join(sorted(fr_r))}: a step-size effect, not an effect of the setting alone")
        elif len(fr_r) > 1 and not fr_c:
            bits.append(f"it fails in every framing tested ({', '.join(sorted(fr_r))}): not a step-size effect")
        for r in ctrl.itertuples():
            if r.verdict == NO_DIFFERENCE:
                how = ", as expected"
            elif r.verdict == NOT_MEASURABLE:
                how = f" ({r.summary})" if r.summary else ""
            else:
                how = ": a difference where none is expected, look at this control"
            bits.append(f"control {r.experiment} ({r.framing or 'as run'}): {r.verdict}{how}")
        if len(bits) == 1 and bits[0].startswith(overall + ": "):
            bits[0] = bits[0][len(overall) + 2:]  # the overall verdict already says it
        sentence = f"Claim {k} ({CLAIMS[k]}): {overall.upper()}" + (". " + ". ".join(b[0].upper() + b[1:] for b in bits)
                                                                     if bits else "") + "."
        out.append(dict(claim=k, verdict=overall, sentence=sentence, counts=counts))
    return out


def synthesis_markdown(sentences: Sequence[Mapping[str, Any]]) -> str:
    """The synthesis as a Markdown list (tables/synthesis.md), one bullet per claim."""
    lines = ["# What the claims table says, claim by claim", ""]
    lines += [f"- {s['sentence']}" for s in sentences]
    return "\n".join(lines) + "\n"
