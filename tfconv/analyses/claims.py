"""The claims table: each of the paper's five claims (science.md section 3) tested in numbers, with
tests that can fail.

`evaluate_claims(aggregates, claims_of, settings)` returns one row per (claim, test, experiment
that tests it).  An experiment tests the claims of the analyses it lists (`Analysis.claims` in the
registry), so an experiment that cannot test a claim has no row for it; a claim that no experiment
tests gets one "not measurable" row saying which analysis would.  Columns (`COLUMNS`): claim,
experiment, test, value, ci_low, ci_high, threshold, verdict ("consistent" / "refuted" / "not
measurable") and reason (why, for every verdict; for "not measurable", what is missing).

The tests (docs/analyses.md says how each can fail; tests/analyses/test_claims.py feeds each a constructed
case where the claim is false and one where it is true):

1. Width of order N^2 suffices (experiments with n_samples >= 3 values and width; lecun/inv_sqrt,
   else he).  (a) *direct sufficiency*: for every N with N^2 within the width grid, every seed at the
   smallest width >= N^2 must end complete with loss_E / loss_0 <= ``loss_target``; seeds whose own
   linearised prediction does not reach the target within the budget are not scored (the budget,
   not the width, would be at fault).  Refuted by one failing scored seed.  (b) the exponent of the
   smallest kernel-stable width (max_t |K_t - K_0|/|K_0| <= ``kernel_stability`` for the median
   seed; independent of the epoch budget) in N: refuted when ci_low > 2 (the requirement grows faster
   than N^2), consistent when ci_high < 2, not measurable when the interval holds 2, with fewer than 3
   uncensored N or when N spans fewer than ``min_n_decades`` decades.  (c) the same exponent for
   every loss target in ``loss_targets`` (budget-dependent; shows how the exponent moves).
2. Linear convergence governed by lambda_min(K_0) (LeCun/He under inv_sqrt, at sufficient widths:
   widths whose median seed is kernel-stable).  (a) every complete run satisfies
   L_t <= L_0 (1 - c eta lambda_min(K_0)/N)^(2t) (1 + ``bound_tolerance``) at every epoch (c =
   ``bound_constant``): refuted by one violating run.  (b) every run's late-window rate has a lower
   confidence limit above 0 (or the loss reached float precision): refuted by one run whose rate
   interval lies at or below 0; not measurable when a run's interval straddles 0 and none is below.
3. LeCun/He faster than NTK (init ntk and lecun/he; inv_sqrt).  For every step setting of the
   experiment (a common fixed step, the paper's Algorithm 1; or each run at its own fraction of its
   stability limit): the paired ratio of late-window rates rate(A)/rate(ntk) at the largest width
   with >= 2 pairs of complete runs.  Consistent when ratio > ``faster_ratio`` and ci_low > 1, refuted
   when ci_high < 1, not measurable otherwise.
4. inv_sqrt faster than inv at large width (both scalings; lecun): (a) the measured paired ratio
   rate(inv_sqrt)/rate(inv) at the largest trained width, (b) the ratio of the linearised
   predictions at the largest width (kernel-only widths included); the same rule as claim 3.
5. Under tau0 = width^-1 attention tends to uniform and the NTK is stable (scaling inv, >= 2 widths;
   lecun).  (a) the width slope of the mean attention deviation at the end of training: consistent
   when ci_high < 0, refuted when ci_low > 0.  (b) the final NTK change: consistent when its width
   slope has ci_high < 0 and the median seed at the widest width is at or below
   ``kernel_change_threshold``; refuted when the slope has ci_low > 0 or the level at the widest
   width exceeds the threshold while the slope is not negative; not measurable otherwise.
Every fit and ratio leaves out diverged, missing and kernel-only runs (kernel-only runs count in 4b).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from ..config import analysis_settings
from ..registry import all_analyses, get_analysis
from . import stats

CLAIMS = {
    1: "width of order N^2 suffices for global convergence (LeCun/He, tau0 = d_m^-1/2)",
    2: "the training loss converges linearly at a rate governed by lambda_min(K_0)",
    3: "LeCun/He initialisation converges faster than NTK initialisation",
    4: "tau0 = d_m^-1/2 converges faster than tau0 = d_m^-1 at large width",
    5: "under tau0 = d_m^-1 attention tends to uniform and the NTK is stable",
}
COLUMNS = ["claim", "experiment", "test", "value", "ci_low", "ci_high", "threshold", "verdict", "reason"]
CONSISTENT, REFUTED, NOT_MEASURABLE = "consistent", "refuted", "not measurable"


def _row(claim: int, experiment: str, test: str, value=np.nan, ci_low=np.nan, ci_high=np.nan, threshold: str = "",
         verdict: str = NOT_MEASURABLE, reason: str = "") -> Dict[str, Any]:
    return dict(claim=claim, experiment=experiment, test=test, value=float(value), ci_low=float(ci_low),
                ci_high=float(ci_high), threshold=threshold, verdict=verdict, reason=reason)


def _fmt(x) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3g}"


def _largest_n(ds):
    if "n_samples" in ds.dims:
        return ds.sel(n_samples=max(stats.axis_values(ds, "n_samples")))
    return ds


def _theory_group(ds) -> tuple:
    """(scaling, init) of the theory's setting: inv_sqrt with lecun (else he, else the first)."""
    return (stats.preferred(stats.axis_values(ds, "scaling"), "inv_sqrt"),
            stats.preferred(stats.axis_values(ds, "init"), "lecun", "he"))


def _steps(ds) -> List[Any]:
    return stats.axis_values(ds, "step_size") or [None]


def _at_step(ds, step):
    return ds if step is None else ds.sel(step_size=step)


def _step_label(ds, step) -> str:
    return f"step {step}" if step is not None else f"step {ds.attrs.get('step', '?')}"


# ---------------------------------------------------------------------------------------------
# Claim 1
# ---------------------------------------------------------------------------------------------

def _exponent_verdict(fit, settings) -> tuple:
    if not np.isfinite(fit["slope"]) or fit["n"] < 3:
        return NOT_MEASURABLE, f"{fit['n']} n_samples with a sufficient width (3 needed), {fit['n_censored']} censored"
    if fit["decades"] < float(settings["min_n_decades"]):
        return NOT_MEASURABLE, (f"n_samples spans {fit['decades']:.2f} decades (< {settings['min_n_decades']:g}): "
                                "too short to fit an exponent")
    censored = f"; {fit['n_censored']} n_samples censored (no sufficient width on the ladder)" if fit["n_censored"] else ""
    if fit["ci_low"] > 2.0:
        return REFUTED, f"the required width grows faster than N^2 (interval above 2){censored}"
    if fit["ci_high"] < 2.0:
        return CONSISTENT, f"the required width grows slower than N^2 (interval below 2){censored}"
    return NOT_MEASURABLE, f"the interval holds 2: more n_samples or seeds are needed to decide{censored}"


def claim1(name: str, ds, settings) -> List[Dict[str, Any]]:
    if not ({"n_samples", "width"} <= set(ds.dims)) or ds.sizes["n_samples"] < 3:
        return [_row(1, name, "needs", reason="the experiment needs an n_samples axis with >= 3 values and a width axis")]
    sc, ini = _theory_group(ds)
    rows = []
    for step in _steps(ds):
        sub = _at_step(ds, step).sel(scaling=[sc], init=[ini])
        grp = f"{ini}/{sc}" + (f", step {step}" if step is not None else "")
        rows.append(_direct_sufficiency(name, sub, settings, grp))
        table = stats.smallest_sufficient_width(sub, "kernel", success_fraction=settings["success_fraction"],
                                                kernel_stability=settings["kernel_stability"])
        fit = stats.overparam_exponent(table, settings["confidence"])
        verdict, why = _exponent_verdict(fit, settings)
        rows.append(_row(1, name, f"(b) exponent of the smallest kernel-stable width in N ({grp}; max_t "
                                  f"|K_t-K_0|/|K_0| <= {settings['kernel_stability']:g} for the median seed)",
                         fit["slope"], fit["ci_low"], fit["ci_high"], "refuted if ci_low > 2; consistent if ci_high < 2",
                         verdict, why))
        for target in settings["loss_targets"]:
            table = stats.smallest_sufficient_width(sub, "loss", target, settings["success_fraction"])
            fit = stats.overparam_exponent(table, settings["confidence"])
            verdict, why = _exponent_verdict(fit, settings)
            rows.append(_row(1, name, f"(c) exponent of the smallest width reaching loss_E/loss_0 <= {target:g} ({grp})",
                             fit["slope"], fit["ci_low"], fit["ci_high"],
                             "refuted if ci_low > 2; consistent if ci_high < 2", verdict,
                             why + "; depends on the epoch budget"))
    return rows


def _direct_sufficiency(name, sub, settings, grp) -> Dict[str, Any]:
    target = float(settings["loss_target"])
    test = f"(a) every seed at width >= N^2 reaches loss_E/loss_0 <= {target:g} ({grp})"
    thr = "refuted by one failing seed whose linearised prediction reaches the target"
    widths = sorted(stats.axis_values(sub, "width"))
    scored = ok = 0
    untestable, failures = [], []
    for n in stats.axis_values(sub, "n_samples"):
        need = [w for w in widths if w >= n * n]
        if not need:
            continue
        s = sub.sel(n_samples=n, width=need[0])
        st = stats.run_status(s).ravel()
        loss = s["loss"].transpose(..., "epoch").values.reshape(st.size, -1)
        lin = (s["loss_linearised"].transpose(..., "epoch").values.reshape(st.size, -1)
               if "loss_linearised" in s else np.full_like(loss, np.nan))
        for k in range(st.size):
            if st[k] == stats.STATUS_MISSING:
                continue
            if not (np.isfinite(lin[k, -1]) and lin[k, -1] <= target * lin[k, 0]):
                untestable.append(f"N={n}")
                continue
            scored += 1
            good = st[k] == stats.STATUS_COMPLETE and loss[k, -1] <= target * loss[k, 0]
            ok += good
            if not good:
                failures.append(f"N={n} width {need[0]} seed {k} ({st[k]}, loss ratio {_fmt(loss[k, -1] / loss[k, 0])})")
    if scored == 0:
        why = ("no n_samples has N^2 within the width grid" if not untestable else
               f"the linearised prediction does not reach the target within the budget for {sorted(set(untestable))}: "
               "raise train.epochs")
        return _row(1, name, test, threshold=thr, reason=why)
    frac = ok / scored
    lo, hi = stats.proportion_interval(ok, scored, settings["confidence"])
    if failures:
        return _row(1, name, test, frac, lo, hi, thr, REFUTED, f"{len(failures)} of {scored} seeds fail: " + "; ".join(failures[:4]))
    skipped = f"; {len(untestable)} seed(s) not scored (budget too short for their linearised prediction)" if untestable else ""
    return _row(1, name, test, frac, lo, hi, thr, CONSISTENT, f"all {scored} seeds at width >= N^2 converge{skipped}")


# ---------------------------------------------------------------------------------------------
# Claim 2
# ---------------------------------------------------------------------------------------------

def sufficient_widths(sub, settings) -> List[Any]:
    """Widths of `sub` (one group) whose median seed stays in the kernel regime."""
    ok = stats.run_succeeds(sub, "kernel", kernel_stability=settings["kernel_stability"])
    out = []
    for w in stats.axis_values(sub, "width"):
        st = stats.run_status(sub.sel(width=w)).ravel()
        present = (st != stats.STATUS_MISSING) & (st != stats.STATUS_KERNEL_ONLY)
        if present.sum() and np.asarray(ok.sel(width=w).values).ravel()[present].mean() >= settings["success_fraction"]:
            out.append(w)
    return out


def claim2(name: str, ds, settings) -> List[Dict[str, Any]]:
    inits = [i for i in ("lecun", "he") if i in stats.axis_values(ds, "init")]
    if not inits or "inv_sqrt" not in stats.axis_values(ds, "scaling"):
        return [_row(2, name, "needs", reason="the experiment needs LeCun or He runs under scaling inv_sqrt")]
    ds = _largest_n(ds)
    loss_kind = str(ds.attrs.get("loss", "mean"))
    if loss_kind == "cross_entropy":
        return [_row(2, name, "needs", reason="the linear-rate theory is for the squared loss; this experiment uses cross-entropy")]
    N = stats.n_samples_of(ds)
    rows = []
    for step in _steps(ds):
        bound_runs, rate_runs = [], []
        widths_used = set()
        for ini in inits:
            sub = _at_step(ds, step).sel(scaling="inv_sqrt", init=ini)
            good = sufficient_widths(sub, settings)
            widths_used.update(good)
            for w in good:
                s = sub.sel(width=w)
                rs = stats.rates(s, settings)
                for seed in stats.axis_values(s, "seed"):
                    r = s.sel(seed=seed)
                    if str(r["status"].values) not in (stats.STATUS_COMPLETE, stats.STATUS_DIVERGED):
                        continue
                    loss = np.asarray(r["loss"].values, dtype=float)
                    eta = float(r["eta"].values) if "eta" in r else np.nan
                    lmin = float(stats.epoch0_kernel(r, "lambda_min").values)
                    bound = stats.geometric_bound(loss[0], eta, lmin, loss.size - 1, N, loss_kind, settings["bound_constant"])
                    holds, at = stats.bound_holds(loss, bound, settings["bound_tolerance"])
                    label = f"{ini} width {w} seed {seed}"
                    bound_runs.append((holds, label, at))
                    rr = rs.sel(seed=seed)
                    rate_runs.append((float(rr["ci_low"]), float(rr["ci_high"]), bool(rr["floor_reached"]), label))
        grp = "/".join(inits) + " inv_sqrt" + (f", step {step}" if step is not None else "")
        if not bound_runs:
            why = ("no width keeps the kernel regime (median seed max_t |K_t-K_0|/|K_0| <= "
                   f"{settings['kernel_stability']:g}): the widths are too narrow for the theory")
            rows.append(_row(2, name, f"(a) geometric bound ({grp})", reason=why))
            rows.append(_row(2, name, f"(b) late-window rate > 0 ({grp})", reason=why))
            continue
        where = f"widths {sorted(widths_used)}"
        k = sum(h for h, _, _ in bound_runs)
        lo, hi = stats.proportion_interval(k, len(bound_runs), settings["confidence"])
        bad = [f"{lab} (epoch {at})" for h, lab, at in bound_runs if not h]
        c = settings["bound_constant"]
        rows.append(_row(2, name, f"(a) L_t <= L_0 (1 - {c:g} eta lambda_min(K_0)/N)^(2t) at every epoch ({grp}; {where})",
                         k / len(bound_runs), lo, hi, "refuted by one violating run",
                         REFUTED if bad else CONSISTENT,
                         (f"{len(bad)} of {len(bound_runs)} runs violate it: " + "; ".join(bad[:4])) if bad
                         else f"all {len(bound_runs)} runs satisfy it"))
        pos = [r for r in rate_runs if r[2] or (np.isfinite(r[0]) and r[0] > 0)]
        neg = [r for r in rate_runs if not r[2] and np.isfinite(r[1]) and r[1] <= 0]
        unsure = [r for r in rate_runs if r not in pos and r not in neg]
        lows = [r[0] for r in rate_runs if np.isfinite(r[0])]
        value = min(lows) if lows else np.nan
        verdict = REFUTED if neg else (CONSISTENT if not unsure else NOT_MEASURABLE)
        why = (f"{len(neg)} run(s) do not decrease: " + "; ".join(r[3] for r in neg[:4])) if neg else (
            f"all {len(rate_runs)} runs decrease geometrically ({sum(r[2] for r in rate_runs)} reached float precision)"
            if not unsure else f"{len(unsure)} run(s) have no or a zero-straddling rate interval: "
            + "; ".join(r[3] for r in unsure[:4]))
        rows.append(_row(2, name, f"(b) late-window rate has ci_low > 0 in every run ({grp}; {where}; value: the "
                                  "smallest ci_low)", value, np.nan, np.nan, "refuted by one run with ci_high <= 0",
                         verdict, why))
    return rows


# ---------------------------------------------------------------------------------------------
# Claims 3 and 4: one rate faster than another
# ---------------------------------------------------------------------------------------------

def _faster(claim: int, name: str, test: str, res: Mapping[str, float], settings, context: str) -> Dict[str, Any]:
    thr = f"consistent if ratio > {settings['faster_ratio']:g} and ci_low > 1; refuted if ci_high < 1"
    if res["n"] < 2 or not np.isfinite(res["ci_low"]):
        return _row(claim, name, test, res["ratio"], threshold=thr,
                    reason=f"{res['n']} seed pair(s) with both rates (2 needed for an interval); {context}")
    if res["ratio"] > settings["faster_ratio"] and res["ci_low"] > 1.0:
        return _row(claim, name, test, res["ratio"], res["ci_low"], res["ci_high"], thr, CONSISTENT, context)
    if res["ci_high"] < 1.0:
        return _row(claim, name, test, res["ratio"], res["ci_low"], res["ci_high"], thr, REFUTED,
                    "significantly slower; " + context)
    return _row(claim, name, test, res["ratio"], res["ci_low"], res["ci_high"], thr, NOT_MEASURABLE,
                "the interval holds 1 (no significant difference); " + context)


def _step_context(s, w) -> str:
    if "eta" not in s or "step_limit" not in s:
        return ""
    ratio = (s["eta"] / s["step_limit"]).sel(width=w).values
    return f"eta / limit {_fmt(np.nanmin(ratio))}..{_fmt(np.nanmax(ratio))}"


def claim3(name: str, ds, settings) -> List[Dict[str, Any]]:
    inits = stats.axis_values(ds, "init")
    if "ntk" not in inits or not ({"lecun", "he"} & set(inits)):
        return [_row(3, name, "needs", reason="the experiment needs init ntk and lecun or he")]
    sc = stats.preferred(stats.axis_values(ds, "scaling"), "inv_sqrt")
    ds = _largest_n(ds)
    rows = []
    for step in _steps(ds):
        sub = _at_step(ds, step).sel(scaling=sc)
        rate = stats.rates(sub, settings)["rate"]
        for a in ("lecun", "he"):
            if a not in inits:
                continue
            w, res = stats.ratio_at_largest_width(rate.sel(init=a), rate.sel(init="ntk"), settings["confidence"],
                                                  stats.axis_values(sub, "width"))
            ctx = (f"width {w}, {_step_label(sub, step)}; {a}: {_step_context(sub.sel(init=a), w)}, "
                   f"ntk: {_step_context(sub.sel(init='ntk'), w)}")
            rows.append(_faster(3, name, f"late-window rate ratio {a}/ntk ({sc}, {_step_label(sub, step)})", res,
                                settings, ctx))
    return rows


def claim4(name: str, ds, settings) -> List[Dict[str, Any]]:
    if not ({"inv_sqrt", "inv"} <= set(stats.axis_values(ds, "scaling"))):
        return [_row(4, name, "needs", reason="the experiment needs scalings inv_sqrt and inv")]
    ini = stats.preferred(stats.axis_values(ds, "init"), "lecun", "he")
    ds = _largest_n(ds)
    rows = []
    for step in _steps(ds):
        sub = _at_step(ds, step).sel(init=ini)
        meas = stats.rates(sub, settings)["rate"]
        trained = [w for w in stats.axis_values(sub, "width")
                   if (stats.run_status(sub.sel(width=w)) == stats.STATUS_COMPLETE).any()]
        if trained:
            w, res = stats.ratio_at_largest_width(meas.sel(scaling="inv_sqrt"), meas.sel(scaling="inv"),
                                                  settings["confidence"], trained)
            rows.append(_faster(4, name, f"(a) measured rate ratio inv_sqrt/inv at the largest trained width ({ini}, "
                                         f"{_step_label(sub, step)})", res, settings, f"width {w}"))
        pred = stats.rates(sub, settings, "loss_linearised")["rate"]
        wmax = max(stats.axis_values(sub, "width"))
        res = stats.paired_ratio(pred.sel(scaling="inv_sqrt", width=wmax).values, pred.sel(scaling="inv", width=wmax).values,
                                 settings["confidence"])
        rows.append(_faster(4, name, f"(b) linearised-prediction rate ratio inv_sqrt/inv at width {wmax} ({ini}, "
                                     f"{_step_label(sub, step)})", res, settings,
                            f"width {wmax}; from K_0 and the initial residual (no training needed)"))
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


def claim5(name: str, ds, settings) -> List[Dict[str, Any]]:
    if "inv" not in stats.axis_values(ds, "scaling") or len(stats.axis_values(ds, "width")) < 2:
        return [_row(5, name, "needs", reason="the experiment needs scaling inv and >= 2 widths")]
    ini = stats.preferred(stats.axis_values(ds, "init"), "lecun", "he")
    ds = _largest_n(ds)
    rows = []
    for step in _steps(ds):
        sub = _at_step(ds, step).sel(scaling="inv", init=ini)
        trained = [w for w in stats.axis_values(sub, "width") if (stats.run_status(sub.sel(width=w)) == stats.STATUS_COMPLETE).any()]
        sub = sub.sel(width=trained)
        lab = f"inv, {ini}, {_step_label(sub, step)}"
        f = _slope_over_width(sub, stats.final_value(sub, "attention_deviation_mean"), settings["confidence"])
        test = f"(a) width slope of the attention deviation at the end of training ({lab})"
        thr = "consistent if ci_high < 0; refuted if ci_low > 0"
        if not np.isfinite(f["slope"]):
            rows.append(_row(5, name, test, threshold=thr, reason="needs >= 3 complete runs over >= 2 trained widths"))
        else:
            v = CONSISTENT if f["ci_high"] < 0 else REFUTED if f["ci_low"] > 0 else NOT_MEASURABLE
            rows.append(_row(5, name, test, f["slope"], f["ci_low"], f["ci_high"], thr, v,
                             f"{f['n']} runs over widths {trained}" + ("" if v != NOT_MEASURABLE else "; the interval holds 0")))
        kc = stats.final_value(sub, "kernel_change", "checkpoint_epoch")
        test = f"(b) final NTK change |K_E-K_0|/|K_0|: width slope and level at the widest width ({lab})"
        thr = f"consistent if slope ci_high < 0 and level <= {settings['kernel_change_threshold']:g}"
        ck = [int(e) for e in sub["checkpoint_epoch"].values] if "checkpoint_epoch" in sub.dims else []
        if not ck or max(ck) == 0:
            rows.append(_row(5, name, test, threshold=thr, reason="needs a checkpoint epoch after 0"))
            continue
        f = _slope_over_width(sub, kc, settings["confidence"])
        wmax = max(trained) if trained else None
        level = float(np.nanmedian(kc.sel(width=wmax).values)) if wmax is not None else np.nan
        if not np.isfinite(f["slope"]) or not np.isfinite(level):
            rows.append(_row(5, name, test, level, threshold=thr, reason="needs >= 3 complete runs with a kernel change"))
            continue
        thr_v = settings["kernel_change_threshold"]
        if f["ci_high"] < 0 and level <= thr_v:
            v, why = CONSISTENT, f"slope {_fmt(f['slope'])} [{_fmt(f['ci_low'])}, {_fmt(f['ci_high'])}], level {_fmt(level)} at width {wmax}"
        elif f["ci_low"] > 0 or (level > thr_v and f["ci_high"] >= 0):
            v, why = REFUTED, (f"slope {_fmt(f['slope'])} [{_fmt(f['ci_low'])}, {_fmt(f['ci_high'])}] is not negative"
                               + (f" and the level {_fmt(level)} at width {wmax} exceeds {thr_v:g}" if level > thr_v else ""))
        else:
            v, why = NOT_MEASURABLE, (f"slope {_fmt(f['slope'])} [{_fmt(f['ci_low'])}, {_fmt(f['ci_high'])}], level "
                                      f"{_fmt(level)} at width {wmax}: decreasing but not yet at {thr_v:g}, or not significantly decreasing")
        rows.append(_row(5, name, test, level, np.nan, np.nan, thr, v, why))
    return rows


TESTS: Dict[int, Callable[[str, Any, Mapping[str, Any]], List[Dict[str, Any]]]] = {
    1: claim1, 2: claim2, 3: claim3, 4: claim4, 5: claim5,
}


def evaluate_claims(aggregates: Mapping[str, Any], claims_of: Mapping[str, Iterable[int]],
                    analysis_cfg: Optional[Mapping[str, Any]] = None):
    """The claims table (pandas.DataFrame, columns `COLUMNS`).

    aggregates: experiment name -> aggregate Dataset; claims_of: experiment name -> the claims its
    analyses test (`claims_tested`)."""
    import pandas as pd

    settings = analysis_settings(analysis_cfg)
    rows: List[Dict[str, Any]] = []
    for k in sorted(CLAIMS):
        tested = [name for name in aggregates if k in set(claims_of.get(name, ()))]
        for name in tested:
            ds = stats.complete_axes(aggregates[name])
            new = TESTS[k](name, ds, settings)
            n_div = int((stats.run_status(ds) == stats.STATUS_DIVERGED).sum())
            if n_div:  # say so in every row of the experiment: the fits and ratios left them out
                note = f"{n_div} of {stats.run_status(ds).size} run(s) diverged (excluded)"
                for r in new:
                    r["reason"] = f"{r['reason']}; {note}" if r["reason"] else note
            rows.extend(new)
        if not tested:
            rows.append(_row(k, "", "-", reason=_untested(k)))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.insert(1, "statement", df["claim"].map(CLAIMS))
    return df


def claims_tested(analyses: Sequence[str]) -> List[int]:
    """The claims tested by an experiment that lists `analyses` (from the registry)."""
    return sorted({c for a in analyses for c in get_analysis(a).claims})


def analyses_testing(claim: int) -> List[str]:
    """The analyses whose experiments test `claim`, in the registry's order (`Analysis.claims`: the
    one place that links an analysis to the claims it tests)."""
    return [a.name for a in all_analyses() if claim in a.claims]


def _untested(claim: int) -> str:
    """Why a claim has no row of its own: no experiment lists an analysis that tests it (the first
    such analysis of the registry is named)."""
    names = analyses_testing(claim)
    if not names:
        return "no analysis of the registry tests it"
    return f"no experiment lists the analysis '{names[0]}', which tests it"
