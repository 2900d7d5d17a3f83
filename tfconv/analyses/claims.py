"""The claims table: each of the paper's five claims (science.md section 3) tested against the aggregates.

`evaluate_claims(aggregates, analysis_cfg)` returns one row per (claim, part, experiment that can
test it) with the columns claim, experiment, measured_quantity, value, ci_low, ci_high, threshold,
verdict ("holds" / "does not hold" / "not measured") and note.  A claim that no experiment can test
gets one "not measured" row saying what it needs.  Thresholds come from the config's ``analysis``
section (schema defaults fill the gaps); they are fixed before results are looked at.

Definitions (docs/analyses.md repeats them):

1. Over-parameterisation.  Experiments with n_samples and width axes.  Group: scaling inv_sqrt and
   init lecun (else he, else the first).  width* per n_samples by
   `tfconv.analysis.smallest_sufficient_width` (``loss_target``, ``success_fraction``); value: the
   log-log slope of width* on n_samples with its t interval (``confidence``).  Holds when
   ci_low <= 2: the data do not require more than quadratic width.  Needs >= 3 n_samples values
   with a sufficient width; censored n_samples (no sufficient width on the ladder) are counted in
   the note, since they bias the slope down.
2. Linear convergence.  Every experiment with LeCun or He runs under scaling inv_sqrt.  A run is
   linear when its fit of log(loss) on epoch over ``rate_window`` (`tfconv.analysis.linear_rate`)
   has R^2 >= ``linear_fit_r2`` and a positive rate.  Value: the fraction of non-diverged,
   non-missing such runs that are linear, with a Clopper-Pearson interval.  Holds when the
   fraction >= ``success_fraction``.
3. LeCun/He faster than NTK.  Experiments with init ntk and lecun and/or he; scaling inv_sqrt
   (else the first); largest n_samples.  Value: the geometric-mean ratio rate(A)/rate(ntk) of the
   fitted linear rates over seeds (paired by seed) at the largest width with >= 2 pairs of
   non-diverged runs (else the largest with one pair), with a t interval of the mean log ratio.  Holds when the ratio >
   ``faster_ratio`` and ci_low > 1; not measured with fewer than 2 seed pairs.
4. inv_sqrt faster than inv at large width.  Experiments with both scalings; init lecun (else he,
   else the first).  The same ratio rate(inv_sqrt)/rate(inv) and rule as claim 3.
5. Under tau0 = d_m^-1 attention tends to uniform and the NTK is stable.  Experiments with scaling
   inv and >= 2 widths; init lecun (else the first).  Two rows, the claim holds when both hold:
   (a) the width slope of the mean attention deviation at epoch 0 lies in ``deviation_slope_inv``
   (theory -0.5); (b) the width slope of the final NTK change |K_E - K_0|_F / |K_0|_F (last
   checkpoint epoch, > 0) is negative with ci_high < 0.
Every fit leaves out diverged and missing runs.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from . import stats as A
from ..config.loader import analysis_settings

CLAIMS = {
    1: "1: width of order N^2 suffices for global convergence (LeCun/He, tau0 = d_m^-1/2)",
    2: "2: the training loss converges linearly",
    3: "3: LeCun/He initialisation converges faster than NTK initialisation",
    4: "4: tau0 = d_m^-1/2 converges faster than tau0 = d_m^-1 at large width",
    5: "5: under tau0 = d_m^-1 attention tends to uniform and the NTK is stable",
}
COLUMNS = ["claim", "experiment", "measured_quantity", "value", "ci_low", "ci_high", "threshold", "verdict", "note"]
HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"


def _row(claim: int, experiment: Optional[str], quantity: str, value=np.nan, ci_low=np.nan, ci_high=np.nan,
         threshold: str = "", verdict: str = NOT_MEASURED, note: str = "") -> Dict[str, Any]:
    return dict(claim=CLAIMS[claim], experiment=experiment or "", measured_quantity=quantity, value=float(value),
                ci_low=float(ci_low), ci_high=float(ci_high), threshold=threshold, verdict=verdict, note=note)


def _largest_n(ds):
    if "n_samples" in ds.dims:
        return ds.sel(n_samples=max(A.axis_values(ds, "n_samples")))
    return ds


def _ratio_row(claim: int, name: str, ds, axis: str, a, b, cfg, fixed: str) -> Dict[str, Any]:
    """rate(axis=a) / rate(axis=b) paired by seed at the largest width with >= 2 valid pairs (else 1)."""
    rate, _ = A.rates(ds, cfg)
    thr = f"ratio > {cfg['faster_ratio']:g} and ci_low > 1"
    quantity = f"rate ratio {a}/{b} ({fixed})"
    widths = sorted(A.axis_values(ds, "width"), reverse=True)
    wmax = widths[0]
    found = {}
    for w in widths:
        ra = np.asarray(rate.sel({axis: a, "width": w}).values, dtype=float).ravel()
        rb = np.asarray(rate.sel({axis: b, "width": w}).values, dtype=float).ravel()
        res = A.paired_ratio(ra, rb, cfg["confidence"])
        if res["n"] >= 2:
            found = dict(w=w, res=res)
            break
        if res["n"] == 1 and not found:
            found = dict(w=w, res=res)
    if not found:
        return _row(claim, name, quantity, threshold=thr,
                    note="no width has non-diverged runs of both with a positive fitted rate")
    w, res = found["w"], found["res"]
    st = np.asarray(ds["status"].sel(width=wmax).values).astype(str)
    ndiv = int((st == A.STATUS_DIVERGED).sum())
    note = f"width {w}, {res['n']} seed pair(s)"
    if w != wmax:
        note += f" (largest width {wmax} has fewer than 2 valid pairs"
        note += f"; {ndiv} run(s) diverged there)" if ndiv else ")"
    if not np.isfinite(res["ci_low"]):
        return _row(claim, name, quantity, res["ratio"], threshold=thr, verdict=NOT_MEASURED,
                    note=note + "; an interval needs >= 2 seed pairs")
    ok = res["ratio"] > cfg["faster_ratio"] and res["ci_low"] > 1.0
    return _row(claim, name, quantity, res["ratio"], res["ci_low"], res["ci_high"], thr, HOLDS if ok else FAILS, note)


def _claim1(name, ds, cfg) -> Optional[Dict[str, Any]]:
    if not ({"n_samples", "width"} <= set(ds.dims)):
        return None
    sc = A.preferred(A.axis_values(ds, "scaling"), "inv_sqrt")
    ini = A.preferred(A.axis_values(ds, "init"), "lecun", "he")
    sub = ds.sel(scaling=[sc], init=[ini])
    table = A.smallest_sufficient_width(sub, cfg["loss_target"], cfg["success_fraction"])
    fit = A.overparam_exponent(table, cfg["confidence"])
    thr = "ci_low <= 2 (width ~ N^2 suffices)"
    quantity = f"exponent of smallest sufficient width in n_samples ({ini}/{sc})"
    note = (f"{fit['n']} n_samples with a sufficient width, {fit['n_censored']} censored; "
            f"loss_E/loss_0 <= {cfg['loss_target']:g} in >= {cfg['success_fraction']:g} of seeds")
    if not np.isfinite(fit["slope"]):
        return _row(1, name, quantity, threshold=thr, note=note + "; needs >= 3")
    note += f"; cubic (3) {'inside' if fit['within_ci_3'] else 'outside'} the interval"
    verdict = HOLDS if fit["ci_low"] <= 2.0 else FAILS
    return _row(1, name, quantity, fit["slope"], fit["ci_low"], fit["ci_high"], thr, verdict, note)


def _claim2(name, ds, cfg) -> Optional[Dict[str, Any]]:
    inits = [i for i in ("lecun", "he") if i in A.axis_values(ds, "init")]
    if not inits or "inv_sqrt" not in A.axis_values(ds, "scaling"):
        return None
    sub = ds.sel(init=inits, scaling=["inv_sqrt"])
    rate, r2 = A.rates(sub, cfg)
    st = np.asarray(sub["status"].transpose(*rate.dims).values).astype(str).ravel()
    rv, r2v = rate.values.ravel(), r2.values.ravel()
    use = (st == A.STATUS_COMPLETE) & np.isfinite(r2v)
    k = int((use & (r2v >= cfg["linear_fit_r2"]) & (rv > 0)).sum())
    n = int(use.sum())
    thr = f"fraction >= {cfg['success_fraction']:g} of runs with R^2 >= {cfg['linear_fit_r2']:g}"
    quantity = f"fraction of {'/'.join(inits)} inv_sqrt runs with linear log-loss"
    ndiv = int((st == A.STATUS_DIVERGED).sum())
    note = f"{k} of {n} runs; {ndiv} diverged run(s) left out; window {list(cfg['rate_window'])}"
    if n == 0:
        return _row(2, name, quantity, threshold=thr, note=note)
    lo, hi = A.proportion_interval(k, n, cfg["confidence"])
    frac = k / n
    return _row(2, name, quantity, frac, lo, hi, thr, HOLDS if frac >= cfg["success_fraction"] else FAILS, note)


def _claim3(name, ds, cfg) -> List[Dict[str, Any]]:
    inits = A.axis_values(ds, "init")
    if "ntk" not in inits or not ({"lecun", "he"} & set(inits)):
        return []
    sc = A.preferred(A.axis_values(ds, "scaling"), "inv_sqrt")
    sub = _largest_n(ds).sel(scaling=sc)
    return [_ratio_row(3, name, sub, "init", a, "ntk", cfg, f"scaling {sc}") for a in ("lecun", "he") if a in inits]


def _claim4(name, ds, cfg) -> List[Dict[str, Any]]:
    if not ({"inv_sqrt", "inv"} <= set(A.axis_values(ds, "scaling"))):
        return []
    ini = A.preferred(A.axis_values(ds, "init"), "lecun", "he")
    sub = _largest_n(ds).sel(init=ini)
    return [_ratio_row(4, name, sub, "scaling", "inv_sqrt", "inv", cfg, f"init {ini}")]


def _slope_over_width(sub, da, confidence):
    st = np.asarray(sub["status"].transpose("width", "seed").values).astype(str).ravel()
    y = np.asarray(da.transpose("width", "seed").values, dtype=float).ravel()
    x = np.repeat(np.asarray(sub["width"].values, dtype=float), sub.sizes["seed"])
    ok = st == A.STATUS_COMPLETE
    return A.fit_loglog(x[ok], y[ok], confidence)


def _claim5(name, ds, cfg) -> List[Dict[str, Any]]:
    if "inv" not in A.axis_values(ds, "scaling") or len(A.axis_values(ds, "width")) < 2:
        return []
    ini = A.preferred(A.axis_values(ds, "init"), "lecun")
    sub = _largest_n(ds).sel(scaling="inv", init=ini)
    lo, hi = cfg["deviation_slope_inv"]
    rows = []
    f = _slope_over_width(sub, sub["attention_deviation_mean"].isel(epoch=0, drop=True), cfg["confidence"])
    q = f"(a) width slope of attention deviation at init (inv, {ini}; theory -0.5)"
    thr = f"slope in [{lo:g}, {hi:g}]"
    if np.isfinite(f["slope"]):
        rows.append(_row(5, name, q, f["slope"], f["ci_low"], f["ci_high"], thr,
                         HOLDS if lo <= f["slope"] <= hi else FAILS, f"{f['n']} runs; R^2 {f['r2']:.3g}"))
    else:
        rows.append(_row(5, name, q, threshold=thr, note="needs >= 3 non-diverged runs over >= 2 widths"))
    q = f"(b) width slope of final NTK change (inv, {ini})"
    thr = "slope < 0 with ci_high < 0"
    ck = [int(e) for e in sub["checkpoint_epoch"].values] if "checkpoint_epoch" in sub.dims else []
    if not ck or max(ck) == 0:
        rows.append(_row(5, name, q, threshold=thr, note="needs Gram matrices at a checkpoint epoch after 0"))
        return rows
    f = _slope_over_width(sub, A.final_value(sub, "kernel_change", "checkpoint_epoch"), cfg["confidence"])
    if np.isfinite(f["slope"]):
        rows.append(_row(5, name, q, f["slope"], f["ci_low"], f["ci_high"], thr,
                         HOLDS if f["ci_high"] < 0 else FAILS, f"checkpoint epoch {max(ck)}; {f['n']} runs"))
    else:
        rows.append(_row(5, name, q, threshold=thr, note="needs >= 3 non-diverged runs with a finite NTK change"))
    return rows


NEEDS = {
    1: "an experiment with n_samples (>= 3 values) and width axes",
    2: "an experiment with LeCun or He runs under scaling inv_sqrt",
    3: "an experiment with init ntk and lecun or he",
    4: "an experiment with scalings inv_sqrt and inv",
    5: "an experiment with scaling inv and >= 2 widths",
}


def evaluate_claims(aggregates: Mapping[str, Any], analysis_cfg: Optional[Mapping[str, Any]] = None):
    """The claims table (pandas.DataFrame, columns `COLUMNS`) from experiment name -> aggregate Dataset."""
    import pandas as pd

    cfg = analysis_settings(analysis_cfg)
    per_claim: Dict[int, List[Dict[str, Any]]] = {k: [] for k in CLAIMS}
    for name, ds in aggregates.items():
        ds = A.complete_axes(ds)
        for k, fn in ((1, _claim1), (2, _claim2), (3, _claim3), (4, _claim4), (5, _claim5)):
            out = fn(name, ds, cfg)
            if out is None:
                continue
            per_claim[k].extend(out if isinstance(out, list) else [out])
    rows = []
    for k in CLAIMS:
        rows.extend(per_claim[k] or [_row(k, "", "-", note=f"needs {NEEDS[k]}")])
    return pd.DataFrame(rows, columns=COLUMNS)
