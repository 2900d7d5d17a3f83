"""Figures: the figure model (`canvas`: panels of marks plus the numbers drawn) and the matplotlib
renderer (`render`, the only module that imports matplotlib.pyplot)."""
from .canvas import CSV_COLUMNS, FIGURE_WIDTH, SLOPE_COLUMNS, Canvas, Mark, Panel

__all__ = ["CSV_COLUMNS", "FIGURE_WIDTH", "SLOPE_COLUMNS", "Canvas", "Mark", "Panel"]
