"""The workflow's closing summary: verdict counts of the claims table, tests and controls apart, all four
verdicts named, and report/status commands that read this run's results (its --configfile)."""
from __future__ import annotations

import copy

import pandas as pd

from inputs import BASE  # noqa: E402 (tests/ is on sys.path)
from tfconv.analyses.claims import VERDICTS
from tfconv.config import load_workflow
from tfconv.pipeline.summary import closing_summary


def test_closing_summary_counts_tests_and_controls_apart_and_names_the_config(tmp_path):
    cfg = copy.deepcopy(BASE)
    cfg["results"] = str(tmp_path / "results-mine")
    wf = load_workflow(cfg)
    wf.results.claims.parent.mkdir(parents=True)
    rows = [(2, "test", "consistent"), (2, "test", "refuted"), (4, "test", "not measurable"),
            (4, "control", "no material difference"), (4, "control", "no material difference")]
    pd.DataFrame(rows, columns=["claim", "role", "verdict"]).to_csv(wf.results.claims, index=False)

    lines = closing_summary(wf, 90.0, ["my/mine.yaml"]).splitlines()
    assert lines[0] == f"tfconv: done in 1.5 min. Results in {wf.results.root}/:"
    claims = next(ln for ln in lines if ln.startswith("  claims"))
    controls = next(ln for ln in lines if ln.startswith("  controls"))
    assert claims.split(None, 1)[1] == "consistent: 1, refuted: 1, no material difference: 0, not measurable: 1"
    assert controls.split(None, 1)[1] == "consistent: 0, refuted: 0, no material difference: 2, not measurable: 0"
    assert all(v in claims for v in VERDICTS)
    assert "    claim 4: not measurable 1" in lines  # controls are not counted under their claim
    assert "  report    snakemake --configfile my/mine.yaml --report mine.html  (figures, captions, the claims table)" in lines
    assert f"  status    tfconv status {wf.results.root}" in lines

    pd.DataFrame(rows[:3], columns=["claim", "role", "verdict"]).to_csv(wf.results.claims, index=False)
    lines = closing_summary(wf, 60.0).splitlines()
    assert not any(ln.startswith("  controls") for ln in lines), "no control rows: no controls line"
    assert "  report    snakemake --report report.html  (figures, captions, the claims table)" in lines
