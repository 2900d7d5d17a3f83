"""Every figure runs on small real aggregates (clean, with a diverged and a missing run, over n_samples),
writes a non-empty PNG and a CSV whose numbers are the dataset's, and returns a finding and slopes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aggregates import tiny_aggregates  # noqa: E402 (tests/ is on sys.path; cached: built once per process)
from tfconv.analyses import stats
from tfconv.analyses import analysis_names, make_figure
from tfconv.figures import CSV_COLUMNS, SLOPE_COLUMNS

PLOTS = analysis_names()

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SETTINGS = {"experiment": "tiny", "loss_target": 0.5, "success_fraction": 0.5}


def _draw(analysis, ds, tmp_path, settings=SETTINGS):
    png, csv = tmp_path / f"{analysis}.png", tmp_path / f"{analysis}.csv"
    out = make_figure(analysis, ds, png, csv, settings)
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    table = pd.read_csv(csv)
    assert list(table.columns[: len(CSV_COLUMNS)]) == CSV_COLUMNS
    assert isinstance(out["finding"], str) and len(out["finding"]) > 20 and "\n" not in out["finding"]
    for s in out["slopes"]:
        assert list(s) == SLOPE_COLUMNS
    return out, table


@pytest.mark.parametrize("analysis", sorted(PLOTS))
def test_every_figure_with_diverged_and_missing_runs(analysis, tmp_path):
    _, broken, _ = tiny_aggregates()
    out, table = _draw(analysis, broken, tmp_path)
    if analysis in ("loss_per_width", "kernel_prediction", "figure9", "init_comparison"):
        assert (table["stat"] == "diverged_run").any()
        assert "diverged" in out["finding"]


@pytest.mark.parametrize("analysis", ["overparam_exponent", "text_assumption", "kernel_prediction", "spectrum"])
def test_figures_over_n_samples(analysis, tmp_path):
    _, _, by_n = tiny_aggregates()
    out, table = _draw(analysis, by_n, tmp_path)
    assert len(table) > 0
    if analysis == "text_assumption":
        row = table[(table["stat"] == "run") & (table["n_samples"] == 8) & (table["width"] == 16) & (table["seed"] == 1)]
        want = float(by_n["lambda_min"].sel(n_samples=8, width=16, seed=1, checkpoint_epoch=0).squeeze())
        assert row["y"].iloc[0] == pytest.approx(want, rel=1e-12)
        assert {s["group"] for s in out["slopes"]} >= {"width=8, init=lecun, scaling=inv_sqrt"}
    if analysis == "overparam_exponent":
        assert set(table["stat"]) & {"run", "censored"}


def test_loss_per_width_csv_equals_dataset(tmp_path):
    clean, broken, _ = tiny_aggregates()
    _, table = _draw("loss_per_width", clean, tmp_path)
    row = table[(table["stat"] == "mean") & (table["width"] == 16) & (table["x"] == 5)]
    want = float(clean["loss"].sel(width=16, scaling="inv_sqrt", init="lecun", epoch=5).mean("seed"))
    assert row["y"].iloc[0] == pytest.approx(want, rel=1e-12)
    # with a diverged seed the mean is over the other seed only
    _, table = _draw("loss_per_width", broken, tmp_path)
    row = table[(table["stat"] == "mean") & (table["width"] == 32) & (table["x"] == 5)]
    want = float(broken["loss"].sel(width=32, scaling="inv_sqrt", init="lecun", seed=0, epoch=5))
    assert row["y"].iloc[0] == pytest.approx(want, rel=1e-12)


def test_spectrum_fits_exclude_diverged_runs(tmp_path):
    clean, broken, _ = tiny_aggregates()
    out, table = _draw("spectrum", broken, tmp_path)
    n = {(s["quantity"], s["group"]): s["n"] for s in out["slopes"]}
    assert n[("lambda_min_K0 vs width", "init=lecun, scaling=inv_sqrt")] == 5  # 6 runs, 1 diverged
    assert n[("lambda_min_K0 vs width", "init=ntk, scaling=inv")] == 5  # 6 runs, 1 missing
    row = table[(table["quantity"] == "lambda_max_K0") & (table["stat"] == "run") & (table["width"] == 8)
                & (table["init"] == "ntk") & (table["scaling"] == "inv") & (table["seed"] == 0)]
    want = float(clean["lambda_max"].sel(width=8, init="ntk", scaling="inv", seed=0, checkpoint_epoch=0))
    assert row["y"].iloc[0] == pytest.approx(want, rel=1e-12)
    # the slope printed equals an independent fit of the same points
    d = stats.epoch0_kernel(broken, "lambda_min").sel(init="lecun", scaling="inv_sqrt")
    st = broken["status"].sel(init="lecun", scaling="inv_sqrt").transpose("width", "seed").values.ravel()
    x = np.repeat(d["width"].values, 2)[st == "complete"]
    y = d.transpose("width", "seed").values.ravel()[st == "complete"]
    ref = stats.fit_loglog(x, y)
    got = [s for s in out["slopes"] if s["group"] == "init=lecun, scaling=inv_sqrt" and s["quantity"].startswith("lambda_min")][0]
    assert got["slope"] == pytest.approx(ref["slope"]) and got["ci_low"] == pytest.approx(ref["ci_low"])


def test_mnist_accuracy_draws_test_accuracy(tmp_path):
    clean, _, _ = tiny_aggregates()
    out, table = _draw("mnist_accuracy", clean, tmp_path)
    acc = table[(table["quantity"] == "test_accuracy") & (table["stat"] == "mean")]
    assert len(acc) > 0 and acc["y"].between(0, 1).all()
    assert "train accuracy" in out["finding"] and "test 0." in out["finding"]


def test_all_nan_aggregate_does_not_crash(tmp_path):
    clean, _, _ = tiny_aggregates()
    empty = clean.copy()
    for v in empty.data_vars:
        if empty[v].dtype.kind == "f":
            empty[v] = empty[v] * np.nan
    empty["status"] = empty["status"].where(False, "missing")
    for analysis in ("loss_per_width", "spectrum", "kernel_prediction", "lazy_training"):
        _draw(analysis, empty, tmp_path)


def test_unknown_analysis_is_named(tmp_path):
    clean, _, _ = tiny_aggregates()
    with pytest.raises(ValueError, match="allowed: loss_per_width"):
        make_figure("losses", clean, tmp_path / "x.png", tmp_path / "x.csv", {})


@pytest.mark.parametrize("analysis", PLOTS)
def test_every_series_drawn_has_visible_points_and_every_panel_has_data(analysis):
    """What a reader sees: every line drawn has a visible segment (or markers) of finite points and
    every panel shows data -- on every tiny aggregate the analysis applies to (this is the check that
    catches curves recorded every k epochs and drawn as lines with gaps, i.e. blank panels)."""
    from tfconv.analyses import figure
    from tfconv.analyses import get_analysis

    req = get_analysis(analysis).requires
    tried = 0
    for ds in tiny_aggregates():
        if any(ds.sizes.get(axis, 1 if axis in ("scaling", "init", "seed") else 0) < k for axis, k in req.axes.items()):
            continue
        if req.kinds == ("mnist",) and "test_accuracy" not in ds:  # not a classification aggregate
            continue
        tried += 1
        cv, _ = figure(analysis, ds, SETTINGS)
        for i, panel in enumerate(cv.visible_panels()):
            drawn = [m for m in panel.series() if np.size(m.data[1]) > 0]  # empty plots are legend entries
            assert drawn, f"{analysis}: panel {i} ({panel.props.get('title')!r}) draws nothing"
            for m in drawn:
                pts = m.points()
                assert np.isfinite(pts).all(axis=1).any(), f"{analysis}: a series in panel {i} has no finite point"
                if m.kind == "plot":
                    assert m.visible_points() > 0, f"{analysis}: a series in panel {i} is invisible ({m.style})"
    assert tried, f"no tiny aggregate fits {analysis}"


def test_invisible_series_are_caught():
    """The check above can fail: a line through points that are finite only every 10th epoch is invisible
    unless drawn with markers or through its finite points only (what draw_seed_curves does)."""
    from tfconv.figures.canvas import Mark

    y = np.full(50, np.nan)
    y[::10] = 0.5
    assert Mark("plot", (np.arange(50.0), y), {"ls": "-"}).visible_points() == 0
    assert Mark("plot", (np.arange(50.0), y), {"ls": "-", "marker": "o"}).visible_points() == 5
    fin = np.isfinite(y)
    assert Mark("plot", (np.arange(50.0)[fin], y[fin]), {"ls": "-"}).visible_points() > 0


@pytest.mark.parametrize("analysis", ["loss_per_width", "kernel_prediction"])
def test_linearised_curve_above_its_limit_still_draws(analysis, tmp_path):
    """A step above the linearised model's stability limit makes its predicted loss grow like
    (1 - eta lambda/N)^(2t): finite values up to ~1e308 once rendered overflowed matplotlib's log
    ticks (OverflowError in the fault-test workflow). The panel must draw with bounded limits."""
    clean, _, _ = tiny_aggregates()
    ds = clean.copy(deep=True)
    lin = ds["loss_linearised"]
    grow = np.logspace(0, 308, lin.sizes["epoch"])  # finite, but 3x the largest overflows
    ds["loss_linearised"] = lin.copy(data=np.broadcast_to(grow, lin.shape).copy())
    out, table = _draw(analysis, ds, tmp_path)
    assert len(table) > 0


def test_spectrum_draws_the_spectral_density_of_k0_by_method(tmp_path):
    """Third panel: K_0's density per width on log bins over [min lambda_min, max lambda_max] -- from
    the stored eigenvalues (equal weights) or the stored SLQ nodes/weights; widths with neither have
    no curve and the finding says so."""
    from tfconv.analyses import figure

    clean, broken, by_n = tiny_aggregates()
    d = clean["spectral_density_K0"]
    assert d.dims[-1] == "spectrum_bin" and np.allclose(d.sum("spectrum_bin").values, 1.0)
    lam0 = stats.epoch0_kernel(clean, "lambda_min")
    edges = np.asarray(d.attrs["bin_edges"])
    assert edges.size == d.sizes["spectrum_bin"] + 1 and np.all(np.diff(np.log(edges)) > 0)
    assert edges[0] == pytest.approx(float(lam0.min()), rel=1e-12)
    assert edges[-1] == pytest.approx(float(stats.epoch0_kernel(clean, "lambda_max").max()), rel=1e-12)
    np.testing.assert_allclose(d["spectrum_bin"].values, np.sqrt(edges[:-1] * edges[1:]), rtol=1e-12)
    out, table = _draw("spectrum", clean, tmp_path)
    rows = table[table["quantity"] == "spectral_density_K0"]
    assert set(rows["width"]) == {8, 16, 32} and (rows["y"] > 0).all()
    assert "eigenvalues for width(s) 8, 16, 32" in out["finding"]
    cv, finding = figure("spectrum", broken, SETTINGS)
    assert len(cv.visible_panels()) == 3
    labels = cv.ax(2).labels()
    assert any("width 32 (SLQ" in lab for lab in labels) and any("width 16 (eigenvalues" in lab for lab in labels)
    assert not any(lab.startswith("width 8 ") for lab in labels)
    assert "SLQ for width(s) 32" in finding and "none for width(s) 8" in finding
    cv, finding = figure("spectrum", by_n, SETTINGS)  # no Gram with a density: two panels, said so
    assert len(cv.visible_panels()) == 2 and "no spectral density of K_0" in finding
