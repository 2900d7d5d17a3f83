"""Render a `tfconv.figures.canvas.Canvas` with matplotlib (the only module that imports it)."""
from __future__ import annotations

import textwrap
from pathlib import Path

from .canvas import Canvas, Panel

DIVERGED_NOTE = "diverged run (dashed / x, excluded from fits)"


def _apply(ax, panel: Panel) -> None:
    import matplotlib.ticker

    for m in panel.marks:
        if m.kind == "plot":
            ax.plot(m.data[0], m.data[1], **m.style)
        elif m.kind == "fill_between":
            ax.fill_between(*m.data, **m.style)
        elif m.kind == "axhline":
            ax.axhline(m.data[0], **m.style)
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
    if "yticks" in p:
        ax.set_yticks(p["yticks"])
    if "ylim" in p:
        ax.set_ylim(*p["ylim"])


def render(canvas: Canvas, title: str, out_png) -> None:
    """Draw every panel, the legends and the title; write the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w, h = canvas.panel_size
    fig, axes = plt.subplots(canvas.nrows, canvas.ncols, figsize=(w * canvas.ncols, h * canvas.nrows + 0.9),
                             squeeze=False)
    axes = list(axes.ravel())
    try:
        first = True
        for ax, panel in zip(axes, canvas.panels):
            if not panel.visible:
                ax.set_visible(False)
                continue
            _apply(ax, panel)
            if first and canvas.diverged_drawn:
                ax.plot([], [], color="grey", ls="--", marker="x", label=DIVERGED_NOTE)
            first = False
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
        chars = max(60, int(fig.get_figwidth() * 13))  # about 13 characters per inch at 9 pt
        fig.suptitle("\n".join(textwrap.wrap(title, chars)), fontsize=9)
        fig.tight_layout()
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_png, dpi=110)
    finally:
        plt.close(fig)
