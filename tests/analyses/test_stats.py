"""Tests of tfconv.analyses (stats, claims): analytic cases and tiny real aggregates
(`tests/aggregates.py`, shared with tests/analyses/test_figures.py)."""
from __future__ import annotations

import numpy as np
import pytest

from aggregates import _exp, tiny_aggregates  # noqa: E402 (tests/ is on sys.path)
from tfconv.analyses import stats
from tfconv.analyses.claims import COLUMNS, evaluate_claims
from tfconv.store.aggregate import build_aggregate

TOL = 1e-6  # predicted vs linearised-dynamics rate


# ---------------------------------------------------------------------------------------------
# Analytic cases
# ---------------------------------------------------------------------------------------------

def test_fit_loglog_recovers_power_law_within_ci():
    rng = np.random.default_rng(0)
    x = np.repeat([8, 16, 32, 64, 128, 256], 5).astype(float)
    y = 3.0 * x ** -0.5 * np.exp(0.05 * rng.standard_normal(x.size))
    fit = stats.fit_loglog(x, y, confidence=0.95)
    assert fit["n"] == x.size
    assert fit["ci_low"] < -0.5 < fit["ci_high"]
    assert abs(fit["slope"] + 0.5) < 0.05 and fit["r2"] > 0.95
    assert abs(np.exp(fit["intercept"]) - 3.0) < 0.3
    # exact power law: zero-width interval, R^2 = 1
    exact = stats.fit_loglog([1, 2, 4, 8], [5, 20, 80, 320])
    assert exact["slope"] == pytest.approx(2.0) and exact["r2"] == pytest.approx(1.0)
    assert exact["ci_high"] - exact["ci_low"] < 1e-9
    # non-positive / non-finite points are dropped; fewer than 3 left -> NaN
    dropped = stats.fit_loglog([1, 2, 4, 8, 16], [1, -1, np.nan, 0, 5])
    assert dropped["n"] == 2 and np.isnan(dropped["slope"]) and np.isnan(dropped["ci_low"])


def test_linearised_modes_give_the_curve_the_dynamics_follow():
    """The linearised loss from K_0's modes (any epoch) equals iterating r <- (I - eta K/N) r; its epochs to a
    level, its slowest-mode rate and the range rate of the predicted curve agree with the iteration."""
    from tfconv.core.linearised import epochs_to_level, mode_loss, mode_projection, slowest_mode_rate

    rng = np.random.default_rng(5)
    N = 10
    Q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    lam = np.linspace(0.5, 6.0, N)
    K = Q @ np.diag(lam) @ Q.T
    eta = 0.5 * 2 * N / lam.max()
    r = rng.standard_normal(N)
    p = mode_projection(Q, r)
    losses = []
    for _ in range(400):
        losses.append(0.5 / N * r @ r)
        r = r - eta / N * K @ r
    losses = np.asarray(losses)
    np.testing.assert_allclose(mode_loss(lam, p, eta, N, "mean", np.arange(400)), losses, rtol=1e-9)
    t = epochs_to_level(lam, p, eta, N, "mean", 1e-3)
    assert losses[int(t)] <= 1e-3 * losses[0] < losses[int(t) - 1]
    assert slowest_mode_rate(lam, p, eta, N, "mean") == pytest.approx(stats.predicted_rate(lam.min(), eta, N, "mean"))
    pred = stats.predicted_range_rate(lam, p, eta, N, "mean")
    meas = stats.range_rate(losses)
    assert meas["kind"] == "floor" and pred["rate"] == pytest.approx(meas["rate"], rel=1e-6)


@pytest.mark.parametrize("loss", ["mean", "sum"])
def test_predicted_rate_matches_linearised_dynamics(loss):
    """Iterate r <- (I - eta K / N) r (mean) or (I - eta K) r (sum) and compare the late-epoch rate."""
    rng = np.random.default_rng(3)
    N = 8
    Q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    lam = np.linspace(0.5, 4.0, N)
    K = Q @ np.diag(lam) @ Q.T
    eta = 1.0 if loss == "mean" else 1.0 / N
    per = eta / N if loss == "mean" else eta
    f, y = rng.standard_normal(N), rng.standard_normal(N)
    losses = []
    # 200 epochs: the second mode is down by (rho_2/rho_1)^400 ~ 1e-12 while f - y stays far above
    # float64 cancellation (f and y are O(1))
    for _ in range(200):
        res = f - y
        losses.append((0.5 / N if loss == "mean" else 0.5) * res @ res)
        f = f - per * K @ res
    measured = -np.log(losses[-1] / losses[-2])
    predicted = stats.predicted_rate(lam.min(), eta, N, loss)
    assert abs(measured - predicted) < TOL
    # vectorised form and the undefined region
    both = stats.predicted_rate(np.array([lam.min(), 10.0 * N / eta]), eta, N, loss)
    assert both[0] == pytest.approx(predicted) and np.isnan(both[1])


@pytest.mark.parametrize("loss", ["mean", "sum"])
def test_stable_step_size_separates_convergence_from_divergence(loss):
    rng = np.random.default_rng(4)
    N = 6
    B = rng.standard_normal((N, N))
    K = B @ B.T + 0.1 * np.eye(N)
    lmax = np.linalg.eigvalsh(K)[-1]
    eta_star = stats.stable_step_size(lmax, N, loss)
    assert eta_star == pytest.approx(2 * N / lmax if loss == "mean" else 2 / lmax)
    for factor, converges in ((0.95, True), (1.05, False)):
        eta = factor * eta_star
        per = eta / N if loss == "mean" else eta
        r = rng.standard_normal(N)
        for _ in range(3000):
            r = r - per * K @ r
        assert (np.linalg.norm(r) < 1e-3) == converges
    assert np.isnan(stats.stable_step_size(0.0, N, loss))


def test_mean_band_ignores_nan():
    v = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, np.nan]])
    mean, lo, hi = stats.mean_band(v, axis=0)
    assert mean[0] == 2.0 and lo[0] == 1.0 and hi[0] == 3.0
    assert mean[1] == 2.0 and np.isnan(mean[2]) and np.isnan(lo[2]) and np.isnan(hi[2])


def test_paired_ratio_and_proportion_interval():
    r = stats.paired_ratio([2.0, 4.0, 8.0], [1.0, 2.0, 4.0])
    assert r["ratio"] == pytest.approx(2.0) and r["n"] == 3
    assert r["ci_low"] == pytest.approx(2.0) and r["ci_high"] == pytest.approx(2.0)
    one = stats.paired_ratio([2.0, np.nan], [1.0, 1.0])
    assert one["n"] == 1 and np.isnan(one["ci_low"])
    lo, hi = stats.proportion_interval(10, 10)
    assert hi == 1.0 and 0.6 < lo < 0.8
    assert np.isnan(stats.proportion_interval(0, 0)[0])


def _crafted_overparam(success_fraction_case=False):
    """width* = N^2 exactly: a run reaches loss 1e-4 (from 1) iff width >= N^2 (seed 1 fails at N=8, width 64)."""
    ns, widths = [2, 4, 8, 16, 64], [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    exp = _exp({"n_samples": ns, "width": widths, "scaling": ["inv_sqrt"], "init": ["lecun"], "seed": [0, 1]},
               epochs=4, checkpoints=(0,))
    runs = {}
    for p in exp.points:
        ok = p["width"] >= p["n_samples"] ** 2
        if p["n_samples"] == 8 and p["width"] == 64 and p["seed"] == 1:
            ok = False
        final = 1e-4 if ok else 0.5
        runs[p.run_id] = {"status": "complete", "curves": {"loss": np.geomspace(1.0, final, 5)}}
    return build_aggregate(exp, runs, {}, {})


def test_smallest_sufficient_width_and_exponent():
    ds = _crafted_overparam()
    t = stats.smallest_sufficient_width(ds, "loss", loss_target=1e-3, success_fraction=0.9)
    got = dict(zip(t["n_samples"], t["width_star"]))
    assert got[2] == 4 and got[4] == 16 and got[16] == 256
    assert got[8] == 128  # at width 64 only 1 of 2 seeds succeeds: 0.5 < 0.9
    assert np.isnan(got[64]) and bool(t.set_index("n_samples").loc[64, "censored"])  # 4096 > ladder
    t_half = stats.smallest_sufficient_width(ds, "loss", loss_target=1e-3, success_fraction=0.5)
    assert dict(zip(t_half["n_samples"], t_half["width_star"]))[8] == 64
    fit = stats.overparam_exponent(t_half)
    assert fit["slope"] == pytest.approx(2.0) and fit["n"] == 4 and fit["n_censored"] == 1
    assert fit["decades"] == pytest.approx(np.log10(16 / 2))


def test_analysis_settings_fill_schema_defaults():
    from tfconv.analyses import analysis_settings
    from tfconv.config import load_schema

    props = load_schema()["properties"]["analysis"]["properties"]
    defaults = {k: v["default"] for k, v in props.items()}
    assert analysis_settings() == defaults and defaults["min_effect"] == pytest.approx(0.1)
    assert analysis_settings({"min_effect": 0.5})["min_effect"] == 0.5


# ---------------------------------------------------------------------------------------------
# Real tiny aggregates
# ---------------------------------------------------------------------------------------------

def test_run_table_on_real_runs():
    clean, broken, _ = tiny_aggregates()
    t = stats.run_table(broken)
    assert len(t) == 24
    div = t[t["status"] == "diverged"]
    assert len(div) == 1 and np.isnan(div["rate"].iloc[0])
    miss = t[t["status"] == "missing"]
    assert len(miss) == 1 and np.isnan(miss["loss0"].iloc[0])
    ok = t[t["status"] == "complete"]
    # every complete run has a rate kind; runs that entered the range have a positive rate
    # 30 epochs at step 1.0: most runs do not reach 1e-2 L_0 (short, no rate), those that did have one
    entered = ok[ok["rate_kind"].isin(["measured", "floor"])]
    assert set(ok["rate_kind"]) <= {"measured", "floor", "short"} and len(entered) and entered["rate"].notna().all()
    assert ok[ok["rate_kind"] == "short"]["rate"].isna().all()
    assert (ok["lambda_min0"] > 0).all() and (ok["rate_predicted"] > 0).any() and ok["linearisation_gap"].notna().all()
    # LeCun (tau1 = 1) has a larger NTK than NTK init at every width, hence a faster rate here
    tc = stats.run_table(clean).set_index(["width", "scaling", "init", "seed"])
    for w in (8, 16, 32):
        assert tc.loc[(w, "inv_sqrt", "lecun", 0), "lambda_max0"] > tc.loc[(w, "inv_sqrt", "ntk", 0), "lambda_max0"]


def test_attention_deviation_slope_depends_on_scaling():
    clean, _, _ = tiny_aggregates()
    ds = stats.complete_axes(clean)
    slopes = {}
    for sc in ("inv_sqrt", "inv"):
        d = ds["attention_deviation_mean"].isel(epoch=0).sel(scaling=sc, init="lecun")
        x = np.repeat(d["width"].values, d.sizes["seed"])
        slopes[sc] = stats.fit_loglog(x, d.transpose("width", "seed").values)["slope"]
    assert slopes["inv"] < slopes["inv_sqrt"] - 0.25  # theory: -0.5 vs 0


def test_claims_table_on_real_aggregates():
    from tfconv.analyses.claims import CLAIMS

    clean, broken, by_n = tiny_aggregates()
    claims_of = {"tiny": [2, 3, 4, 5], "tiny_broken": [2, 3], "tiny_by_n": [1]}
    df = evaluate_claims({"tiny": clean, "tiny_broken": broken, "tiny_by_n": by_n}, claims_of, {"min_n_decades": 0.3})
    assert list(df.columns) == ["claim", "statement"] + COLUMNS[1:]
    assert set(df["verdict"]) <= {"consistent", "refuted", "no material difference", "not measurable"}
    assert set(df["claim"]) == set(CLAIMS)
    assert set(df[df["claim"] == 1]["experiment"]) == {"tiny_by_n"}  # only where the analysis asks for it
    assert set(df[df["claim"] == 4]["experiment"]) == {"tiny"}
    c3 = df[(df["claim"] == 3) & (df["experiment"] == "tiny")].iloc[0]
    # LeCun's NTK is larger than NTK init's at this fixed step: LeCun enters the rate range, NTK does not
    assert c3["verdict"] == "consistent" and "2 decided by one run entering the range" in c3["power"]
    assert (df["reason"].str.len() > 0).all()


def test_claims_not_measurable_without_experiments():
    df = evaluate_claims({}, {})
    assert len(df) == 5 and (df["verdict"] == "not measurable").all()
    assert df["reason"].str.startswith("no experiment lists an analysis that tests it").all()


def test_bound_holds_ignores_the_records_after_a_stop_at_the_float_floor_but_not_a_divergence():
    bound = 0.9 ** np.arange(11)
    stopped = np.r_[0.5 * bound[:6], [np.nan] * 5]  # stopped at the floor after epoch 5: NaN records
    assert stats.bound_holds(stopped, bound) == (True, -1)
    assert stats.bound_holds(stopped, bound, diverged=True) == (False, 6)
    above = np.r_[0.5 * bound[:4], 2.0 * bound[4:]]
    assert stats.bound_holds(above, bound) == (False, 4)
