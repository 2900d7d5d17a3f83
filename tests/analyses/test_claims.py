"""Every claim test can fail: each is fed a constructed aggregate where the claim is false (the verdict
must say "refuted"), one where it is true ("consistent"), and where it applies one it cannot decide
("not measurable", with the reason).

The aggregates are built by `tfconv.store.aggregate.build_aggregate` from curves written here in
closed form (geometric losses with chosen rates, kernel changes with chosen width dependence), so
the expected verdict follows from the construction, not from the code under test.
"""
from __future__ import annotations

import numpy as np
import pytest

from tfconv.analyses import claims as C
from tfconv.config import DatasetSpec, Experiment, analysis_settings
from tfconv.core.status import STATUS_DIVERGED
from tfconv.store.aggregate import build_aggregate

EPOCHS = 100
N = 20


def aggregate(grid, loss=None, kernel_change=None, linearised=None, kernel=None, attention=None, status=None,
              n=N, epochs=EPOCHS, checkpoints=(0, 50, 100), name="exp"):
    """An aggregate of the grid with curves from closed-form functions of the grid point (and seed)."""
    exp = Experiment.from_section(name, {
        "grid": grid,
        "train": {"step_size": "0.5limit", "epochs": epochs, "loss": "mean", "checkpoint_epochs": list(checkpoints),
                  "dtype": "float32", "hidden": True, "divergence_factor": 1e6}},
        DatasetSpec("d", "synthetic", {"n_samples": n}))
    t = np.arange(epochs + 1, dtype=float)
    runs = {}
    for p in exp.points:
        d = p.as_dict()
        curve = loss(d, t) if loss else np.exp(-0.1 * t)
        runs[p.run_id] = {
            "status": status(d) if status else "complete", "diverged_epoch": -1,
            "curves": {"loss": curve, "loss_linearised": linearised(d, t) if linearised else curve,
                       "weight_change": 0.1 * np.ones_like(t),
                       "attention_deviation_mean": attention(d, t) if attention else 0.01 * np.ones_like(t),
                       "attention_deviation_max": 0.02 * np.ones_like(t)},
            "checkpoint_curves": {"kernel_change": np.asarray([0.0] + [kernel_change(d) if kernel_change else 0.01]
                                                              * (len(checkpoints) - 1))},
            "kernel": kernel(d) if kernel else {"lambda_min0": 1.0, "lambda_max0": 100.0, "eta": 0.2,
                                                "step_limit": 0.4},
        }
    return build_aggregate(exp, runs, {}, {"n_samples": n, "kind": "synthetic"}, {})


def settings(**kw):
    return analysis_settings(kw)


def verdicts(rows, prefix=""):
    return [r["verdict"] for r in rows if r["test"].startswith(prefix)]


def seeded(seed, spread=0.05):
    """A deterministic per-seed factor around 1 (seed-to-seed variation of a rate)."""
    return 1.0 + spread * np.sin(1.0 + 2.0 * seed)


# ---------------------------------------------------------------------------------------------
# claim 1
# ---------------------------------------------------------------------------------------------

NS = [4, 16, 64, 256]
WIDTHS = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]


def _overparam(exponent, converge_at_n2=True, lin_reaches=True):
    """width* (kernel-stable, and loss-converged) = 2 N^exponent; runs at width >= N^2 converge unless not."""
    def stable(d):
        return d["width"] >= 2 * d["n_samples"] ** exponent

    def loss(d, t):
        ok = stable(d) or (converge_at_n2 and d["width"] >= d["n_samples"] ** 2)
        return np.exp(-0.2 * t) if ok else 0.5 + 0.5 * np.exp(-0.2 * t)

    return aggregate({"n_samples": NS, "width": WIDTHS, "scaling": ["inv_sqrt"], "init": ["lecun"], "seed": [0, 1, 2]},
                     loss=loss, kernel_change=lambda d: 0.1 if stable(d) else 3.0,
                     linearised=lambda d, t: np.exp(-(0.2 if lin_reaches else 0.01) * t), n=max(NS))


def test_claim1_consistent_when_the_required_width_grows_like_n():
    rows = C.claim1("e", _overparam(1.0), settings())
    assert verdicts(rows, "(a)") == ["consistent"]
    b = [r for r in rows if r["test"].startswith("(b)")][0]
    assert b["verdict"] == "consistent" and b["value"] == pytest.approx(1.0, abs=0.15) and b["ci_high"] < 2


def test_claim1_refuted_when_the_required_width_grows_like_n_cubed():
    ds = aggregate({"n_samples": [2, 4, 8, 16], "width": [2 ** k for k in range(2, 14)], "scaling": ["inv_sqrt"],
                    "init": ["lecun"], "seed": [0, 1, 2]},
                   kernel_change=lambda d: 0.1 if d["width"] >= 2 * d["n_samples"] ** 3 else 3.0, n=16)
    rows = C.claim1("e", ds, settings(min_n_decades=0.5))
    b = [r for r in rows if r["test"].startswith("(b)")][0]
    assert b["verdict"] == "refuted" and b["ci_low"] > 2, b


def test_claim1_direct_sufficiency_refuted_by_one_seed_that_fails_at_n_squared():
    rows = C.claim1("e", _overparam(2.5, converge_at_n2=False), settings())
    a = [r for r in rows if r["test"].startswith("(a)")][0]
    assert a["verdict"] == "refuted" and "fail" in a["reason"] and a["value"] < 1


def test_claim1_not_measurable_when_the_budget_is_too_short_or_n_spans_too_little():
    rows = C.claim1("e", _overparam(1.0, lin_reaches=False), settings())
    a = [r for r in rows if r["test"].startswith("(a)")][0]
    assert a["verdict"] == "not measurable" and "raise train.epochs" in a["reason"]
    rows = C.claim1("e", _overparam(1.0), settings(min_n_decades=3.0))
    b = [r for r in rows if r["test"].startswith("(b)")][0]
    assert b["verdict"] == "not measurable" and "decades" in b["reason"]


# ---------------------------------------------------------------------------------------------
# claim 2
# ---------------------------------------------------------------------------------------------

def _claim2(loss, kc=0.01):
    # eta lambda_min / N = 0.2 * 1 / 20 = 0.01 -> bound factor per epoch (1 - c 0.01)^2
    return aggregate({"width": [64, 256], "scaling": ["inv_sqrt"], "init": ["lecun"], "seed": [0, 1, 2]},
                     loss=loss, kernel_change=lambda d: kc)


def test_claim2_consistent_when_the_loss_follows_the_kernel_rate():
    ds = _claim2(lambda d, t: (1 - 0.01) ** (2 * t))  # the slowest mode of the linearised dynamics
    rows = C.claim2("e", ds, settings(bound_constant=0.5))
    assert verdicts(rows) == ["consistent", "consistent"]


def test_claim2_refuted_when_the_loss_decays_slower_than_the_bound():
    ds = _claim2(lambda d, t: (1 - 0.001) ** (2 * t))  # 10x slower than the lambda_min rate
    rows = C.claim2("e", ds, settings(bound_constant=0.5))
    assert verdicts(rows, "(a)") == ["refuted"] and "violate" in rows[0]["reason"]


def test_claim2_rate_refuted_when_the_late_loss_grows():
    ds = _claim2(lambda d, t: np.where(t < 50, np.exp(-0.05 * t), np.exp(-2.5 + 0.01 * (t - 50))))
    rows = C.claim2("e", ds, settings())
    assert verdicts(rows, "(b)") == ["refuted"]


def test_claim2_not_measurable_when_no_width_is_in_the_kernel_regime():
    ds = _claim2(lambda d, t: (1 - 0.01) ** (2 * t), kc=3.0)
    rows = C.claim2("e", ds, settings())
    assert verdicts(rows) == ["not measurable", "not measurable"] and "too narrow" in rows[0]["reason"]


# ---------------------------------------------------------------------------------------------
# claims 3 and 4: a paired rate ratio
# ---------------------------------------------------------------------------------------------

def _rates(axis, rate_of):
    grid = {"width": [64, 256], "scaling": ["inv_sqrt"], "init": ["lecun", "ntk"], "seed": [0, 1, 2, 3]}
    if axis == "scaling":
        grid.update(scaling=["inv_sqrt", "inv"], init=["lecun"])
    return aggregate(grid, loss=lambda d, t: np.exp(-rate_of(d[axis]) * seeded(d["seed"]) * t))


@pytest.mark.parametrize("fast, slow, want", [(0.1, 0.01, "consistent"), (0.01, 0.1, "refuted"), (0.05, 0.05, "not measurable")])
def test_claim3_lecun_against_ntk(fast, slow, want):
    ds = _rates("init", lambda i: {"lecun": fast, "ntk": slow}[i])
    rows = C.claim3("e", ds, settings())
    assert len(rows) == 1 and rows[0]["verdict"] == want, rows[0]
    assert rows[0]["value"] == pytest.approx(fast / slow, rel=0.02)


@pytest.mark.parametrize("fast, slow, want", [(0.1, 0.01, "consistent"), (0.01, 0.1, "refuted")])
def test_claim4_inv_sqrt_against_inv(fast, slow, want):
    ds = _rates("scaling", lambda s: {"inv_sqrt": fast, "inv": slow}[s])
    rows = C.claim4("e", ds, settings())
    assert [r["verdict"] for r in rows] == [want, want]  # measured and linearised (the same curves here)


def test_claim4_counts_kernel_only_widths_in_the_prediction():
    ds = aggregate({"width": [64, 4096], "scaling": ["inv_sqrt", "inv"], "init": ["lecun"], "seed": [0, 1, 2]},
                   loss=lambda d, t: np.exp(-0.05 * t) if d["width"] < 4096 else np.full_like(t, np.nan),
                   linearised=lambda d, t: np.exp(-{"inv_sqrt": 0.2, "inv": 0.02}[d["scaling"]] * seeded(d["seed"]) * t),
                   status=lambda d: "complete" if d["width"] < 4096 else "kernel_only")
    rows = C.claim4("e", ds, settings())
    b = [r for r in rows if r["test"].startswith("(b)")][0]
    assert "width 4096" in b["test"] and b["verdict"] == "consistent" and b["value"] == pytest.approx(10, rel=0.02)


def _one_pair_at_the_widest(axis, slow):
    """Rates as in `_rates`, but at the widest width (256) only seed 0 of the slower group completes:
    one seed pair there, four at width 64."""
    ds = _rates(axis, lambda v: 0.01 if v == slow else 0.1)
    st = ds["status"].copy()
    st.loc[{"width": 256, axis: slow, "seed": [1, 2, 3]}] = STATUS_DIVERGED
    return ds.assign(status=st)


@pytest.mark.parametrize("axis, slow, analysis, quoted", [
    ("init", "ntk", "init_comparison", "rate ratio at width 64 lecun/ntk {ratio} [{lo}, {hi}]"),
    ("scaling", "inv", "scaling_comparison", "measured ratio inv_sqrt/inv {ratio} [{lo}, {hi}] at width 64"),
])
def test_figure_and_claim_quote_one_ratio_at_one_width(axis, slow, analysis, quoted):
    """The paired ratio at the largest width (`stats.ratio_at_largest_width`): the widest width with
    two seed pairs or more, so the claims table and the figure's finding quote the same width and
    number, also when the widest trained width has a single pair."""
    from tfconv.analyses import figure, stats
    from tfconv.analyses.draw import fmt

    ds = _one_pair_at_the_widest(axis, slow)
    fast = "lecun" if axis == "init" else "inv_sqrt"
    rate = stats.rates(stats.complete_axes(ds), settings())["rate"]
    w, res = stats.ratio_at_largest_width(rate.sel({axis: fast}), rate.sel({axis: slow}), 0.95)
    assert w == 64 and res["n"] == 4 and res["ratio"] == pytest.approx(10, rel=0.02)
    assert stats.paired_ratio(rate.sel({axis: fast, "width": 256}).values,
                              rate.sel({axis: slow, "width": 256}).values)["n"] == 1
    test = C.claim3 if axis == "init" else C.claim4
    row = test("e", stats.complete_axes(ds), settings())[0]
    assert "width 64" in row["reason"] and row["value"] == res["ratio"] and row["ci_low"] == res["ci_low"]
    _, finding = figure(analysis, ds, settings())
    assert quoted.format(ratio=fmt(res["ratio"]), lo=fmt(res["ci_low"]), hi=fmt(res["ci_high"])) in finding, finding


def test_the_claims_analyses_come_from_the_registry():
    """Which analyses test a claim is said once, by the registry (`Analysis.claims`)."""
    from tfconv.analyses import all_analyses

    for k in C.CLAIMS:
        assert C.analyses_testing(k) == [a.name for a in all_analyses() if k in a.claims] != []
    assert C.analyses_testing(2)[:2] == ["loss_per_width", "kernel_prediction"]
    table = C.evaluate_claims({}, {})
    reasons = dict(zip(table["claim"], table["reason"]))
    assert reasons[1] == "no experiment lists the analysis 'overparam_exponent', which tests it"
    assert reasons[5] == "no experiment lists the analysis 'figure9', which tests it"


# ---------------------------------------------------------------------------------------------
# claim 5
# ---------------------------------------------------------------------------------------------

def _claim5(kc_of_width, attention_slope):
    return aggregate({"width": [64, 256, 1024], "scaling": ["inv"], "init": ["lecun"], "seed": [0, 1, 2]},
                     kernel_change=lambda d: kc_of_width(d["width"]) * seeded(d["seed"], 0.02),
                     attention=lambda d, t: 0.01 * (d["width"] / 64.0) ** attention_slope * seeded(d["seed"], 0.02) * np.ones_like(t))


def test_claim5_consistent_when_the_kernel_settles_below_the_threshold():
    rows = C.claim5("e", _claim5(lambda w: 0.4 * (w / 64.0) ** -0.75, -0.5), settings(kernel_change_threshold=0.1))
    assert verdicts(rows) == ["consistent", "consistent"], rows


def test_claim5_refuted_when_the_kernel_moves_more_at_larger_width():
    rows = C.claim5("e", _claim5(lambda w: 0.05 * (w / 64.0) ** 0.5, 0.3), settings(kernel_change_threshold=0.1))
    assert verdicts(rows) == ["refuted", "refuted"], rows


def test_claim5_not_measurable_when_decreasing_but_still_above_the_threshold():
    rows = C.claim5("e", _claim5(lambda w: 2.0 * (w / 64.0) ** -0.2, -0.5), settings(kernel_change_threshold=0.1))
    b = [r for r in rows if r["test"].startswith("(b)")][0]
    assert b["verdict"] == "refuted" or b["verdict"] == "not measurable"
    assert b["verdict"] == "not measurable" and "not yet" in b["reason"], b


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------

def test_table_has_rows_only_for_experiments_whose_analyses_test_the_claim():
    ds = _rates("init", lambda i: {"lecun": 0.1, "ntk": 0.01}[i])
    table = C.evaluate_claims({"a": ds, "b": ds}, {"a": [3], "b": []}, {})
    assert list(table.columns) == ["claim", "statement"] + C.COLUMNS[1:]
    claim3 = table[table["claim"] == 3]
    assert set(claim3["experiment"]) == {"a"}  # b lists no analysis that tests claim 3
    others = table[table["claim"] != 3]
    assert (others["verdict"] == "not measurable").all() and (others["experiment"] == "").all()
    assert others["reason"].str.contains("no experiment lists the analysis").all()
    assert set(table["verdict"]) <= {"consistent", "refuted", "not measurable"}


def test_table_says_how_many_runs_diverged():
    """Diverged runs are left out of every fit and ratio; each row of their experiment says so."""
    ds = aggregate({"width": [64, 256], "scaling": ["inv_sqrt"], "init": ["lecun", "ntk"], "seed": [0, 1, 2, 3]},
                   loss=lambda d, t: np.exp(-{"lecun": 0.1, "ntk": 0.01}[d["init"]] * seeded(d["seed"]) * t),
                   status=lambda d: "diverged" if (d["width"], d["init"], d["seed"]) == (256, "ntk", 3) else "complete")
    table = C.evaluate_claims({"a": ds}, {"a": [3]}, {})
    row = table[table["claim"] == 3].iloc[0]
    assert row["reason"].endswith("1 of 16 run(s) diverged (excluded)"), row["reason"]
    clean = C.evaluate_claims({"a": _rates("init", lambda i: {"lecun": 0.1, "ntk": 0.01}[i])}, {"a": [3]}, {})
    assert not clean["reason"].str.contains("diverged").any()
