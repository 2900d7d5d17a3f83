"""The figure model: panels of marks (lines, bands, points) plus the numbers drawn, without matplotlib.

An analysis's numbers function draws on a `Canvas` as it would on matplotlib axes (the same small
API: ``plot``, ``fill_between``, ``axhline``, ``text``, ``set`` ...), but nothing is rendered: every
call is kept as a `Mark` with its data.  `tfconv.figures.render` replays the marks with matplotlib
in the shared style; tests read the marks to check what a figure shows (every series has finite
points, every panel has data) without parsing a PNG.

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

CSV_COLUMNS = ["figure", "panel", "quantity", "x_name", "x", "y", "stat",
               "n_samples", "width", "scaling", "init", "seed", "status"]
SLOPE_COLUMNS = ["figure", "quantity", "group", "slope", "ci_low", "ci_high", "r2", "n"]


@dataclass
class Mark:
    """One drawing call: kind is plot, fill_between, axhline or text; data arrays in `data`."""

    kind: str
    data: Tuple[Any, ...]
    style: Dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> Optional[str]:
        lab = self.style.get("label")
        return None if lab is None or str(lab).startswith("_") else str(lab)

    def points(self) -> np.ndarray:
        """The (x, y) points of a plot or band mark, shape (n, 2) (band: both edges)."""
        if self.kind == "plot":
            x, y = self.data
            return np.column_stack([np.broadcast_to(x, np.shape(y)).ravel(), np.ravel(y)]) if np.size(y) else np.zeros((0, 2))
        if self.kind == "fill_between":
            x, lo, hi = self.data
            return np.column_stack([np.concatenate([x, x]), np.concatenate([lo, hi])]) if np.size(x) else np.zeros((0, 2))
        return np.zeros((0, 2))

    def visible_points(self) -> int:
        """How many points of a plot mark are visible: with a marker, every finite point; a line
        without markers shows only segments between two consecutive finite points."""
        if self.kind != "plot":
            return 0
        x, y = (np.asarray(v, dtype=float).ravel() for v in np.broadcast_arrays(*self.data))
        fin = np.isfinite(x) & np.isfinite(y)
        if self.style.get("marker") not in (None, "", "none", "None"):
            return int(fin.sum())
        if self.style.get("ls", self.style.get("linestyle", "-")) in ("none", "None", "", " "):
            return 0
        pairs = fin[1:] & fin[:-1]
        return int(pairs.sum() + pairs.any())


class Panel:
    """One panel: the marks drawn on it and its axis properties (a recording stand-in for an Axes)."""

    def __init__(self):
        self.marks: List[Mark] = []
        self.props: Dict[str, Any] = {}
        self.visible = True

    # drawing ------------------------------------------------------------------------------------
    def plot(self, x, y, **style) -> None:
        self.marks.append(Mark("plot", (np.asarray(x, dtype=float), np.asarray(y, dtype=float)), dict(style)))

    def fill_between(self, x, low, high, **style) -> None:
        self.marks.append(Mark("fill_between", (np.asarray(x, dtype=float), np.asarray(low, dtype=float),
                                                np.asarray(high, dtype=float)), dict(style)))

    def axhline(self, y, **style) -> None:
        self.marks.append(Mark("axhline", (float(y),), dict(style)))

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
        return [m for m in self.marks if m.kind in ("plot", "fill_between")]

    def labels(self) -> List[str]:
        return [m.label for m in self.marks if m.label]


class Canvas:
    """A figure of ``n_panels`` panels (``ncols`` per row) and the numbers it draws."""

    def __init__(self, analysis: str, n_panels: int = 1, ncols: Optional[int] = None, panel_size=(4.6, 3.6)):
        self.analysis = analysis
        n_panels = max(1, int(n_panels))
        self.ncols = ncols or min(n_panels, 3)
        self.nrows = int(math.ceil(n_panels / self.ncols))
        self.panel_size = tuple(panel_size)
        self.panels: List[Panel] = [Panel() for _ in range(self.nrows * self.ncols)]
        for p in self.panels[n_panels:]:
            p.set_visible(False)
        self.rows: List[Dict[str, Any]] = []
        self.slopes: List[Dict[str, Any]] = []
        self.diverged_drawn = False
        self.band_drawn = False
        self.finding = ""
        self.title = ""

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
