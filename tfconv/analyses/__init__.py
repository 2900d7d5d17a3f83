"""The analyses of tfconv: numbers read off an experiment's aggregate, its figure, its finding, and
the claims table.

`tfconv.registry` is the one list of analyses (schema enum, captions, docs, rules read it); the
analyses themselves live in one module per section of the paper: `convergence`, `scaling`,
`kernel_regime`, `realdata`.  `stats` holds every shared definition (fits, rates, ratios, aggregate
readers), `draw` the drawing helpers they share; `claims` tests the paper's claims; `captions`
builds every value the report's captions print.  `make_figure` draws one analysis to PNG + CSV.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Mapping, Optional

from ..config import analysis_settings
from ..registry import REGISTRY, Analysis, Requires, all_analyses, analysis_names, docs_table, get_analysis, register


def caption_for(name: str, settings: Optional[Mapping[str, Any]] = None) -> str:
    """The report caption of an analysis with the analysis settings (and the experiment's
    ``step_size`` and ``checkpoint_epochs``) filled in."""
    s = analysis_settings(settings)
    fmt = {k: (v if not isinstance(v, float) else f"{v:g}") for k, v in s.items()}
    return get_analysis(name).caption.format(**fmt)


def figure(analysis: str, ds, settings: Optional[Mapping[str, Any]] = None):
    """The Canvas (marks, CSV rows, slopes) and the one-sentence finding of `analysis` on aggregate `ds`."""
    settings = analysis_settings(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cv, finding = get_analysis(analysis).numbers(ds, settings)
    return cv, finding.rstrip(".") + "."


def make_figure(analysis: str, ds, out_png, out_csv, settings: Optional[Mapping[str, Any]] = None,
                out_pdf=None) -> Dict[str, Any]:
    """Draw ``analysis`` from the aggregate ``ds``; write the PNG (and PDF) and the CSV; return finding and slopes.

    settings: the config's ``analysis`` section (schema defaults fill the gaps) plus optional
    ``experiment`` (shown in the title) and ``rate_floor`` (see `tfconv.analyses.stats.linear_rate`).
    Returns {"finding": one sentence, "slopes": [{figure, quantity, group, slope, ci_low, ci_high, r2, n}],
    "canvas": the Canvas, "layout": where `tfconv.figures.render.render` put every panel, legend and title}.
    """
    from pathlib import Path

    from ..figures.render import render

    cv, finding = figure(analysis, ds, settings)
    experiment = (settings or {}).get("experiment") or ds.attrs.get("experiment")
    title = cv.title or analysis.replace("_", " ")
    layout = render(cv, f"{experiment}: {title}" if experiment else title, out_png, out_pdf)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    cv.table().to_csv(out_csv, index=False)
    return {"finding": finding, "slopes": cv.slopes, "canvas": cv, "layout": layout}


# the section modules register their analyses on import (tfconv.registry.SECTIONS): importing tfconv.analyses
# fills the registry, so every user of an analysis imports it from here
from . import convergence, kernel_regime, realdata, scaling  # noqa: E402,F401

__all__ = ["REGISTRY", "Analysis", "Requires", "all_analyses", "analysis_names", "analysis_settings", "caption_for",
           "docs_table", "get_analysis", "register", "figure", "make_figure"]
