"""Render a `tfconv.figures.canvas.Canvas` with matplotlib in the one shared paper style (the only module
that imports pyplot).

Sizes: the canvas's preset (`tfconv.figures.canvas.FIGURE_WIDTH`: a single column 2.7 in, double column
5.5 in, the NeurIPS text width) fixes the figure's width; its height follows from the grid, the panels'
aspect and the legends.  Fonts are sized for print at that width (7 pt text, 6.5 pt ticks and legends),
so a figure placed at its size reads like the paper's text.  A short title on top (the finding goes to
the caption), legends outside the data (below each panel, or once below the grid), log axes set by the
analyses, mathtext labels, a legend entry for the seed band and for diverged runs, PNG (`PNG_DPI`) and
PDF side by side.

`render` returns what it laid out (the saved size and, per panel, where its axes, title, legend and data
points are, in inches) so that tests can check that nothing covers the data.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .canvas import FIGURE_WIDTH, Canvas, Panel

DIVERGED_NOTE = "diverged run (dashed / x, not fitted)"
BAND_NOTE = "seed range (min to max)"
PNG_DPI = 200

#: the one style of every figure (font sizes in points, for a figure printed at its preset width)
STYLE = {
    "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6.5,
    "xtick.labelsize": 6.5, "ytick.labelsize": 6.5, "lines.linewidth": 1.0, "lines.markersize": 3.5,
    "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4, "xtick.major.size": 2.5, "ytick.major.size": 2.5, "xtick.minor.size": 1.5,
    "ytick.minor.size": 1.5, "axes.titlepad": 3.0, "axes.labelpad": 2.0,
    "axes.grid": True, "grid.alpha": 0.25, "grid.linewidth": 0.4, "legend.frameon": False,
    "legend.handlelength": 1.8, "legend.handletextpad": 0.5, "legend.columnspacing": 1.0,
    "legend.labelspacing": 0.25, "legend.borderaxespad": 0.0,
    "figure.titlesize": 8, "mathtext.fontset": "dejavusans", "pdf.fonttype": 42,
    "figure.constrained_layout.h_pad": 0.03, "figure.constrained_layout.w_pad": 0.03,
}
_PT = 1.0 / 72.0  # inches per point
_BELOW_AXES_IN = 0.30  # tick labels and x label below an axes, where a panel's legend starts


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------

def _text_width_in(s: str, size_pt: float) -> float:
    """A generous estimate of a text's rendered width (mathtext markup dropped)."""
    plain = re.sub(r"\\[a-zA-Z]+", "x", str(s)).replace("$", "").replace("{", "").replace("}", "").replace("^", "")
    plain = plain.replace("_", "")
    return 0.56 * size_pt * _PT * len(plain)


def legend_columns(labels: List[str], width_in: float) -> int:
    """How many legend columns fit in `width_in` (at least 1)."""
    if not labels:
        return 1
    fs = STYLE["legend.fontsize"]
    em = fs * _PT
    entry = max(_text_width_in(lab, fs) for lab in labels) + (STYLE["legend.handlelength"] + STYLE["legend.handletextpad"]
                                                             + STYLE["legend.columnspacing"]) * em
    return int(max(1, min(len(labels), math.floor(width_in / entry))))


def _legend_height_in(n: int, ncol: int) -> float:
    if n == 0:
        return 0.0
    rows = math.ceil(n / max(1, ncol))
    return rows * STYLE["legend.fontsize"] * _PT * (1.0 + STYLE["legend.labelspacing"]) + 0.06


def wrap_title(title: str, width_in: float, size_pt: float) -> str:
    """Break a title into lines that fit `width_in`, never inside $...$ (mathtext)."""
    words, buf, inside = [], "", False
    for ch in str(title):
        if ch == "$":
            inside = not inside
        if ch == " " and not inside:
            words.append(buf)
            buf = ""
        else:
            buf += ch
    words.append(buf)
    lines, line = [], ""
    for w in words:
        cand = f"{line} {w}".strip()
        if line and _text_width_in(cand, size_pt) > width_in:
            lines.append(line)
            line = w
        else:
            line = cand
    lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------

def _apply(ax, panel: Panel) -> None:
    import matplotlib.ticker

    for m in panel.marks:
        if m.kind == "plot":
            ax.plot(m.data[0], m.data[1], **m.style)
        elif m.kind == "errorbar":
            x, y, lo, hi = m.data
            yerr = np.vstack([np.where(np.isfinite(lo), y - lo, 0.0), np.where(np.isfinite(hi), hi - y, 0.0)])
            style = dict(m.style)
            style.setdefault("fmt", style.pop("marker", "o"))
            ax.errorbar(x, y, yerr=np.clip(np.nan_to_num(yerr), 0.0, None), **style)
        elif m.kind == "fill_between":
            ax.fill_between(*m.data, **m.style)
        elif m.kind == "axhline":
            ax.axhline(m.data[0], **m.style)
        elif m.kind == "axvline":
            ax.axvline(m.data[0], **m.style)
        elif m.kind == "arrow":
            x, y, direction, length = m.data
            style = dict(m.style)
            ax.annotate("", xy=(x, y), xytext=(0.0, length if direction == "up" else -length),
                        textcoords="offset points",
                        arrowprops=dict(arrowstyle="<|-", color=style.get("color", "k"), lw=style.get("lw", 0.8),
                                        shrinkA=0.0, shrinkB=style.get("shrink", 3.0), mutation_scale=6))
        elif m.kind == "text":
            x, y, s = m.data
            style = dict(m.style)
            if style.pop("axes_coords", False):
                style["transform"] = ax.transAxes
            ax.text(x, y, s, **style)
    p = dict(panel.props)
    for key in ("xlabel", "ylabel", "title"):
        if key in p:
            kw = {k[len(key) + 1:]: v for k, v in p.items() if k.startswith(key + "_")}
            getattr(ax, f"set_{key}")(p[key], **kw)
    if "xscale" in p:
        ax.set_xscale(p["xscale"])
    if "yscale" in p:
        ax.set_yscale(p["yscale"])
    if "xticks" in p:
        ax.set_xticks(p["xticks"])
        if "xticklabels" in p:
            ax.set_xticklabels(p["xticklabels"])
        if p.get("xscale") == "log":
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if p.get("yformat") == "plain" and p.get("yscale") == "log":  # 1, 2, 5, 10 rather than 2 x 10^0
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
        ax.yaxis.set_minor_formatter(plain)
    if "yticks" in p:
        ax.set_yticks(p["yticks"])
    if "ylim" in p:
        ax.set_ylim(*p["ylim"])


def _notes(canvas: Canvas, ax):
    """The legend entries every figure explains: the seed band and diverged runs."""
    from matplotlib.patches import Patch

    handles, labels = [], []
    if canvas.band_drawn:
        handles.append(Patch(color="grey", alpha=0.25, lw=0))
        labels.append(BAND_NOTE)
    if canvas.diverged_drawn:
        handles.append(ax.plot([], [], color="grey", ls="--", marker="x")[0])
        labels.append(DIVERGED_NOTE)
    return handles, labels


def _layout_height(canvas: Canvas, panel_labels: List[List[str]], figure_labels: List[str], title: str) -> float:
    """The figure height in inches: per row of panels the axes, title, tick labels and the tallest legend;
    the suptitle; the figure legend."""
    pw, ph = canvas.panel_size
    h = 0.0
    for r in range(canvas.nrows):
        leg = 0.0
        for c in range(canvas.ncols):
            labs = panel_labels[r * canvas.ncols + c]
            leg = max(leg, _legend_height_in(len(labs), legend_columns(labs, pw)))
        h += ph + _BELOW_AXES_IN + 0.16 + (leg + 0.04 if leg else 0.0)
    h += 0.2 * (title.count("\n") + 1)
    if figure_labels:
        h += _legend_height_in(len(figure_labels), legend_columns(figure_labels, canvas.width)) + 0.06
    return h


def _bbox_in(artist, renderer, dpi) -> Optional[tuple]:
    if artist is None or not artist.get_visible() or (hasattr(artist, "get_text") and not artist.get_text()):
        return None
    b = artist.get_window_extent(renderer)
    return (b.x0 / dpi, b.y0 / dpi, b.x1 / dpi, b.y1 / dpi)


def render(canvas: Canvas, title: str, out_png, out_pdf: Optional[str] = None) -> Dict[str, Any]:
    """Draw every panel with its legend (below the panel, or once below the grid) and the short title;
    write the PNG (and the PDF).  Returns the layout: {"size_in": (width, height) of the saved figure,
    "dpi", "panels": [{"axes", "title", "legend": (x0, y0, x1, y1) in inches or None, "points": (n, 2)
    inches of every finite data point drawn}], "legend": the figure legend's box or None, "suptitle"}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        title = wrap_title(title, canvas.width - 0.1, STYLE["figure.titlesize"])
        panel_labels = [[lab for lab in p.labels()] if p.visible else [] for p in canvas.panels]
        first = next((i for i, p in enumerate(canvas.panels) if p.visible), 0)
        notes = ([BAND_NOTE] if canvas.band_drawn else []) + ([DIVERGED_NOTE] if canvas.diverged_drawn else [])
        figure_labels: List[str] = []
        if canvas.legend == "figure":
            for labs in panel_labels:
                figure_labels += [lab for lab in labs if lab not in figure_labels]
            figure_labels += notes
            layout_labels = [[] for _ in panel_labels]
        else:
            layout_labels = [labs + (notes if i == first else []) for i, labs in enumerate(panel_labels)]
        height = _layout_height(canvas, layout_labels, figure_labels, title)
        fig, axes = plt.subplots(canvas.nrows, canvas.ncols, figsize=(canvas.width, height), squeeze=False,
                                 layout="constrained")
        axes = list(axes.ravel())
        try:
            fig_handles: Dict[str, Any] = {}
            pw, ph = canvas.panel_size
            for i, (ax, panel) in enumerate(zip(axes, canvas.panels)):
                if not panel.visible:
                    ax.set_visible(False)
                    continue
                _apply(ax, panel)
                handles, labels = ax.get_legend_handles_labels()
                if i == first:
                    h2, l2 = _notes(canvas, ax)
                    handles, labels = handles + h2, labels + l2
                if canvas.legend == "figure":
                    for hd, lab in zip(handles, labels):
                        fig_handles.setdefault(lab, hd)
                elif handles:
                    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -_BELOW_AXES_IN / ph),
                              ncol=legend_columns(labels, pw))
            fig_legend = None
            if fig_handles:
                labs = list(fig_handles)
                fig_legend = fig.legend([fig_handles[k] for k in labs], labs, loc="outside lower center",
                                        ncol=legend_columns(labs, canvas.width))
            sup = fig.suptitle(title)
            _fit_width(fig, canvas.width)
            Path(out_png).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out_png, dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.02)  # legends sit outside the panels
            if out_pdf:
                fig.savefig(out_pdf, bbox_inches="tight", pad_inches=0.02)
            return _layout(fig, axes, canvas, fig_legend, sup)
        finally:
            plt.close(fig)


def _fit_width(fig, width_in: float, tries: int = 3) -> None:
    """Narrow the figure until its tight box (what `savefig(bbox_inches="tight")` writes: labels and
    legends sticking out of the constrained layout included) is at most `width_in` wide."""
    for _ in range(tries):
        fig.canvas.draw()
        excess = fig.get_tightbbox(fig.canvas.get_renderer()).width + 0.04 - width_in
        if excess <= 0.0 or excess >= 0.5 * fig.get_figwidth():  # fits, or nothing sensible to narrow
            return
        fig.set_figwidth(fig.get_figwidth() - excess - 0.01)


def _layout(fig, axes, canvas: Canvas, fig_legend, sup) -> Dict[str, Any]:
    """Where everything ended up, in inches (display coordinates / dpi) of the drawn figure."""
    renderer = fig.canvas.get_renderer()
    dpi = fig.dpi
    tight = fig.get_tightbbox(renderer)
    out: Dict[str, Any] = {"size_in": (tight.width + 0.04, tight.height + 0.04), "dpi": PNG_DPI, "panels": [],
                           "legend": _bbox_in(fig_legend, renderer, dpi), "suptitle": _bbox_in(sup, renderer, dpi)}
    for ax, panel in zip(axes, canvas.panels):
        if not panel.visible:
            continue
        pts = []
        b = ax.get_window_extent(renderer)
        for line in ax.get_lines():
            if line.get_transform() != ax.transData:  # axhline and friends: axes coordinates, not data
                continue
            xy = np.asarray(line.get_xydata(), dtype=float).reshape(-1, 2)
            xy = xy[np.isfinite(xy).all(axis=1)]
            if xy.size:
                with np.errstate(all="ignore"):
                    d = ax.transData.transform(xy)
                d = d[np.isfinite(d).all(axis=1)]
                inside = (d[:, 0] >= b.x0 - 0.5) & (d[:, 0] <= b.x1 + 0.5) & (d[:, 1] >= b.y0 - 0.5) & (d[:, 1] <= b.y1 + 0.5)
                pts.append(d[inside] / dpi)  # what is clipped away is not drawn
        out["panels"].append({"axes": (b.x0 / dpi, b.y0 / dpi, b.x1 / dpi, b.y1 / dpi),
                              "title": _bbox_in(ax.title, renderer, dpi), "legend": _bbox_in(ax.get_legend(), renderer, dpi),
                              "points": np.concatenate(pts) if pts else np.zeros((0, 2))})
    return out


__all__ = ["BAND_NOTE", "DIVERGED_NOTE", "FIGURE_WIDTH", "PNG_DPI", "STYLE", "legend_columns", "render", "wrap_title"]
