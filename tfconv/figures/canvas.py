"""The figure model: panels of marks (lines, bands, points) plus the numbers drawn, without matplotlib.

An analysis's numbers function draws on a `Canvas` as it would on matplotlib axes (the same small
API: ``plot``, ``fill_between``, ``axhline``, ``axvline``, ``text``, ``set`` ...), but nothing is rendered: every
call is kept as a `Mark` with its data.  `tfconv.figures.render` replays the marks with matplotlib
in the shared style; tests read the marks to check what a figure shows (every series has finite
points, every panel has data) without parsing a PNG.

Paper sizes (`FIGURE_WIDTH`, the one place that owns them): every figure is either a single-column
figure (2.7 in wide) or a double-column one (5.5 in, the NeurIPS text width); a multi-panel figure is a
grid of panels in that width (``ncols`` per row), never a tall stack, and its legends sit below the
panels (``legend="panel"``) or once below the grid (``legend="figure"``, labels shared by the panels).

Marks carry a ``role`` that says what a line is: "data" (measured), "fit" (a fitted line: it must have
a legend entry saying so), "predicted" (the kernel's prediction or a bound), "reference" (a reference
line or band), "key" (an empty mark that only makes a legend entry).  Tests read roles; the renderer
ignores them.

The canvas also collects the tidy CSV rows of exactly the numbers drawn (`Canvas.record`) and the
fitted slopes (`Canvas.add_slope`).  CSV columns: figure, panel, quantity, x_name, x, y, stat,
n_samples, width, scaling, init, seed, status.  ``stat`` is one of mean / low / high (seed band),
run (one run's value), diverged_run, fit (the fitted line), predicted (theory), reference (a
reference line) or censored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

#: Figure widths in inches: NeurIPS text width 5.5 in (a double-column figure), a single column ~2.7 in.
FIGURE_WIDTH = {"single": 2.7, "double": 5.5}
#: The roles of a mark (see the module docstring).
ROLES = ("data", "fit", "predicted", "reference", "key")
#: Markers that fill an area (a later one of at least the same size hides an earlier one at the same point).
FILLED_MARKERS = frozenset("o s ^ v < > D d p h H 8 * P X".split())

CSV_COLUMNS = ["figure", "panel", "quantity", "x_name", "x", "y", "stat",
               "n_samples", "width", "scaling", "init", "seed", "status"]
SLOPE_COLUMNS = ["figure", "quantity", "group", "slope", "ci_low", "ci_high", "r2", "n"]


@dataclass
class Mark:
    """One drawing call: kind is plot, errorbar, fill_between, axhline, axvline, arrow or text; data arrays in
    `data`; `role` says what it shows (`ROLES`)."""

    kind: str
    data: Tuple[Any, ...]
    style: Dict[str, Any] = field(default_factory=dict)
    role: str = "data"

    @property
    def label(self) -> Optional[str]:
        lab = self.style.get("label")
        return None if lab is None or str(lab).startswith("_") else str(lab)

    def points(self) -> np.ndarray:
        """The (x, y) points of a plot or band mark, shape (n, 2) (band: both edges)."""
        if self.kind in ("plot", "errorbar"):
            x, y = self.data[:2]
            return np.column_stack([np.broadcast_to(x, np.shape(y)).ravel(), np.ravel(y)]) if np.size(y) else np.zeros((0, 2))
        if self.kind == "fill_between":
            x, lo, hi = self.data
            return np.column_stack([np.concatenate([x, x]), np.concatenate([lo, hi])]) if np.size(x) else np.zeros((0, 2))
        return np.zeros((0, 2))

    def visible_points(self) -> int:
        """How many points of a plot mark are visible: with a marker, every finite point; a line
        without markers shows only segments between two consecutive finite points."""
        if self.kind not in ("plot", "errorbar"):
            return 0
        x, y = (np.asarray(v, dtype=float).ravel() for v in np.broadcast_arrays(*self.data[:2]))
        fin = np.isfinite(x) & np.isfinite(y)
        if self.marker is not None:
            return int(fin.sum())
        if self.style.get("ls", self.style.get("linestyle", "-")) in ("none", "None", "", " "):
            return 0
        pairs = fin[1:] & fin[:-1]
        return int(pairs.sum() + pairs.any())

    @property
    def marker(self) -> Optional[str]:
        """The marker drawn at each point (None: a line only)."""
        m = self.style.get("marker")
        if self.kind == "errorbar":
            m = self.style.get("fmt", m) if m is None else m
        return None if m in (None, "", "none", "None", " ") else str(m)

    @property
    def marker_size(self) -> float:
        return float(self.style.get("ms", self.style.get("markersize", 4.0)))

    @property
    def hollow(self) -> bool:
        return str(self.style.get("mfc", self.style.get("markerfacecolor", ""))).lower() == "none"


class Panel:
    """One panel: the marks drawn on it and its axis properties (a recording stand-in for an Axes)."""

    def __init__(self):
        self.marks: List[Mark] = []
        self.props: Dict[str, Any] = {}
        self.visible = True

    # drawing ------------------------------------------------------------------------------------
    def plot(self, x, y, role: str = "data", **style) -> None:
        self.marks.append(Mark("plot", (np.asarray(x, dtype=float), np.asarray(y, dtype=float)), dict(style),
                               _role(role)))

    def errorbar(self, x, y, low, high, role: str = "data", **style) -> None:
        """Points with vertical interval bars from `low` to `high` (NaN: no bar)."""
        self.marks.append(Mark("errorbar", tuple(np.asarray(v, dtype=float) for v in (x, y, low, high)), dict(style),
                               _role(role)))

    def fill_between(self, x, low, high, role: str = "data", **style) -> None:
        self.marks.append(Mark("fill_between", (np.asarray(x, dtype=float), np.asarray(low, dtype=float),
                                                np.asarray(high, dtype=float)), dict(style), _role(role)))

    def axhline(self, y, role: str = "reference", **style) -> None:
        self.marks.append(Mark("axhline", (float(y),), dict(style), _role(role)))

    def axvline(self, x, role: str = "reference", **style) -> None:
        self.marks.append(Mark("axvline", (float(x),), dict(style), _role(role)))

    def arrow(self, x, y, direction: str, length: float = 10.0, **style) -> None:
        """An arrow of `length` points from (x, y) pointing "up" or "down": a value censored by the end
        of a ladder (the true value lies beyond it)."""
        if direction not in ("up", "down"):
            raise ValueError(f"arrow direction must be 'up' or 'down', got {direction!r}")
        self.marks.append(Mark("arrow", (float(x), float(y), direction, float(length)), dict(style), "data"))

    def text(self, x, y, s, **style) -> None:
        self.marks.append(Mark("text", (x, y, s), dict(style)))

    # axis properties ----------------------------------------------------------------------------------
    def set(self, **props) -> None:
        self.props.update(props)

    def set_xlabel(self, s, **kw) -> None:
        self.props["xlabel"] = s
        self.props.update({f"xlabel_{k}": v for k, v in kw.items()})

    def set_ylabel(self, s, **kw) -> None:
        self.props["ylabel"] = s
        self.props.update({f"ylabel_{k}": v for k, v in kw.items()})

    def set_title(self, s, **kw) -> None:
        self.props["title"] = s
        self.props.update({f"title_{k}": v for k, v in kw.items()})

    def set_xscale(self, scale: str) -> None:
        self.props["xscale"] = scale

    def set_yscale(self, scale: str) -> None:
        self.props["yscale"] = scale

    def set_xticks(self, ticks, labels=None) -> None:
        self.props["xticks"] = [float(t) for t in ticks]
        if labels is not None:
            self.props["xticklabels"] = list(labels)

    def set_xticklabels(self, labels) -> None:
        self.props["xticklabels"] = list(labels)

    def set_yticks(self, ticks) -> None:
        self.props["yticks"] = [float(t) for t in ticks]

    def set_ylim(self, low, high) -> None:
        self.props["ylim"] = (float(low), float(high))

    def set_visible(self, visible: bool) -> None:
        self.visible = bool(visible)

    def get_visible(self) -> bool:
        return self.visible

    # reading ------------------------------------------------------------------------------------
    def series(self) -> List[Mark]:
        """The data marks (lines, points, bands) of the panel."""
        return [m for m in self.marks if m.kind in ("plot", "errorbar", "fill_between")]

    def labels(self) -> List[str]:
        return [m.label for m in self.marks if m.label]


def _role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"mark role must be one of {list(ROLES)}, got {role!r}")
    return role


def default_ncols(n_panels: int) -> int:
    """Columns of the grid of `n_panels` panels: one row up to 3, then 2 x 2, 2 x 3, 2 x 4."""
    return n_panels if n_panels <= 3 else {4: 2, 5: 3, 6: 3}.get(n_panels, 4)


class Canvas:
    """A figure of ``n_panels`` panels in a grid of ``ncols`` columns and the numbers it draws.

    size: "single" (one column, `FIGURE_WIDTH`) or "double" (the text width); default single for one
    panel, double otherwise.  aspect: panel height / panel width.  legend: "panel" (a legend below each
    panel) or "figure" (one legend below the grid, one entry per label).  ``panel_size`` (older
    callers) only sets the aspect."""

    def __init__(self, analysis: str, n_panels: int = 1, ncols: Optional[int] = None, size: Optional[str] = None,
                 aspect: float = 0.72, legend: str = "panel", panel_size=None):
        self.analysis = analysis
        n_panels = max(1, int(n_panels))
        self.ncols = int(ncols or default_ncols(n_panels))
        self.nrows = int(math.ceil(n_panels / self.ncols))
        self.size = size or ("single" if self.ncols == 1 else "double")
        if self.size not in FIGURE_WIDTH:
            raise ValueError(f"figure size must be one of {list(FIGURE_WIDTH)}, got {self.size!r}")
        if legend not in ("panel", "figure"):
            raise ValueError(f"legend must be 'panel' or 'figure', got {legend!r}")
        self.legend = legend
        self.aspect = float(panel_size[1]) / float(panel_size[0]) if panel_size is not None else float(aspect)
        self.panels: List[Panel] = [Panel() for _ in range(self.nrows * self.ncols)]
        for p in self.panels[n_panels:]:
            p.set_visible(False)
        self.rows: List[Dict[str, Any]] = []
        self.slopes: List[Dict[str, Any]] = []
        self.diverged_drawn = False
        self.band_drawn = False
        self.finding = ""
        self.title = ""

    @property
    def width(self) -> float:
        """The figure's width in inches (its size preset)."""
        return FIGURE_WIDTH[self.size]

    @property
    def panel_size(self) -> Tuple[float, float]:
        """(width, height) of one panel's axes area in inches."""
        w = self.width / self.ncols
        return w, w * self.aspect

    def ax(self, i: int) -> Panel:
        return self.panels[i]

    @property
    def axes(self) -> List[Panel]:
        return self.panels

    def record(self, panel: str, quantity: str, x_name: str, xs, ys, stat: str, **group) -> None:
        """Add CSV rows: one per (x, y) point drawn (a scalar x is repeated over ys)."""
        xs = np.atleast_1d(np.asarray(xs, dtype=float))
        ys = np.atleast_1d(np.asarray(ys, dtype=float))
        if xs.size == 1 and ys.size > 1:
            xs = np.repeat(xs, ys.size)
        for x, y in zip(xs, ys):
            row = dict(figure=self.analysis, panel=panel, quantity=quantity, x_name=x_name,
                       x=float(x), y=float(y), stat=stat)
            row.update({k: v for k, v in group.items() if v is not None})
            self.rows.append(row)

    def add_slope(self, quantity: str, group: str, fit: Mapping[str, Any]) -> None:
        self.slopes.append(dict(figure=self.analysis, quantity=quantity, group=group,
                                slope=float(fit["slope"]), ci_low=float(fit["ci_low"]),
                                ci_high=float(fit["ci_high"]), r2=float(fit["r2"]), n=int(fit["n"])))

    def table(self):
        """The CSV of the numbers drawn, columns `CSV_COLUMNS` first."""
        import pandas as pd

        df = pd.DataFrame(self.rows)
        for c in CSV_COLUMNS:
            if c not in df.columns:
                df[c] = np.nan
        return df[CSV_COLUMNS + [c for c in df.columns if c not in CSV_COLUMNS]]

    def visible_panels(self) -> List[Panel]:
        return [p for p in self.panels if p.visible]
