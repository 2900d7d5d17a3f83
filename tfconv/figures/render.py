"""Render a `tfconv.figures.canvas.Canvas` with matplotlib in the one shared style (the only module that
imports pyplot).

The style: a short title (the finding goes to the caption), legends under each panel (outside the
data), log axes set by the analyses, mathtext labels, a legend entry for the seed band and for diverged
runs, PNG (150 dpi) and PDF side by side.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .canvas import Canvas, Panel

DIVERGED_NOTE = "diverged run (dashed / x, not fitted)"
BAND_NOTE = "seed range (min to max)"

#: the one style of every figure
STYLE = {
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 7.5,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "lines.linewidth": 1.4, "lines.markersize": 4,
    "axes.grid": True, "grid.alpha": 0.25, "grid.linewidth": 0.5, "legend.frameon": False,
    "figure.titlesize": 10, "mathtext.fontset": "dejavusans", "pdf.fonttype": 42,
}


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


def render(canvas: Canvas, title: str, out_png, out_pdf: Optional[str] = None) -> None:
    """Draw every panel with its legend below it and the short title; write the PNG (and the PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    w, h = canvas.panel_size
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(canvas.nrows, canvas.ncols, figsize=(w * canvas.ncols, (h + 1.1) * canvas.nrows + 0.5),
                                 squeeze=False, layout="constrained")
        axes = list(axes.ravel())
        try:
            first = True
            for ax, panel in zip(axes, canvas.panels):
                if not panel.visible:
                    ax.set_visible(False)
                    continue
                _apply(ax, panel)
                handles, labels = ax.get_legend_handles_labels()
                if first:
                    if canvas.band_drawn:
                        handles.append(Patch(color="grey", alpha=0.25, lw=0))
                        labels.append(BAND_NOTE)
                    if canvas.diverged_drawn:
                        handles.append(ax.plot([], [], color="grey", ls="--", marker="x")[0])
                        labels.append(DIVERGED_NOTE)
                    first = False
                if handles:
                    ncol = 2 if max(len(str(lab)) for lab in labels) <= 28 else 1
                    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol,
                              borderaxespad=0.0, handlelength=2.2)
            fig.suptitle(title)
            Path(out_png).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out_png, dpi=150, bbox_inches="tight")  # legends sit outside the panels
            if out_pdf:
                fig.savefig(out_pdf, bbox_inches="tight")
        finally:
            plt.close(fig)
