"""The claims and slopes tables as small self-contained HTML pages (shown inline by the Snakemake report).

    claims_html(claims_df, confidence)      -> str   # verdict cells marked and coloured
    slopes_html(slopes_df, confidence)      -> str
    round_sig(0.025000000000000022)          -> "0.025"

Numbers are rounded to 3 significant digits, a missing number is an em dash, and each verdict cell
carries its verdict three ways: the text ("consistent", "refuted", "not measurable"), a symbol and a
colour (class ``verdict-consistent`` / ``verdict-refuted`` / ``verdict-not-measurable``), so a
reader without colour vision loses nothing.  The pages need no network and no script.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable, List, Mapping, Optional, Sequence

from ..analyses.claims import CONSISTENT, NOT_MEASURABLE, REFUTED
from ..config import analysis_settings

DASH = "\u2014"

#: verdict -> (css class, symbol, background, text colour)
VERDICT_STYLE = {
    CONSISTENT: ("verdict-consistent", "\u2714", "#d8f3dc", "#1b5e20"),
    REFUTED: ("verdict-refuted", "\u2718", "#ffd6d6", "#8b0000"),
    NOT_MEASURABLE: ("verdict-not-measurable", "\u2013", "#ececec", "#444444"),
}

#: slopes.csv columns in reading order (the remaining ones follow in their own order).
SLOPE_COLUMNS = ["experiment", "analysis", "figure", "quantity", "group", "slope", "ci_low", "ci_high", "r2", "n"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 14px; color: #222;
       margin: 16px; }
h1 { font-size: 18px; margin: 0 0 6px 0; }
p.summary { margin: 4px 0 12px 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #c8c8c8; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.verdict { font-weight: 600; white-space: nowrap; }
td.reason, td.test { max-width: 34em; }
td.claim { max-width: 22em; }
tr.empty td { font-style: italic; color: #555; }
span.badge { display: inline-block; padding: 1px 8px; border-radius: 9px; margin-right: 6px; font-weight: 600; }
"""


def _verdict_css() -> str:
    return "\n".join(f"td.{c}, span.{c} {{ background: {bg}; color: {fg}; }}" for c, _, bg, fg in VERDICT_STYLE.values())


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
        return "\u2014"
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
    return "" if _missing(x) else html.escape(str(x))


def _interval(lo: Any, hi: Any) -> str:
    if _missing(lo) and _missing(hi):
        return "\u2014"
    return f"[{round_sig(lo)}, {round_sig(hi)}]"


def verdict_cell(verdict: Any) -> str:
    """One ``<td>`` of a verdict: text, symbol and colour class."""
    v = "" if _missing(verdict) else str(verdict)
    cls, sym, _, _ = VERDICT_STYLE.get(v, ("verdict-other", "?", "", ""))
    return f'<td class="verdict {cls}" data-verdict="{html.escape(v)}">{sym} {html.escape(v)}</td>'


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}{_verdict_css()}\n</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _table(table_id: str, header: Sequence[str], rows: Iterable[str], n_cols: int, empty: str) -> str:
    rows = list(rows)
    if not rows:
        rows = [f'<tr class="empty"><td colspan="{n_cols}">{html.escape(empty)}</td></tr>']
    head = "".join(f"<th>{h}</th>" for h in header)
    return f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody>\n</table>"


def _percent(confidence: Optional[float]) -> str:
    """The interval's level as a column header shows it ("95%"); None: the schema's default level."""
    return f"{(confidence_of(None) if confidence is None else confidence) * 100:.3g}%"


def _records(df) -> List[dict]:
    return [] if df is None else df.to_dict("records")


def claims_html(claims, confidence: Optional[float] = None) -> str:
    """The claims table (the columns of `tfconv.analyses.claims.COLUMNS`, plus `statement`) as HTML."""
    recs = _records(claims)
    counts = {v: sum(str(r.get("verdict")) == v for r in recs) for v in VERDICT_STYLE}
    badges = " ".join(
        f'<span class="badge {VERDICT_STYLE[v][0]}" data-count="{counts[v]}">{VERDICT_STYLE[v][1]} {counts[v]} {v}</span>'
        for v in VERDICT_STYLE)
    rows = []
    for r in recs:
        claim = _esc(r.get("claim"))
        statement = _esc(r.get("statement"))
        rows.append(
            f'<tr data-claim="{claim}">'
            f'<td class="claim"><b>{claim}</b>{": " + statement if statement else ""}</td>'
            f'<td>{_esc(r.get("experiment")) or DASH}</td>'
            f'<td class="test">{_esc(r.get("test"))}</td>'
            f'<td class="num">{round_sig(r.get("value"))}</td>'
            f'<td class="num">{_interval(r.get("ci_low"), r.get("ci_high"))}</td>'
            f'<td class="test">{_esc(r.get("threshold"))}</td>'
            f'{verdict_cell(r.get("verdict"))}'
            f'<td class="reason">{_esc(r.get("reason"))}</td></tr>')
    pct = _percent(confidence)
    header = ["Claim", "Experiment", "Test", "Value", f"{pct} interval", "Rule", "Verdict", "Why"]
    body = (f"<h1>Claims of the paper, tested</h1>\n<p class=\"summary\">{len(recs)} rows: {badges}</p>\n"
            + _table("claims", header, rows, len(header), "no claim rows (no experiment was run)"))
    return _page("Claims table", body)


def slopes_html(slopes, confidence: Optional[float] = None) -> str:
    """The slopes table (one row per fitted log-log slope) as HTML; an explanatory row when empty."""
    recs = _records(slopes)
    rows = []
    for r in recs:
        fig = r.get("figure") if not _missing(r.get("figure")) else r.get("analysis")
        rows.append(
            "<tr>"
            f'<td>{_esc(r.get("experiment"))}</td><td>{_esc(fig)}</td><td>{_esc(r.get("quantity"))}</td>'
            f'<td>{_esc(r.get("group"))}</td><td class="num">{round_sig(r.get("slope"))}</td>'
            f'<td class="num">{_interval(r.get("ci_low"), r.get("ci_high"))}</td>'
            f'<td class="num">{round_sig(r.get("r2"))}</td><td class="num">{round_sig(r.get("n"))}</td></tr>')
    pct = _percent(confidence)
    header = ["Experiment", "Figure", "Quantity (y vs x)", "Group", "Slope", f"{pct} interval", "R<sup>2</sup>", "n"]
    body = (f"<h1>Fitted log-log slopes</h1>\n<p class=\"summary\">{len(recs)} slopes</p>\n"
            + _table("slopes", header, rows, len(header),
                     "no slope was fitted: a slope needs at least 3 non-diverged runs with positive values "
                     "over at least 2 values of x (e.g. 3 or more widths)"))
    return _page("Slopes table", body)


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
    import os
    from pathlib import Path

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)


def confidence_of(settings: Optional[Mapping[str, Any]]) -> float:
    """The confidence level of the tables: the config's ``analysis.confidence`` (its schema default when unset)."""
    return float(analysis_settings(settings)["confidence"])
