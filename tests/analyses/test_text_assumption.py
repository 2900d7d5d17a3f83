"""The text_assumption figure on a real aggregate: real Rotten Tomatoes reviews, real K_0 from `init_kernel`
(float64, with lambda_min's error and verdict), N past both the parameter count of the narrow model (its K_0
is rank-deficient there: lambda_min below the precision of K) and the data kernel's rank limit d_s d.

What a reader must be able to trust: values below the precision of K are marked and never fitted, the data
kernel is fitted only below its rank limit, every fitted line has a legend entry and its interval, the fit
goes through the data (not a decade above it), and the finding counts what was resolved."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from tfconv.analyses import figure, make_figure, stats
from tfconv.analyses.realdata import data_kernel_vars
from tfconv.config import DatasetSpec, Experiment
from tfconv.core.kernel import init_kernel
from tfconv.core.model import init_params
from tfconv.analyses.draw import BELOW_PRECISION_LABEL
from tfconv.core.spectra import BELOW_PRECISION, RESOLVED
from tfconv.data.dataset import Dataset
from tfconv.data.text import make_text
from tfconv.store.aggregate import build_aggregate

D_S, D = 4, 8  # data dimension d_s d = 32: the data kernel's rank limit
NS = [8, 16, 24, 48, 96, 192, 384]
WIDTHS = [8, 32]
SETTINGS = {"experiment": "text_check"}


@functools.lru_cache(maxsize=1)
def aggregate():
    out = make_text("rotten_tomatoes", max(NS), d_s=D_S, d=D, seed=0)
    data = Dataset(out["X"], out["y"], dict(out["meta"], kind="text"))
    exp = Experiment.from_section("text_check", {
        "grid": {"n_samples": NS, "width": WIDTHS, "scaling": ["inv_sqrt"], "init": ["lecun"], "seed": [0, 1]},
        "train": {"step_size": "0.5limit", "epochs": 1, "loss": "mean", "checkpoint_epochs": [0],
                  "dtype": "float64", "hidden": True, "divergence_factor": 1e6},
        "gram": False,
    }, DatasetSpec("reviews", "text", {"n_samples": max(NS)}))
    runs = {}
    for p in exp.points:
        sub = data.subset(p["n_samples"])
        spec = p.spec(sub)
        ik = init_kernel(spec, sub.X, sub.y, init_params(spec, p["seed"]), "0.5limit", "mean")
        loss0 = float(np.mean(ik.residual0 ** 2) / 2)
        runs[p.run_id] = {"status": "complete", "diverged_epoch": -1, "stop_epoch": -1, "kernel": ik.summary(),
                          "curves": {"loss": np.array([loss0, loss0]), "loss_linearised": ik.linearised(1)}}
    ds = build_aggregate(exp, runs, {}, data.meta)
    for var, (dims, values, attrs) in data_kernel_vars(data, exp).items():
        ds[var] = (dims, values)
        ds[var].attrs.update(attrs)
    return ds


def _lm(ds, var):
    return stats.epoch0_kernel(ds, var).sel(scaling="inv_sqrt", init="lecun")


def test_the_aggregate_holds_both_verdicts():
    """The premise of the other tests (measured, not assumed): these small models' K_0 is rank-deficient at the
    largest N (width 8 from N = 192 on: lambda_min at rounding level, below the precision of K), while width 32 is
    resolved up to N = 192."""
    ds = aggregate()
    ver = _lm(ds, "lambda_min_verdict")
    assert set(np.unique(ver.values)) == {RESOLVED, BELOW_PRECISION}
    assert (ver.sel(n_samples=max(NS)) == BELOW_PRECISION).all()
    assert (ver.sel(width=32, n_samples=[n for n in NS if n <= 192]) == RESOLVED).all()
    assert (ver.sel(width=8, n_samples=8) == RESOLVED).all()
    err = _lm(ds, "lambda_min_error")
    assert (err > 0).all() and np.isfinite(err.values).all()
    dv = ds["data_kernel_lambda_min_verdict"].values
    assert ds["data_kernel_lambda_min"].attrs["rank_limit"] == D_S * D
    assert (dv[np.asarray(NS) > D_S * D] == BELOW_PRECISION).all()


def test_fits_use_only_resolved_values_and_the_data_kernel_only_below_its_rank_limit(tmp_path):
    ds = aggregate()
    out = make_figure("text_assumption", ds, tmp_path / "t.png", tmp_path / "t.csv", SETTINGS)
    table = pd.read_csv(tmp_path / "t.csv")
    slopes = {s["group"]: s for s in out["slopes"]}
    val, ver = _lm(ds, "lambda_min"), _lm(ds, "lambda_min_verdict")
    for w in WIDTHS:
        ok = (ver.sel(width=w) == RESOLVED).transpose("n_samples", "seed").values
        x = np.repeat(np.asarray(NS, float)[:, None], 2, axis=1)[ok]
        y = val.sel(width=w).transpose("n_samples", "seed").values[ok]
        ref = stats.fit_loglog(x, y)
        got = slopes[f"width={w}, init=lecun, scaling=inv_sqrt"]
        assert got["n"] == ok.sum() and got["slope"] == pytest.approx(ref["slope"], rel=1e-9)
        below = table[(table["stat"] == "below_precision") & (table["width"] == w)]
        assert len(below) == (~ok).sum()
        # a value below the precision of K is drawn at its upper bound max(value, 0) + error, never below it
        ub = table[(table["stat"] == "upper_bound") & (table["width"] == w)]
        err = table[(table["stat"] == "error") & (table["width"] == w)]
        merged = ub.merge(err, on=["n_samples", "seed"], suffixes=("", "_err"))
        assert len(merged) == len(below) and (merged["y"] >= merged["y_err"] * (1 - 1e-12)).all()
    rank = D_S * D
    dk = ds["data_kernel_lambda_min"].values
    dv = ds["data_kernel_lambda_min_verdict"].values
    fit_on = (np.asarray(NS) < rank) & (dv == RESOLVED)
    ref = stats.fit_loglog(np.asarray(NS, float)[fit_on], dk[fit_on])
    got = slopes["data kernel"]
    assert got["n"] == fit_on.sum() == 3 and got["slope"] == pytest.approx(ref["slope"], rel=1e-9)
    assert f"rank limit d_s d = {rank}" in out["finding"]
    assert "below the precision of K" in out["finding"]


def test_every_fit_has_a_legend_entry_an_interval_and_goes_through_its_data():
    """Issue 23: fitted lines without a legend entry, and a fit a decade above the data at the smallest N."""
    ds = aggregate()
    cv, finding = figure("text_assumption", ds, SETTINGS)
    table = cv.table()
    for panel in cv.visible_panels():
        marks = panel.series()
        fits = [m for m in marks if m.kind == "plot" and m.style.get("ls") == ":"]
        bands = [m for m in marks if m.kind == "fill_between"]
        assert len(fits) == len(WIDTHS) + 1  # one per width and the data kernel's
        assert len(bands) >= len(WIDTHS)
        for m in fits:
            assert m.label and "N^" in m.label, m.style
            assert np.isfinite(m.points()).all()
        for m in marks:
            if m.kind == "plot" and np.size(m.data[1]):
                assert np.isfinite(m.points()).all(axis=1).any() and m.visible_points() > 0
        assert panel.props.get("title")
    for w in WIDTHS:
        runs = table[(table["stat"] == "run") & (table["width"] == w) & (table["quantity"] == "lambda_min_K0")]
        fit = table[(table["stat"] == "fit") & (table["width"] == w)]
        for _, row in fit.iterrows():
            at = runs[runs["n_samples"] == row["x"]]["y"]
            assert at.min() / 3 <= row["y"] <= at.max() * 3, (w, row["x"], row["y"], at.tolist())
    assert cv.title and "text" not in cv.title.lower()  # the experiment name is the rest of the title


def test_the_figure_renders_with_its_markers(tmp_path):
    """The PNG is drawn (looked at by eye in review) and the below-precision marker has one legend entry per panel."""
    ds = aggregate()
    cv, _ = figure("text_assumption", ds, SETTINGS)
    for panel in cv.visible_panels():
        labels = [m.label for m in panel.series() if m.label]
        assert labels.count(BELOW_PRECISION_LABEL) == 1
        assert len(labels) == len(set(labels))
    out = make_figure("text_assumption", ds, tmp_path / "t.png", tmp_path / "t.csv", SETTINGS)
    assert (tmp_path / "t.png").stat().st_size > 20000 and out["finding"]


def test_identical_inputs_are_counted_and_named_in_the_finding():
    """Identical inputs (a review repeated in the corpus, or two reviews sharing their first d_s words) make K_0
    exactly singular for every model: the aggregate counts them per N (checked here against a direct count)
    and the finding says from which N on."""
    ds = aggregate()
    out = make_text("rotten_tomatoes", max(NS), d_s=D_S, d=D, seed=0)
    X = out["X"].reshape(len(out["X"]), -1)
    want = [n - len({row.tobytes() for row in X[:n]}) for n in NS]
    assert ds["duplicate_inputs"].values.tolist() == want
    _, finding = figure("text_assumption", ds, SETTINGS)
    if any(want):
        first = NS[int(np.argmax(np.asarray(want) > 0))]
        assert f"from N = {first} on the data hold identical inputs" in finding
    else:
        assert "no two inputs are identical" in finding


def test_the_ntk_rank_bound_is_drawn_where_n_passes_it_and_named_in_the_finding():
    """rank K_0 <= G(width) (264 = the parameter count at width 8, d = 8; 672 at width 32): the aggregate holds
    it per width, the figure draws it where it lies inside the N range (width 8 only: 8 <= 264 <= 384), and the
    finding says K_0 is singular by construction past it; with a larger N range left out, it says every N is
    below it.  Consistent with the measured verdicts: width 8 is below the precision of K at N = 384 > 264."""
    from tfconv.core.model import ModelSpec
    from tfconv.core.ntk_structured import rank_bound

    ds = aggregate()
    want = [rank_bound(ModelSpec(width=w, d=D, d_s=D_S, n_outputs=1, hidden=True)) for w in WIDTHS]
    assert ds["ntk_rank_bound"].values.tolist() == want == [264, 672]
    assert (_lm(ds, "lambda_min_verdict").sel(width=8, n_samples=384) == BELOW_PRECISION).all()
    cv, finding = figure("text_assumption", ds, SETTINGS)
    for panel in cv.visible_panels():
        labels = panel.labels()
        assert "rank bound of K_0, width 8: N = 264" in labels
        assert not any("width 32: N =" in lab for lab in labels)
        assert [m.data for m in panel.marks if m.kind == "axvline"] == [(264.0,)]
    assert "N passes the NTK's rank bound at width 8 (bound 264 at width 8, 672 at width 32)" in finding
    small = ds.sel(n_samples=[n for n in NS if n <= 192])
    _, finding = figure("text_assumption", small, SETTINGS)
    assert "every N is below the NTK's rank bound (264 at width 8, 672 at width 32)" in finding
    _, finding = figure("text_assumption", ds.drop_vars("ntk_rank_bound"), SETTINGS)
    assert "rank bound" not in finding
