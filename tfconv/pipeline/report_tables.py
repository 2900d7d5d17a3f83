"""What the report shows of the tables: the claims and slopes tables as small self-contained HTML pages
(pandas ``Styler``; shown inline by the Snakemake report) and the report's landing page, "Results at a
glance" (the per-claim synthesis, the verdict counts, a link to every figure behind a sentence).

    claims_html(claims_df, confidence)      -> str   # verdict cells marked and coloured
    slopes_html(slopes_df, confidence)      -> str
    round_sig(0.025000000000000022)          -> "0.025"
    LandingPage.of(wf).html                  -> the landing page (read from tables/synthesis.json and
                                                claims.csv when the report is made)

Numbers are rounded to 3 significant digits, a missing number is an em dash, and each verdict carries
its verdict three ways: the text ("consistent", "refuted", "no material difference", "not measurable"),
a symbol and a colour (class ``verdict-consistent`` / ``verdict-refuted`` / ``verdict-no-difference`` /
``verdict-not-measurable``), so a reader without colour vision loses nothing.  The pages need no
network and no script.
"""
from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..analyses.captions import readable
from ..analyses.claims import CONSISTENT, NO_DIFFERENCE, NOT_MEASURABLE, REFUTED, ROLE_CONTROL, ROLE_TEST, VERDICTS
from ..config import analysis_settings

DASH = "\u2014"

#: verdict -> (css class, symbol, background, text colour)
VERDICT_STYLE = {
    CONSISTENT: ("verdict-consistent", "\u2714", "#d8f3dc", "#1b5e20"),
    REFUTED: ("verdict-refuted", "\u2718", "#ffd6d6", "#8b0000"),
    NO_DIFFERENCE: ("verdict-no-difference", "=", "#dbe8f7", "#0b3d6b"),
    NOT_MEASURABLE: ("verdict-not-measurable", "\u2013", "#ececec", "#444444"),
}
#: the synthesis's overall verdict of a claim -> the style of the row verdict it reads as
#: ("holds in part": some tests consistent, some refuted, has its own)
OVERALL_STYLE = {
    "holds": VERDICT_STYLE[CONSISTENT],
    "fails": VERDICT_STYLE[REFUTED],
    "holds in part": ("verdict-mixed", "\u00b1", "#fff1c2", "#6b4e00"),
    "no material difference": VERDICT_STYLE[NO_DIFFERENCE],
    "not measurable": VERDICT_STYLE[NOT_MEASURABLE],
}

#: slopes.csv columns in reading order (the remaining ones follow in their own order).
SLOPE_COLUMNS = ["experiment", "analysis", "figure", "quantity", "group", "slope", "ci_low", "ci_high", "r2", "n"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 14px; color: #222; margin: 16px; }
h1 { font-size: 18px; margin: 0 0 6px 0; }
p.summary { margin: 4px 0 12px 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #c8c8c8; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.verdict { font-weight: 600; white-space: nowrap; }
td.text { max-width: 34em; }
td.empty { font-style: italic; color: #555; }
span.badge { display: inline-block; padding: 1px 8px; border-radius: 9px; margin-right: 6px; font-weight: 600; }
"""


def _verdict_css(styles=VERDICT_STYLE) -> str:
    return "\n".join(f".{c} {{ background: {bg}; color: {fg}; }}" for c, _, bg, fg in styles.values())


def _missing(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, str):
        return x.strip() == "" or x.strip().lower() == "nan"
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def round_sig(x: Any, digits: int = 3) -> str:
    """`x` rounded to `digits` significant digits as text ("\u2014" when missing; text stays text)."""
    if _missing(x):
        return DASH
    if isinstance(x, bool):
        return str(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isinf(v):
        return "\u221e" if v > 0 else "\u2212\u221e"
    if v == int(v) and abs(v) < 10 ** digits:
        return str(int(v))
    s = f"{v:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        return f"{mant}\u00d710<sup>{int(exp)}</sup>"
    return s


def _esc(x: Any) -> str:
    """Text for an HTML cell: escaped, no ``nan`` (`tfconv.analyses.captions.readable`), a dash when missing."""
    return DASH if _missing(x) else html.escape(readable(x))


def _interval(lo: Any, hi: Any) -> str:
    if _missing(lo) and _missing(hi):
        return DASH
    return f"[{round_sig(lo)}, {round_sig(hi)}]"


def verdict_text(verdict: Any, styles=VERDICT_STYLE) -> str:
    """A verdict as its symbol and text ("\u2714 consistent")."""
    v = "" if _missing(verdict) else str(verdict)
    return f"{styles.get(v, ('', '?'))[1]} {html.escape(v)}"


def _percent(confidence: Optional[float]) -> str:
    """The interval's level as a column header shows it ("95%"); None: the schema's default level."""
    return f"{(confidence_of(None) if confidence is None else confidence) * 100:.3g}%"


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}{_verdict_css()}\n</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


def _styled_table(table_id: str, cells, classes, empty: str) -> str:
    """`cells` (a DataFrame of HTML cell contents, its columns the header) as a table via pandas' Styler,
    each cell with its class from `classes`; one explanatory row when there are no rows."""
    import pandas as pd

    if cells.empty:
        cells = pd.DataFrame([[html.escape(empty)] + [""] * (cells.shape[1] - 1)], columns=cells.columns)
        classes = pd.DataFrame([["empty"] + [""] * (cells.shape[1] - 1)], columns=cells.columns)
    styler = cells.style.hide(axis="index").set_td_classes(classes).format(escape=None)
    # Styler names its table "T_<uuid>"; the pages (and their tests) address it by `table_id`
    return styler.to_html(table_uuid=table_id, cell_ids=False).replace(f'id="T_{table_id}"', f'id="{table_id}"', 1)


def counts_by_role(claims) -> Dict[str, Dict[str, int]]:
    """{"test": {verdict: n}, "control": {verdict: n}} of a claims table (every verdict, 0 when absent)."""
    recs = [] if claims is None else claims.to_dict("records")
    out = {}
    for role in (ROLE_TEST, ROLE_CONTROL):
        rows = [r for r in recs if str(r.get("role", ROLE_TEST)) == role]
        out[role] = {v: sum(str(r.get("verdict")) == v for r in rows) for v in VERDICTS}
    return out


def _badges(counts: Mapping[str, int]) -> str:
    return " ".join(f'<span class="badge {VERDICT_STYLE[v][0]}" data-count="{counts[v]}">{VERDICT_STYLE[v][1]} '
                    f"{counts[v]} {v}</span>" for v in VERDICTS)


def claims_html(claims, confidence: Optional[float] = None) -> str:
    """The claims table (the columns of `tfconv.analyses.claims.COLUMNS`, plus `statement`) as HTML."""
    import pandas as pd

    recs = [] if claims is None else claims.to_dict("records")
    pct = _percent(confidence)
    header = ["Claim", "Experiment", "Role", "Test", "Framing", "Value", f"{pct} interval", "Rule", "Verdict",
              "Power", "Why"]
    kinds = ["text", "", "", "text", "", "num", "num", "text", "verdict", "text", "text"]
    rows, classes = [], []
    for r in recs:
        statement = _esc(r.get("statement"))
        rows.append([f"<b>{_esc(r.get('claim'))}</b>" + (f": {statement}" if statement != DASH else ""),
                     _esc(r.get("experiment")), _esc(r.get("role")), _esc(r.get("test")), _esc(r.get("framing")),
                     round_sig(r.get("value")), _interval(r.get("ci_low"), r.get("ci_high")), _esc(r.get("threshold")),
                     verdict_text(r.get("verdict")), _esc(r.get("power")), _esc(r.get("reason"))])
        vcls = VERDICT_STYLE.get(str(r.get("verdict")), ("verdict-other",))[0]
        classes.append([k if k != "verdict" else f"verdict {vcls}" for k in kinds])
    table = _styled_table("claims", pd.DataFrame(rows, columns=header), pd.DataFrame(classes, columns=header),
                          "no claim rows (no experiment was run)")
    counts = counts_by_role(claims)
    n_ctrl = sum(counts[ROLE_CONTROL].values())
    summary = (f'<p class="summary" id="counts-test">{sum(counts[ROLE_TEST].values())} test rows: '
               f"{_badges(counts[ROLE_TEST])}</p>\n")
    if n_ctrl:
        summary += f'<p class="summary" id="counts-control">{n_ctrl} control rows: {_badges(counts[ROLE_CONTROL])}</p>\n'
    return _page("Claims table", f"<h1>Claims of the paper, tested</h1>\n{summary}{table}")


def slopes_html(slopes, confidence: Optional[float] = None) -> str:
    """The slopes table (one row per fitted log-log slope) as HTML; an explanatory row when empty."""
    import pandas as pd

    recs = [] if slopes is None else slopes.to_dict("records")
    pct = _percent(confidence)
    header = ["Experiment", "Figure", "Quantity (y vs x)", "Group", "Slope", f"{pct} interval", "R<sup>2</sup>", "n"]
    kinds = ["", "", "", "", "num", "num", "num", "num"]
    rows = []
    for r in recs:
        fig = r.get("figure") if not _missing(r.get("figure")) else r.get("analysis")
        rows.append([_esc(r.get("experiment")), _esc(fig), _esc(r.get("quantity")), _esc(r.get("group")),
                     round_sig(r.get("slope")), _interval(r.get("ci_low"), r.get("ci_high")), round_sig(r.get("r2")),
                     round_sig(r.get("n"))])
    table = _styled_table("slopes", pd.DataFrame(rows, columns=header),
                          pd.DataFrame([kinds] * len(rows), columns=header),
                          "no slope was fitted: a slope needs at least 3 non-diverged runs with positive values "
                          "over at least 2 values of x (e.g. 3 or more widths)")
    return _page("Slopes table", f"<h1>Fitted log-log slopes</h1>\n<p class=\"summary\">{len(recs)} slopes</p>\n{table}")


def tidy_slopes(frame):
    """slopes.csv in reading order (`SLOPE_COLUMNS` first), without duplicate rows."""
    if frame is None or frame.empty:
        import pandas as pd

        return pd.DataFrame(columns=[c for c in SLOPE_COLUMNS if c != "figure"])
    frame = frame.drop_duplicates(ignore_index=True)
    first = [c for c in SLOPE_COLUMNS if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def write_html(path, text: str) -> None:
    """Write `text` to `path` atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)


def confidence_of(settings: Optional[Mapping[str, Any]]) -> float:
    """The confidence level of the tables: the config's ``analysis.confidence`` (its schema default when unset)."""
    return float(analysis_settings(settings)["confidence"])


# --------------------------------------------------------------------------------------------------
# The report's landing page: results at a glance
# --------------------------------------------------------------------------------------------------

#: The landing page sits in the report's description column, which Snakemake's page centres vertically
#: and keeps narrow: start it at the top (a tall page would otherwise be cut off above) and give it room.
_LANDING_CSS = """
#app .items-center:has(#glance) { align-items: flex-start; }
#app .max-w-lg:has(#glance) { max-width: 52rem; }
#glance ul { list-style: none; padding-left: 0; }
#glance li { margin: 0 0 0.7em 0; }
#glance .badge { display: inline-block; padding: 0 7px; border-radius: 8px; margin-right: 4px; font-weight: 600;
                 white-space: nowrap; }
#glance .figures { font-size: 0.92em; }
#glance a.figure-link { cursor: pointer; }
"""


def claim_figures(wf) -> Dict[int, List[Tuple[str, str, str]]]:
    """claim -> [(experiment, analysis, path of the figure's PNG)] of every figure the config draws whose
    analysis tests the claim (the registry's ``claims``), in the config's order."""
    from ..analyses import get_analysis

    out: Dict[int, List[Tuple[str, str, str]]] = {}
    for e, a in wf.figure_targets():
        for k in get_analysis(a).claims:
            out.setdefault(int(k), []).append((e, a, str(wf.results.figure(e, a, "png"))))
    return out


def _figure_link(experiment: str, analysis: str, path: str) -> str:
    """A link that shows the figure and its caption in the report (Snakemake's own view of a result)."""
    p = json.dumps(path)
    js = (f"app.setView({{content: 'img', contentPath: results[{p}].data_uri, resultPath: {p}, "
          f"navbarMode: 'resultinfo'}}); return false;")
    return (f'<a class="figure-link" href="#" data-path="{html.escape(path)}" onclick="{html.escape(js)}">'
            f"{html.escape(experiment)} / {html.escape(analysis)}</a>")


def landing_html(sentences: Sequence[Mapping[str, Any]], claims=None,
                 figures: Optional[Mapping[int, Sequence[Tuple[str, str, str]]]] = None) -> str:
    """The landing page (an HTML fragment): the verdict counts (tests and controls apart), then one
    sentence per claim with its overall verdict marked and links to the figures behind it."""
    figures = figures or {}
    counts = counts_by_role(claims)
    n_test, n_ctrl = sum(counts[ROLE_TEST].values()), sum(counts[ROLE_CONTROL].values())
    parts = [f"<style>{_LANDING_CSS}{_verdict_css(OVERALL_STYLE)}</style>", '<div id="glance">',
             "<h2>Results at a glance</h2>",
             f'<p id="glance-counts-test"><b>Claim tests</b> ({n_test} rows of the claims table): '
             f"{_badges(counts[ROLE_TEST])}</p>"]
    if n_ctrl:
        parts.append(f'<p id="glance-counts-control"><b>Controls</b> ({n_ctrl} rows, expected to show no material '
                     f"difference; never counted as tests): {_badges(counts[ROLE_CONTROL])}</p>")
    parts.append('<ul id="glance-claims">')
    for s in sentences:
        k = int(s["claim"])
        overall = str(s.get("verdict", NOT_MEASURABLE))
        cls, sym, _, _ = OVERALL_STYLE.get(overall, OVERALL_STYLE[NOT_MEASURABLE])
        links = [_figure_link(e, a, p) for e, a, p in figures.get(k, [])]
        figs = (f'<br><span class="figures">Figures: {", ".join(links)}</span>' if links
                else '<br><span class="figures">No figure of this run tests it.</span>')
        parts.append(f'<li data-claim="{k}"><span class="badge {cls}">{sym} {html.escape(overall)}</span> '
                     f'<span class="sentence">{html.escape(readable(s["sentence"]))}</span>{figs}</li>')
    parts.append("</ul>")
    parts.append("<p>Every row, with its interval, rule, power and reason: <b>Claims</b> in the menu (the claims "
                 "table). Each figure's caption starts with its finding.</p>")
    parts.append("</div>")
    return "\n".join(parts)


@dataclass(frozen=True)
class LandingPage:
    """The landing page of the report, read from the tables step's outputs when the report is made
    (`html`).  It travels as a parameter of the ``tables`` rule (workflow/rules/figures.smk), which
    workflow/report/workflow.rst prints; ``str()`` is one short line (the report lists the rule's
    parameters)."""

    synthesis_json: str
    claims_csv: str
    figures: Tuple[Tuple[int, str, str, str], ...] = ()

    @classmethod
    def of(cls, wf) -> "LandingPage":
        res = wf.results
        figs = tuple((k, e, a, p) for k, items in sorted(claim_figures(wf).items()) for e, a, p in items)
        return cls(str(res.synthesis_json), str(res.claims), figs)

    @property
    def html(self) -> str:
        import pandas as pd

        try:
            sentences = json.loads(Path(self.synthesis_json).read_text(encoding="utf-8"))
            claims = pd.read_csv(self.claims_csv)
        except (OSError, ValueError) as exc:
            return (f'<div id="glance"><h2>Results at a glance</h2><p>Not available yet: {html.escape(str(exc))}. '
                    "Run the workflow to the end (the tables step), then make the report again.</p></div>")
        figures: Dict[int, List[Tuple[str, str, str]]] = {}
        for k, e, a, p in self.figures:
            figures.setdefault(int(k), []).append((e, a, p))
        return landing_html(sentences, claims, figures)

    def __str__(self) -> str:
        return f"the report's landing page, from {self.synthesis_json} and {self.claims_csv}"
