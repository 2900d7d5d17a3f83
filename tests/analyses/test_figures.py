"""Every figure runs on small real aggregates (clean, with a diverged and a missing run, over n_samples),
writes a non-empty PNG and a CSV whose numbers are the dataset's, and returns a finding and slopes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aggregates import regime_aggregate, tiny_aggregates  # noqa: E402 (tests/ is on sys.path; cached: built once per process)
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
    # the aggregate records test accuracy only: the finding quotes it, and nothing it does not have
    assert "test accuracy 0." in out["finding"] and "train accuracy" not in out["finding"]


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


def _with_lambda_min0_verdicts(ds, below):
    """`ds` with a verdict on every lambda_min(K_0): "below the precision of K" (error 10 x the value) at the
    runs selected by `below` (a dict of coordinates), "resolved" (error a tenth of the value) elsewhere."""
    from tfconv.core.spectra import BELOW_PRECISION, RESOLVED

    ds = ds.copy(deep=True)
    lm = ds["lambda_min"]
    ver = lm.copy(data=np.full(lm.shape, RESOLVED, dtype="<U32"))
    err = 0.1 * np.abs(lm)
    if below:
        ver.loc[dict(below, checkpoint_epoch=0)] = BELOW_PRECISION
        err.loc[dict(below, checkpoint_epoch=0)] = 10.0 * np.abs(lm.sel(dict(below, checkpoint_epoch=0)))
    return ds.assign(lambda_min_verdict=ver, lambda_min_error=err)


def test_spectrum_draws_lambda_min_below_the_precision_of_k_as_open_triangles_at_its_upper_bound(tmp_path):
    """A lambda_min(K_0) below the precision of K is not a run point: it is drawn as an open down-triangle
    at max(value, 0) + error with its legend entry, left out of the mean and the fit, counted in the finding;
    with every value resolved there is no such mark and the fit is over every run."""
    from tfconv.analyses import figure
    from tfconv.analyses.draw import BELOW_PRECISION_LABEL

    clean, _, _ = tiny_aggregates()
    at = dict(width=8, init="lecun", scaling="inv_sqrt", seed=0)
    lm0 = stats.epoch0_kernel(clean, "lambda_min")
    total = int((np.isfinite(lm0) & (clean["status"] != "missing")).sum())
    for below, n_fit in (({}, 6), (at, 5)):
        ds = _with_lambda_min0_verdicts(clean, below)
        cv, finding = figure("spectrum", ds, SETTINGS)
        panel = cv.ax(0)
        tri = [m for m in panel.series() if m.style.get("marker") == "v"]
        n = {(s["quantity"], s["group"]): s["n"] for s in cv.slopes}
        assert n[("lambda_min_K0 vs width", "init=lecun, scaling=inv_sqrt")] == n_fit
        for m in panel.series():
            if np.size(m.data[1]):  # (empty plots are legend entries)
                assert np.isfinite(m.points()).all(axis=1).all(), m
        if not below:
            assert not tri and BELOW_PRECISION_LABEL not in panel.labels()
            assert f"resolved in {total} of {total} runs" in finding and "below the precision" not in finding
            continue
        value = float(clean["lambda_min"].sel(dict(at, checkpoint_epoch=0)))
        assert len(tri) == 1 and tri[0].style.get("mfc") == "none"
        np.testing.assert_allclose(tri[0].points(), [[8.0, 11.0 * value]], rtol=1e-12)  # max(v, 0) + 10 v
        assert panel.labels().count(BELOW_PRECISION_LABEL) == 1
        assert f"resolved in {total - 1} of {total} runs, 1 below the precision of K" in finding, finding
        out, table = _draw("spectrum", ds, tmp_path)
        rows = table[(table["quantity"] == "lambda_min_K0") & (table["width"] == 8) & (table["init"] == "lecun")
                     & (table["scaling"] == "inv_sqrt") & (table["seed"] == 0)]
        assert set(rows["stat"]) == {"below_precision", "upper_bound"}
        assert rows[rows["stat"] == "below_precision"]["y"].iloc[0] == pytest.approx(value, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# What a reader sees (issue 23, item 3): every figure of every tiny aggregate it applies to is checked
# for the defects a reader saw in the default run's figures.  Each check is a function of the figure's
# marks (and, for sizes and overlaps, of the rendered figure), tested below on constructed figures so
# that it can fail; the names and sizes are spelled out here, not imported from the code under test.
# ---------------------------------------------------------------------------------------------

import functools  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402

DOUBLE_COLUMN_IN = 5.5  # the NeurIPS text width: no figure may be wider
FILLED = frozenset("o s ^ v < > D d p h H 8 * P X".split())


def _tiny_by_name():
    clean, broken, by_n = tiny_aggregates()
    return {"clean": clean, "broken": broken, "by_n": by_n, "regime": regime_aggregate()}


def _applies(analysis, ds) -> bool:
    from tfconv.analyses import get_analysis

    req = get_analysis(analysis).requires
    if any(ds.sizes.get(axis, 1 if axis in ("scaling", "init", "seed") else 0) < k for axis, k in req.axes.items()):
        return False
    return not (req.kinds == ("mnist",) and "test_accuracy" not in ds)


CASES = [(a, name) for a in sorted(PLOTS) for name in ("clean", "broken", "by_n", "regime")]


@functools.lru_cache(maxsize=None)
def _figure(analysis, name):
    """(Canvas, finding) of `analysis` on the tiny aggregate `name` (None when it does not apply)."""
    from tfconv.analyses import figure

    ds = _tiny_by_name()[name]
    return figure(analysis, ds, SETTINGS) if _applies(analysis, ds) else None


@functools.lru_cache(maxsize=None)
def _rendered(analysis, name, folder):
    """make_figure's output with the PDF: (result, PDF path)."""
    import pathlib

    ds = _tiny_by_name()[name]
    out = pathlib.Path(folder)
    pdf = out / f"{analysis}_{name}.pdf"
    res = make_figure(analysis, ds, out / f"{analysis}_{name}.png", out / f"{analysis}_{name}.csv", SETTINGS,
                      out_pdf=pdf)
    return res, pdf


def _cases(analysis):
    got = [(name, _figure(analysis, name)) for name in ("clean", "broken", "by_n", "regime")]
    got = [(name, f) for name, f in got if f is not None]
    assert got, f"no tiny aggregate fits {analysis}"
    return got


def _style_marker(m):
    mk = m.style.get("marker")
    if m.kind == "errorbar" and mk is None:
        mk = m.style.get("fmt")
    return None if mk in (None, "", "none", "None", " ") else str(mk)


def _ms(m) -> float:
    return float(m.style.get("ms", m.style.get("markersize", 4.0)))


def _hollow(m) -> bool:
    return str(m.style.get("mfc", m.style.get("markerfacecolor", ""))).lower() == "none"


def _role(m) -> str:
    return getattr(m, "role", "data")


def _xy(m):
    x, y = (np.asarray(v, dtype=float).ravel() for v in np.broadcast_arrays(*m.data[:2]))
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def _fit_points(cv):
    """The (x, y) points of the fitted lines, from the figure's CSV rows (stat "fit")."""
    return {(float(r["x"]), float(r["y"])) for r in cv.rows if r.get("stat") == "fit"}


def _is_fit(m, fit_points) -> bool:
    if _role(m) == "fit":
        return True
    if m.kind != "plot" or _role(m) == "key":
        return False
    x, y = _xy(m)
    return x.size >= 2 and all((a, b) in fit_points for a, b in zip(x, y))


def zeros_on_log_axes(cv):
    """Points at or below 0 on a log y axis: matplotlib drops them silently and the line through them
    plunges off the panel (a 0 drawn from a max over [0, nan, nan])."""
    bad = []
    for i, p in enumerate(cv.panels):
        if not p.visible or p.props.get("yscale") != "log":
            continue
        for m in p.series():
            if m.kind == "fill_between" or _role(m) == "key":
                continue
            x, y = _xy(m)
            if (y <= 0).any():
                bad.append(f"panel {i} ({p.props.get('title')!r}): {int((y <= 0).sum())} point(s) <= 0 at x = {x[y <= 0][:3]}")
    return bad


def hidden_markers(cv):
    """A marker series (points, or a line with markers through <= 12 points) drawn over an earlier one at the
    very same point hides it when it is filled and at least as large (or hollow, of the same shape and size
    over a hollow one)."""
    bad = []
    for i, p in enumerate(cv.panels):
        if not p.visible:
            continue
        ms = [m for m in p.series() if m.kind in ("plot", "errorbar") and _role(m) != "key" and _style_marker(m)]
        ms = [m for m in ms if str(m.style.get("ls", m.style.get("linestyle", "-"))) in ("none", "None", "", " ")
              or m.kind == "errorbar" or _xy(m)[0].size <= 12]
        for a in range(len(ms)):
            pa = set(zip(*_xy(ms[a])))
            for b in range(a + 1, len(ms)):
                shared = pa & set(zip(*_xy(ms[b])))
                if not shared:
                    continue
                ea, eb = ms[a], ms[b]
                if _style_marker(eb) in FILLED and not _hollow(eb) and _ms(eb) >= _ms(ea) and _style_marker(ea) in FILLED:
                    bad.append(f"panel {i}: {_style_marker(eb)} (ms {_ms(eb)}) hides {_style_marker(ea)} (ms {_ms(ea)}) "
                               f"at {sorted(shared)[:2]}")
                elif _hollow(ea) and _hollow(eb) and _style_marker(ea) == _style_marker(eb) and _ms(ea) == _ms(eb):
                    bad.append(f"panel {i}: two hollow {_style_marker(eb)} of one size at {sorted(shared)[:2]}")
    return bad


def hidden_lines(cv, rtol=0.02, min_shared=5):
    """Two data lines of one colour that run together (>= 5 points and >= 80% of the shorter one within 2%)
    stay distinguishable only if the one drawn on top (higher zorder, else later) is at most 0.6 times as
    wide as the one below (which shows around it).  (Lines of different colours that coincide are data
    that coincide, e.g. widths in the kernel regime; the colour tells them apart where they part.)"""
    fits = _fit_points(cv)
    bad = []
    for i, p in enumerate(cv.panels):
        if not p.visible:
            continue
        lines = [m for m in p.series() if m.kind == "plot" and _role(m) not in ("key", "fit") and not _is_fit(m, fits)
                 and str(m.style.get("ls", m.style.get("linestyle", "-"))) not in ("none", "None", "", " ")]
        lines = sorted(lines, key=lambda m: float(m.style.get("zorder", 2.0)))  # stable: drawing order within a zorder
        for a in range(len(lines)):
            xa, ya = _xy(lines[a])
            for b in range(a + 1, len(lines)):
                xb, yb = _xy(lines[b])
                common, ia, ib = np.intersect1d(xa, xb, return_indices=True)
                if common.size < min_shared:
                    continue
                close = np.abs(ya[ia] - yb[ib]) <= rtol * np.maximum(np.abs(ya[ia]), np.abs(yb[ib]))
                if close.sum() < min_shared or close.mean() < 0.8:
                    continue
                ea, eb = lines[a].style, lines[b].style
                lw_a, lw_b = float(ea.get("lw", ea.get("linewidth", 1.0))), float(eb.get("lw", eb.get("linewidth", 1.0)))
                if lw_b <= 0.6 * lw_a:  # the wider line below shows on both sides of the narrow one
                    continue
                if str(ea.get("color")) == str(eb.get("color")):
                    bad.append(f"panel {i} ({p.props.get('title')!r}): a line ({eb.get('label')}) runs over another "
                               f"({ea.get('label')}) in the same colour, not narrower than 0.6 of it")
    return bad


def duplicate_panel_labels(cv):
    """Panel titles are unique in a figure, and so are their "(a)", "(b)" labels."""
    titles = [str(p.props.get("title", "")) for p in cv.visible_panels() if p.props.get("title")]
    labels = [m.group(1) for t in titles for m in [re.match(r"\s*\((\w)\)", t)] if m]
    bad = [f"label ({x}) on {labels.count(x)} panels" for x in sorted(set(labels)) if labels.count(x) > 1]
    bad += [f"title {t!r} on {titles.count(t)} panels" for t in sorted(set(titles)) if titles.count(t) > 1]
    return bad


def empty_cells(cv):
    """A grid cell without a panel: the grid must be the tightest one of <= 4 columns for its panels."""
    n = len(cv.visible_panels())
    cells = cv.nrows * cv.ncols
    best = 0 if n <= 3 else min(math.ceil(n / c) * c - n for c in range(2, 5))
    return [f"{cells - n} empty cell(s) in a {cv.nrows} x {cv.ncols} grid of {n} panels"] if cells - n > best else []


def unlabelled_fits(cv):
    """Every fitted line has a legend entry."""
    fits = _fit_points(cv)
    return [f"panel {i} ({p.props.get('title')!r}): a fitted line without a legend entry"
            for i, p in enumerate(cv.panels) if p.visible
            for m in p.series() if _is_fit(m, fits) and not m.label]


def pdf_width_in(pdf) -> float:
    box = re.search(rb"/MediaBox\s*\[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]", pdf.read_bytes())
    return (float(box.group(3)) - float(box.group(1))) / 72.0


def covered(layout, tol=0.01):
    """Legends that cover drawn points, titles that overlap a panel or a legend (boxes in inches)."""
    def inter(a, b):
        return a and b and a[0] < b[2] - tol and b[0] < a[2] - tol and a[1] < b[3] - tol and b[1] < a[3] - tol

    panels = layout["panels"]
    legends = [p["legend"] for p in panels if p["legend"]] + ([layout["legend"]] if layout["legend"] else [])
    pts = np.concatenate([p["points"] for p in panels]) if panels else np.zeros((0, 2))
    bad = []
    for L in legends:
        inside = (pts[:, 0] > L[0] + tol) & (pts[:, 0] < L[2] - tol) & (pts[:, 1] > L[1] + tol) & (pts[:, 1] < L[3] - tol)
        if inside.any():
            bad.append(f"a legend covers {int(inside.sum())} drawn point(s)")
    titles = [p["title"] for p in panels] + [layout["suptitle"]]
    for k, T in enumerate(titles):
        if not T:
            continue
        if any(inter(T, p["axes"]) for p in panels):
            bad.append(f"title {k} overlaps a panel")
        if any(inter(T, L) for L in legends):
            bad.append(f"title {k} overlaps a legend")
        if any(inter(T, U) for j, U in enumerate(titles) if j != k and U):
            bad.append(f"title {k} overlaps another title")
    for L in legends:
        if any(inter(L, p["axes"]) for p in panels):
            bad.append("a legend overlaps a panel")
    return bad


@pytest.mark.parametrize("analysis", sorted(PLOTS))
def test_no_zero_drawn_on_a_log_axis(analysis):
    """Issue 23: lazy_training plunged to 0 at the kernel-only width 4096 (a max over [0, nan, ...])."""
    for name, (cv, _) in _cases(analysis):
        assert not zeros_on_log_axes(cv), (analysis, name, zeros_on_log_axes(cv))


@pytest.mark.parametrize("analysis", sorted(PLOTS))
def test_no_marker_hides_another(analysis):
    """Issue 23: overparam_exponent drew the loss-target criteria with equal-sized markers at the same rungs."""
    for name, (cv, _) in _cases(analysis):
        assert not hidden_markers(cv), (analysis, name, hidden_markers(cv))


@pytest.mark.parametrize("analysis", sorted(PLOTS))
def test_no_line_hides_another(analysis):
    for name, (cv, _) in _cases(analysis):
        assert not hidden_lines(cv), (analysis, name, hidden_lines(cv))


@pytest.mark.parametrize("analysis", sorted(PLOTS))
def test_panel_labels_and_titles_are_unique(analysis):
    """Issue 23: figure9 had two panels labelled "(b)"."""
    for name, (cv, _) in _cases(analysis):
        assert not duplicate_panel_labels(cv), (analysis, name, duplicate_panel_labels(cv))


@pytest.mark.parametrize("analysis", sorted(PLOTS))
def test_no_empty_panel_in_the_grid(analysis):
    """Issue 23: kernel_prediction left an empty cell (4 panels in a 2 x 3 grid); every panel has data
    (checked above)."""
    for name, (cv, _) in _cases(analysis):
        assert not empty_cells(cv), (analysis, name, empty_cells(cv))


@pytest.mark.parametrize("analysis", sorted(PLOTS))
def test_every_fitted_line_has_a_legend_entry(analysis):
    """Issue 23: the fits of kernel_prediction, scaling_comparison (and others) had no legend entry."""
    for name, (cv, _) in _cases(analysis):
        assert not unlabelled_fits(cv), (analysis, name, unlabelled_fits(cv))


@pytest.mark.parametrize("analysis", sorted(PLOTS))
def test_figure_fits_the_double_column_and_nothing_covers_data(analysis, tmp_path_factory):
    """Issue 23: figure9 was 1,218 pt wide, mnist_accuracy 700 x 1,988 pt: every figure is at most the
    NeurIPS text width (5.5 in) as saved; its legends and titles cover no data and no other panel."""
    folder = str(tmp_path_factory.getbasetemp() / "figures")
    for name, _ in _cases(analysis):
        res, pdf = _rendered(analysis, name, folder)
        width = pdf_width_in(pdf)
        assert width <= DOUBLE_COLUMN_IN + 0.01, (analysis, name, f"{width:.2f} in wide")
        layout = res.get("layout")
        assert layout is not None, "make_figure returns the rendered layout"
        assert abs(layout["size_in"][0] - width) < 0.02 * width  # the PNG's (Agg) and PDF's text metrics differ slightly
        assert not covered(layout), (analysis, name, covered(layout))


@pytest.mark.parametrize("analysis", sorted(PLOTS))
def test_findings_print_no_nan_and_no_raw_tokens(analysis):
    """Issue 23: "after training nan [nan, nan]", "width 4096: rate nan measured"; steps read as words."""
    for name, (_, finding) in _cases(analysis):
        assert not re.search(r"\bnan\b", finding, re.I), (analysis, name, finding)
        assert not re.search(r"\d(limit|common)\b|sqrt_d|\bNone\b", finding), (analysis, name, finding)


def test_lazy_training_draws_nothing_at_a_kernel_only_width():
    """Kernel-only runs (width 64 of the regime aggregate) never trained: no weight or kernel change."""
    cv, finding = _figure("lazy_training", "regime")
    for p in cv.visible_panels():
        for m in p.series():
            if _role(m) != "key":
                assert 64 not in set(_xy(m)[0]), p.props.get("title")
    assert not [r for r in cv.rows if r.get("width") == 64 and r["stat"] in ("run", "mean")]
    assert "64 kernel only" in finding


def test_overparam_marks_censored_n_as_bounds():
    """Issue 23: N = 4-16 sat at the bottom rung unmarked.  Every N whose smallest sufficient width is the
    first rung of the ladder is drawn as a bound (open marker and a downward arrow at the first rung, CSV
    stat "censored"); every N with no sufficient rung as an upward bound at the top rung."""
    cv, finding = _figure("overparam_exponent", "by_n")
    ds = stats.complete_axes(_tiny_by_name()["by_n"])
    first, top = min(stats.axis_values(ds, "width")), max(stats.axis_values(ds, "width"))
    table = stats.smallest_sufficient_width(ds, "loss", 1e-2, 0.5)
    at_first = set(table.loc[table["width_star"] == first, "n_samples"].astype(float))
    none = set(table.loc[table["censored"], "n_samples"].astype(float))
    rows = [r for r in cv.rows if r["stat"] == "censored" and r["quantity"] == "width_star_loss_0.01"]
    assert {r["n_samples"] for r in rows if r["y"] == first} == at_first
    assert {r["n_samples"] for r in rows if r["y"] == top} == none
    assert at_first | none, "the tiny ladder has censored N"
    arrows = [m for p in cv.visible_panels() for m in p.marks if m.kind == "arrow"]
    assert len([a for a in arrows if a.data[2] == "down"]) >= len(at_first)
    if at_first:
        assert "sufficient at the first rung" in finding


def test_figure9_keeps_coinciding_matrices_visible():
    """Issue 23: W_q and W_k move alike and were drawn over each other in one colour."""
    from tfconv.analyses import figure

    ds = regime_aggregate().copy()
    ds["weight_change_Wk"] = ds["weight_change_Wq"] * 1.001  # as in the default run: within a line width
    cv, _ = figure("figure9", ds, SETTINGS)
    assert not hidden_lines(cv), hidden_lines(cv)
    assert not duplicate_panel_labels(cv)


@pytest.mark.parametrize("axis, analysis, name, claim", [("init", "init_comparison", "clean", 3),
                                                         ("scaling", "scaling_comparison", "regime", 4)])
def test_figure_and_claims_quote_the_same_ratios(axis, analysis, name, claim):
    """The regime map's finding and the claims table read `stats.comparison_by_width`: each row's value at
    its width appears in the finding, measured and predicted, in both framings."""
    from tfconv.analyses import claims as C
    from tfconv.analyses.draw import fmt
    from tfconv.config import analysis_settings

    ds = _tiny_by_name()[name]
    rows = (C.claim3 if claim == 3 else C.claim4)("e", stats.complete_axes(ds), analysis_settings(SETTINGS))
    _, finding = _figure(analysis, name)
    scored = [r for r in rows if np.isfinite(r["value"])]
    assert any("linearised" in r["test"] for r in scored) and any("measured" in r["test"] for r in rows)
    for r in scored:
        w = re.search(r"at width (\d+)", r["test"]).group(1)
        assert f"{fmt(r['value'])}" in finding and f"width {w}" in finding, (r["test"], finding)
    for framing in ("common", "own"):
        assert f"predicted from K_0 at 0.5 x {framing} limit" in finding


def test_the_checks_can_fail():
    """Each check above fails on a figure that has its defect."""
    from tfconv.figures import Canvas

    cv = Canvas("t", 1)
    cv.ax(0).plot([1, 2, 3], [1.0, 0.0, 2.0], color="k")
    cv.ax(0).set_yscale("log")
    assert zeros_on_log_axes(cv)

    cv = Canvas("t", 1)
    cv.ax(0).plot([4, 8], [4, 4], marker="o", ls="none", color="C0")
    cv.ax(0).plot([4, 8], [4, 4], marker="s", ls="none", color="C1")  # same size, same rungs: hides the circles
    assert hidden_markers(cv)
    cv.ax(0).marks[-1].style.update(ms=2.0)  # smaller: the circles show around it
    assert not hidden_markers(cv)

    cv = Canvas("t", 1)
    t = np.arange(50.0)
    cv.ax(0).plot(t, np.exp(-t / 10), color="k", ls="-", label="W_q")
    cv.ax(0).plot(t, 1.001 * np.exp(-t / 10), color="k", ls="--", label="W_k")
    assert hidden_lines(cv)
    cv.ax(0).marks[0].style.update(color="C1", lw=2.2)
    cv.ax(0).marks[1].style.update(lw=0.9)
    assert not hidden_lines(cv)

    cv = Canvas("t", 2)
    cv.ax(0).set_title("(b) per matrix")
    cv.ax(1).set_title("(b) all weights")
    assert duplicate_panel_labels(cv)

    cv = Canvas("t", 4, ncols=3)
    assert empty_cells(cv) and not empty_cells(Canvas("t", 4)) and not empty_cells(Canvas("t", 5))

    cv = Canvas("t", 1)
    cv.ax(0).plot([1, 2, 4], [1, 2, 4], color="k", role="fit")
    assert unlabelled_fits(cv)
    cv = Canvas("t", 1)  # a fit known only from the CSV rows (stat "fit"), as the figures record it
    cv.ax(0).plot([1, 2, 4], [1, 2, 4], color="k", ls=":")
    cv.record("p", "q", "x", [1, 2, 4], [1, 2, 4], "fit")
    assert unlabelled_fits(cv)

    box = (0.0, 0.0, 1.0, 1.0)
    layout = {"panels": [{"axes": (0.0, 1.2, 2.0, 3.0), "title": (0.5, 3.05, 1.5, 3.2), "legend": box,
                          "points": np.array([[0.5, 0.5]])}], "legend": None, "suptitle": None}
    assert covered(layout)
    layout["panels"][0]["points"] = np.array([[0.5, 2.0]])
    assert not covered(layout)
    layout["panels"][0]["title"] = (0.5, 2.9, 1.5, 3.1)  # a title that runs into the panel
    assert covered(layout)


def test_figures_use_the_paper_presets(tmp_path):
    """One place owns the sizes: single column 2.7 in, double 5.5 in; a panel's legend entries fit its width."""
    from tfconv.figures import FIGURE_WIDTH, Canvas
    from tfconv.figures.render import render

    assert FIGURE_WIDTH == {"single": 2.7, "double": 5.5}
    assert Canvas("t", 1).size == "single" and Canvas("t", 2).size == "double"
    assert (Canvas("t", 4).nrows, Canvas("t", 4).ncols) == (2, 2) and (Canvas("t", 8).nrows, Canvas("t", 8).ncols) == (2, 4)
    cv = Canvas("t", 1)
    cv.ax(0).plot([1, 2, 3], [3, 1, 2], label="a label " * 6)
    layout = render(cv, "a title " * 12, tmp_path / "t.png", tmp_path / "t.pdf")
    assert pdf_width_in(tmp_path / "t.pdf") <= FIGURE_WIDTH["single"] + 0.01
    assert not covered(layout)
    with pytest.raises(ValueError, match="size must be one of"):
        Canvas("t", 1, size="poster")
