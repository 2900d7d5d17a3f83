"""The Snakemake report as a reader sees it: opened in a real headless Chromium (Debian's `chromium`,
driven by Playwright), offline, from the single self-contained report.html that
``snakemake --report report.html`` writes (``--report report.zip`` would write a folder in a zip).

The claims and slopes tables are shown inline (an HTML result, which the report shows in an iframe),
rounded, with verdicts marked by text, symbol and colour; every figure of the small config is shown
as an image that loaded.  Screenshots land in the test's tmp dir (their paths and sizes are printed).
Install: ``apt-get install chromium`` and ``pip install playwright`` (the dev extra); the Chromium
that Playwright would download is not used.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tfconv.pipeline.report_tables import VERDICT_STYLE, claims_html, round_sig, slopes_html, tidy_slopes

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "tests" / "configs" / "config_small.yaml"


IN_CI = os.environ.get("CI", "").lower() == "true"


def chromium_path() -> str:
    """Debian's Chromium (or TFCONV_CHROMIUM). Like the SLURM tests: outside CI a machine without one
    skips the browser tests (the README says so); under CI=true (.ci/run installs it) it fails."""
    path = os.environ.get("TFCONV_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    why = ("no Chromium found: install Debian's (apt-get install chromium) or point TFCONV_CHROMIUM at one; "
           ".ci/run installs it")
    if not path:
        assert not IN_CI, why
        pytest.skip(why)
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, offline=True)
    pg = ctx.new_page()
    yield pg
    ctx.close()


def shot(pg, path: Path) -> Path:
    """A screenshot into the test's tmp dir (and into $TFCONV_SCREENSHOTS when set, to look at)."""
    pg.screenshot(path=str(path))
    print(f"screenshot {path} ({path.stat().st_size} bytes)")
    keep = os.environ.get("TFCONV_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


# --- the tables as HTML, without Snakemake ---------------------------------------------------------------

CLAIMS = pd.DataFrame([
    {"claim": 2, "statement": "linear convergence", "experiment": "grid", "role": "test", "test": "(a) bound",
     "framing": "own limit", "value": 1.0, "ci_low": 0.025000000000000022, "ci_high": 1.0,
     "threshold": "refuted by one violating run", "verdict": "consistent", "power": "every run scored",
     "reason": "all runs satisfy it", "summary": "holds"},
    {"claim": 5, "statement": "stable NTK", "experiment": "grid", "role": "test", "test": "(b) slope",
     "framing": "", "value": 0.35284695767088076, "ci_low": 0.123456789, "ci_high": 0.55555555,
     "threshold": "ci_high < 0", "verdict": "refuted", "power": "3 widths", "reason": "the slope is positive",
     "summary": "slope positive"},
    {"claim": 4, "statement": "inv_sqrt faster", "experiment": "control", "role": "control", "test": "ratio",
     "framing": "common step", "value": 1.01, "ci_low": 0.98, "ci_high": 1.04, "threshold": "within 10%",
     "verdict": "no material difference", "power": "detects 10%", "reason": "rate nan at width 8 [nan, nan]",
     "summary": "no difference"},
    {"claim": 1, "statement": "width N^2", "experiment": float("nan"), "role": "test", "test": "-",
     "framing": float("nan"), "value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
     "threshold": float("nan"), "verdict": "not measurable", "power": "not run",
     "reason": "no experiment lists the analysis", "summary": "not tested"},
])


def test_round_sig():
    assert round_sig(0.025000000000000022) == "0.025"
    assert round_sig(0.35284695767088076) == "0.353"
    assert round_sig(1.0) == "1" and round_sig(12) == "12"
    assert round_sig(float("nan")) == "\u2014" and round_sig(None) == "\u2014"
    assert round_sig(1.23456e-7) == "1.23\u00d710<sup>-7</sup>"
    assert round_sig("text") == "text"


def test_slopes_csv_in_reading_order_without_duplicates():
    raw = pd.DataFrame([{"analysis": "figure9", "ci_high": 2.0, "ci_low": 1.0, "experiment": "e", "group": "inv",
                         "n": 6, "quantity": "y vs width", "r2": 0.9, "slope": 1.5}] * 2)
    tidy = tidy_slopes(raw)
    assert list(tidy.columns) == ["experiment", "analysis", "quantity", "group", "slope", "ci_low", "ci_high", "r2", "n"]
    assert len(tidy) == 1
    assert list(tidy_slopes(None).columns)[:2] == ["experiment", "analysis"]


def test_slopes_table_rows_rounded(page, tmp_path):
    raw = pd.DataFrame([
        {"experiment": "e", "analysis": "figure9", "quantity": "NTK change vs width", "group": "inv", "slope": -0.512345,
         "ci_low": -0.70001, "ci_high": -0.3333333, "r2": 0.987654, "n": 12},
        {"experiment": "e", "analysis": "figure9", "quantity": "weight change vs width", "group": "inv", "slope": -0.25,
         "ci_low": float("nan"), "ci_high": float("nan"), "r2": 0.5, "n": 3}])
    f = tmp_path / "slopes.html"
    f.write_text(slopes_html(tidy_slopes(raw)))
    page.goto(f.as_uri())
    rows = page.locator("table#slopes tbody tr")
    assert rows.count() == 2 and rows.first.is_visible()
    assert rows.first.locator("td").all_inner_texts() == [
        "e", "figure9", "NTK change vs width", "inv", "-0.512", "[-0.7, -0.333]", "0.988", "12"]
    assert rows.nth(1).locator("td").all_inner_texts()[5] == "\u2014"


def verdict_of(cell) -> str:
    """The verdict a cell is marked with, from its class (``verdict-consistent`` ...)."""
    classes = cell.get_attribute("class").split()
    (verdict,) = [v for v, style in VERDICT_STYLE.items() if style[0] in classes]
    return verdict


def test_verdicts_are_marked_and_coloured_in_a_browser(page, tmp_path):
    """Each of the four verdicts shows its text, symbol and its own background colour; numbers are
    rounded; the counts keep tests and controls apart; no cell reads "nan"."""
    f = tmp_path / "claims.html"
    f.write_text(claims_html(CLAIMS))
    page.goto(f.as_uri())
    cells = page.locator("td.verdict")
    assert cells.count() == len(CLAIMS) == len(VERDICT_STYLE)
    seen = {}
    for i in range(cells.count()):
        c = cells.nth(i)
        assert c.is_visible()
        verdict = verdict_of(c)
        assert verdict == CLAIMS["verdict"][i]
        assert c.inner_text().strip() == f"{VERDICT_STYLE[verdict][1]} {verdict}"
        seen[verdict] = c.evaluate("e => getComputedStyle(e).backgroundColor")
    assert len(set(seen.values())) == 4, f"verdicts share a colour: {seen}"
    assert "rgba(0, 0, 0, 0)" not in seen.values()
    nums = page.locator("td.num").all_inner_texts()
    assert "0.353" in nums and "[0.025, 1]" in nums and "[0.123, 0.556]" in nums
    assert all(not re.search(r"\d\.\d{4,}", t) for t in nums), nums
    assert page.locator("#counts-test span.badge").all_inner_texts() == [
        "\u2714 1 consistent", "\u2718 1 refuted", "= 0 no material difference", "\u2013 1 not measurable"]
    assert page.locator("#counts-control span.badge").all_inner_texts() == [
        "\u2714 0 consistent", "\u2718 0 refuted", "= 1 no material difference", "\u2013 0 not measurable"]
    header = page.locator("table#claims thead").inner_text()
    assert all(h in header for h in ("Role", "Framing", "Power", "Verdict", "Why")), header
    body = page.locator("table#claims tbody").inner_text()
    assert not re.search(r"\bnan\b", body, re.IGNORECASE), body
    assert "rate n/a at width 8" in body
    shot(page, tmp_path / "claims_table.png")


def test_visibility_check_fails_on_a_hidden_table(page, tmp_path):
    """The DOM check used on the report tells a hidden table from a shown one."""
    f = tmp_path / "hidden.html"
    f.write_text(slopes_html(None).replace("<table ", '<table style="display:none" '))
    page.goto(f.as_uri())
    assert page.locator("table#slopes").count() == 1 and not page.locator("table#slopes").is_visible()
    f.write_text(slopes_html(None))
    page.goto(f.as_uri())
    assert page.locator("table#slopes").is_visible()
    assert "no slope was fitted" in page.locator("table#slopes td.empty").inner_text()


# --- the captions, rendered as the report renders them ------------------------------------------------


CAPTION_CONFIGS = [
    {"datasets": {"d": {"kind": "synthetic", "n_samples": 100, "d_s": 8, "d": 32, "token_norm": 1.0}},
     "experiments": {"e": {"dataset": "d", "grid": {"width": [16, 64], "n_samples": [10, 20]},
                           "control": "unit-norm tokens"}}},
    {"datasets": {"d": {"kind": "mnist", "patch_size": 7}}, "analysis": {"confidence": 0.9},
     "experiments": {"e": {"dataset": "d", "grid": {"width": [16], "seed": [0, 1],
                                                    "step_size": [0.02, "0.5limit", "0.25common"]},
                           "model": {"embed": 8, "positional": True},
                           "train": {"epochs": 100, "loss": "sum", "hidden": False}}}},
    {"datasets": {"d": {"kind": "text"}}, "experiments": {"e": {"dataset": "d", "grid": {"width": [16, 4096]},
                                                               "train": {"max_gd_width": 64}}}},
]


def _render_rst(text: str) -> str:
    import warnings

    import docutils.core as docutils_core  # ships with snakemake

    with warnings.catch_warnings():  # docutils >= 0.22 announces a keyword rename
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return docutils_core.publish_parts(text, writer_name="html",
                                           settings_overrides={"halt_level": 2, "report_level": 2})["body"]


def test_captions_render_with_the_finding_first_and_readable_names(tmp_path):
    """Every caption renders with Snakemake's jinja2 settings as valid reStructuredText (a warning
    halts), starts with the figure's finding as the plot step wrote it (read when rendered, "nan" read
    as n/a, markup characters kept literal), names every step setting, scaling, init and token norm in
    words (no config token), and its job-parameter line is one short line; the templates hold no
    setting of their own."""
    import types

    import jinja2

    from tfconv.analyses import analysis_names
    from tfconv.analyses.captions import figure_caption, tables_caption_values
    from tfconv.config import load_workflow

    root = ROOT / "workflow" / "report"
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    templates = {name: (root / f"{name}.rst").read_text() for name in ("figure", "claims", "slopes")}
    for name, src in templates.items():  # no setting or default of their own
        assert "snakemake.config" not in src and not re.search(r"\|\s*default|\.get\(|{%", src), name
    finding = tmp_path / "x.finding.txt"
    finding.write_text("lecun/inv_sqrt: rate nan [nan, nan] at width 8; |K_t - K_0|_F / |K_0|_F 0.5; *2* done_\n")
    for cfg in CAPTION_CONFIGS:
        wf = load_workflow(cfg)
        exp = wf.experiment("e")
        texts = {}
        for name in list(analysis_names()) + ["claims", "slopes"]:
            if name in ("claims", "slopes"):
                params = types.SimpleNamespace(**tables_caption_values(wf.analysis))
            else:
                cap = figure_caption(exp, name, wf.analysis, finding_file=finding)
                params = types.SimpleNamespace(caption=cap)
                assert "\n" not in str(cap) and len(str(cap)) < 120, str(cap)
            sm = types.SimpleNamespace(config={}, wildcards=types.SimpleNamespace(experiment="e", analysis=name),
                                       params=params)
            text = env.from_string(templates["figure" if name not in ("claims", "slopes") else name]).render(snakemake=sm)
            body = _render_rst(text)
            pct = "90.0%" if cfg.get("analysis") else "95.0%"
            assert pct in text and "{" not in text, (name, text)
            if name in ("claims", "slopes"):
                continue
            texts[name] = text
            plain = " ".join(re.sub(r"<[^>]+>", " ", body).split())
            assert plain.startswith("Finding. lecun/inv_sqrt: rate n/a at width 8; |K_t - K_0|_F / |K_0|_F 0.5; "
                                    "*2* done_"), plain[:300]
            assert not re.search(r"\bnan\b", plain, re.IGNORECASE), plain
            for token in ("sqrt_d", "0.5limit", "0.25common", "inv_sqrt", "lecun", "rotten_tomatoes",
                          "1e+06"):  # the setting paragraph (the registry's own caption text is the analysis's)
                assert token not in cap.setting, (token, cap.setting)
        setting = texts["loss_per_width"]
        kind = exp.dataset.kind
        assert {"synthetic": "rescaled to norm 1 in d = 32", "mnist": "d_s = 16 tokens of d = 49 features, 10 outputs",
                "text": "d_s = 16 word tokens of d = 32"}[kind] in setting, setting
        assert "tau0 = d_m^-1/2" in setting and "LeCun" in setting
        if kind == "mnist":
            assert ("a fixed step eta = 0.02" in setting and "each run at half its own stability limit" in setting
                    and "a quarter of the common limit" in setting and "3 step settings" in setting), setting
            assert "no hidden layer W_h" in setting and "sum loss" in setting and "embedding of each token to 8" in setting
        else:
            assert "each run at half its own stability limit" in setting and "for 400 epochs" in setting
        if kind == "text":
            assert "Widths above 64 (4096) are kernel only" in setting
        if kind == "synthetic":
            assert "Control experiment: unit-norm tokens" in setting
        assert len(set(texts.values())) == len(texts), "identical captions for different analyses"


def test_caption_without_a_finding_yet_renders():
    """Before the plot step ran (the finding is not written), the caption renders without it."""
    from tfconv.analyses.captions import figure_caption, finding_text
    from tfconv.config import load_workflow

    wf = load_workflow(CAPTION_CONFIGS[0])
    cap = figure_caption(wf.experiment("e"), "loss_per_width", wf.analysis, finding_file="/nonexistent/x.finding.txt")
    assert cap.finding == "" and finding_text(None) == ""
    assert cap.setting.startswith("**Setting.**")


# --- the report of a real run ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(small_workflow_run, tmp_path_factory):
    """report.html of the shared small run (tests/conftest.py), with the run's results folder."""
    from conftest import run_snakemake

    from tfconv.config import load_workflow

    wd, _, _ = small_workflow_run
    out = tmp_path_factory.mktemp("report") / "report.html"
    run_snakemake(wd, "--report", str(out))
    cfg = yaml.safe_load(SMALL.read_text())
    wf = load_workflow(dict(cfg, results=str(wd / cfg.get("results", "results"))))
    print(f"report {out} ({out.stat().st_size} bytes)")
    return out, wf


def open_result(pg, category: str, row: str, button: str = "eye") -> None:
    """Click the category in the report's menu, then a button of the row named `row` (the eye shows the
    result, the information-circle its caption and job)."""
    pg.locator("nav").first.get_by_text(category, exact=True).click()
    tr = pg.locator("nav table tbody tr").filter(has=pg.locator("td", has_text=re.compile(f"^{re.escape(row)}$")))
    assert tr.count() == 1, f"{row!r} is not listed under {category!r}: {pg.locator('nav').first.inner_text()}"
    tr.locator(f"a[iconname={button}]").click()


def back_home(pg) -> None:
    pg.locator("nav").nth(1).locator("a").first.click()  # the breadcrumb's home button


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.slow
def test_landing_page_shows_the_results_at_a_glance(report, page, tmp_path):
    """Without a click: the synthesis (one sentence per claim, as tables/synthesis.json has it, verdict
    marked), the verdict counts of the claims table with tests and controls apart, and a working link
    to each figure behind a sentence; the page starts in view (not cut off above) and reads no "nan"."""
    from tfconv.analyses.captions import readable
    from tfconv.pipeline.report_tables import OVERALL_STYLE, claim_figures

    path, wf = report
    res = wf.results
    page.goto(path.as_uri())
    glance = page.locator("#glance")
    glance.wait_for()
    assert glance.is_visible()
    head = page.locator("#glance h2")
    assert head.inner_text() == "Results at a glance"
    box = head.bounding_box()
    assert box and 0 <= box["y"] < 900 and box["x"] >= 0, box
    shot(page, tmp_path / "report_landing.png")

    sentences = json.loads(res.synthesis_json.read_text())
    assert [int(s["claim"]) for s in sentences] == [1, 2, 3, 4, 5]
    items = page.locator("#glance-claims > li")
    assert items.count() == len(sentences)
    for item, s in zip(items.all(), sentences):
        assert item.is_visible()
        assert item.get_attribute("data-claim") == str(s["claim"])
        assert words(item.locator(".sentence").inner_text()) == words(readable(s["sentence"]))
        badge = item.locator(".badge")
        assert OVERALL_STYLE[s["verdict"]][0] in badge.get_attribute("class")
        assert badge.inner_text().strip() == f"{OVERALL_STYLE[s['verdict']][1]} {s['verdict']}"
    claims = pd.read_csv(res.claims)
    tests = claims[claims["role"] == "test"]
    expected = [f"{VERDICT_STYLE[v][1]} {int((tests['verdict'] == v).sum())} {v}" for v in VERDICT_STYLE]
    assert page.locator("#glance-counts-test .badge").all_inner_texts() == expected
    assert page.locator("#glance-counts-control").count() == int((claims["role"] == "control").any())
    assert not re.search(r"\bnan\b", glance.inner_text(), re.IGNORECASE)

    # every figure behind a claim is linked, and a link shows that figure with its caption
    links = page.locator("#glance a.figure-link")
    rel = lambda p: str(Path(p).relative_to(res.root.parent))  # noqa: E731 (report paths are from the workdir)
    want = {rel(p): (e, a) for items_ in claim_figures(wf).values() for e, a, p in items_}
    assert set(want) <= set(page.evaluate("Object.keys(results)"))
    assert want and {links.nth(i).get_attribute("data-path") for i in range(links.count())} == set(want)
    last = links.last
    e, a = want[last.get_attribute("data-path")]
    last.click()
    img = page.locator("#app img[src^='data:image/png']")
    img.wait_for()
    assert img.is_visible()
    finding = words(readable(res.figure(e, a, "finding").read_text()))
    assert f"Finding. {finding}" in words(page.locator("nav").first.inner_text())
    shot(page, tmp_path / f"report_link_{e}_{a}.png")


@pytest.mark.slow
def test_report_shows_tables_and_every_figure(report, page, tmp_path):
    """The menu lists "Claims" first, then one category per experiment, with no level "Other"; the
    claims and slopes tables are shown inline; every figure is shown as an image that loaded, and its
    caption starts with the figure's own finding; the job parameters are one short line each."""
    from tfconv.analyses.captions import readable

    path, wf = report
    res = wf.results
    page.goto(path.as_uri())
    page.locator("nav").first.get_by_text("Claims", exact=True).wait_for()
    listed = set(page.evaluate("Object.keys(results)"))
    categories = page.evaluate("categories")
    root = res.root.parent
    rel = lambda p: str(Path(p).relative_to(root))  # noqa: E731 (results are keyed by path from the workdir)
    figures = [res.figure(e, a, "png") for e, a in wf.figure_targets()]
    assert {rel(p) for p in figures + [res.claims_html, res.slopes_html]} <= listed, listed
    assert all("Other" not in subs for subs in categories.values()), categories
    menu = [t.strip() for t in page.locator("nav").first.locator("ul li").all_inner_texts() if t.strip()]
    cats = [m for m in menu if m == "Claims" or m.startswith("Experiment ")]
    assert cats[0] == "Claims" and cats[1:] == sorted(f"Experiment {e}" for e in wf.experiments), menu
    shot(page, tmp_path / "report_home.png")

    # the claims table, inline: every row of claims.csv with its verdict marked
    claims = pd.read_csv(res.claims)
    open_result(page, "Claims", "claims")
    frame = page.frame_locator("iframe")
    table = frame.locator("table#claims")
    table.wait_for()
    assert table.is_visible()
    assert table.locator("tbody tr").count() == len(claims)
    verdicts = table.locator("td.verdict")
    assert [verdict_of(verdicts.nth(i)) for i in range(verdicts.count())] == list(claims["verdict"])
    for i in range(verdicts.count()):
        v = verdicts.nth(i)
        assert v.is_visible() and v.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
    nums = table.locator("td.num").all_inner_texts()
    assert all(not re.search(r"\d\.\d{4,}", t) for t in nums), f"unrounded numbers: {nums}"
    assert not re.search(r"\bnan\b", table.inner_text(), re.IGNORECASE)
    shot(page, tmp_path / "report_claims.png")

    # the slopes table, inline (the small config fits no slope: the table says why)
    slopes = pd.read_csv(res.slopes)
    back_home(page)
    open_result(page, "Claims", "slopes")
    table = page.frame_locator("iframe").locator("table#slopes")
    table.wait_for()
    assert table.is_visible() and "Slope" in table.locator("thead").inner_text()
    if len(slopes):
        assert table.locator("tbody tr").count() == len(slopes)
    else:
        assert "no slope was fitted" in table.locator("tbody").inner_text()
    shot(page, tmp_path / "report_slopes.png")

    # every figure: shown as an image that loaded at its own size, its caption led by its finding
    from PIL import Image

    for (e, a), png in zip(wf.figure_targets(), figures):
        back_home(page)
        open_result(page, f"Experiment {e}", a)
        img = page.locator("#app img[src^='data:image/png']")
        img.wait_for()
        assert img.is_visible()
        natural = img.evaluate("e => [e.complete, e.naturalWidth, e.naturalHeight]")
        with Image.open(png) as im:
            assert natural == [True, im.width, im.height], (png, natural)
        box = img.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 200, (png, box)
        # the result's description (its caption) opens with the finding the plot step wrote
        back_home(page)
        open_result(page, f"Experiment {e}", a, button="information-circle")
        nav = page.locator("nav").first
        nav.locator("a[iconname=eye]").first.click()  # the figure beside its caption
        nav.get_by_text("Finding.", exact=True).wait_for()
        text = words(nav.inner_text())
        finding = words(readable(res.figure(e, a, "finding").read_text()))
        assert finding and f"Finding. {finding}" in text, (a, finding, text[:2000])
        assert not re.search(r"\bnan\b", text, re.IGNORECASE), text
        assert "\\n" not in text and "**" not in text, "raw reStructuredText in the report"
        shot(page, tmp_path / f"report_{e}_{a}.png")
