"""The figure style both reports share: line styles, sizes, one colour per method, and the one figure writer.

Used by the language-model report's figures (icl_gd/sweep) and the linear-regression lab's (icl_gd/linreg), so a
method keeps its colour everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from icl_gd import io  # noqa: E402

MAIN_STYLE = {"marker": "o", "linestyle": "-", "linewidth": 1.5, "markersize": 4}
FLOOR_STYLE = {"marker": None, "linestyle": "--", "linewidth": 1.2}
BASELINE_STYLE = {"marker": None, "linestyle": ":", "linewidth": 1.4}
STYLES = {"main": MAIN_STYLE, "floor": FLOOR_STYLE, "baseline": BASELINE_STYLE}
FLOOR_COLOR = "0.35"
BAND_ALPHA = 0.2
PANEL_SIZE = (4.8, 3.6)  # inches per subplot
DPI = 120
LEGEND_SIZE = 7
TITLE_SIZE = 10
BOX_LABEL_ROTATION = 30
LOG2 = 2
CAPSIZE = 3  # error-bar caps of a curve with a single point, where no band can be drawn
UNIT_RANGE = (-0.02, 1.02)  # y limits of a quantity in [0, 1], with a margin for markers on the bounds
BIG_CYCLE = "tab20"  # colours when there are more lines than the default cycle has


def save(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write (atomically, in the format of the path's suffix, at DPI) and close a figure; returns the path."""
    fig.tight_layout()
    try:
        io.write_figure(path, fig, DPI)
    finally:
        plt.close(fig)
    return path


def colors(keys: list[str]) -> dict[str, Any]:
    """One distinct colour per key: the default cycle, or tab20 when there are more keys than it has."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(keys) > len(cycle):
        cycle = list(matplotlib.colormaps[BIG_CYCLE].colors)
    return {k: cycle[i % len(cycle)] for i, k in enumerate(keys)}
