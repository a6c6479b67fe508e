"""The GD search's figure: agreement with ICL along each GD setting's training, one panel per (model, dataset, N).

Kept apart from `icl_gd.sweep.plots` (the other report figures) because it has its own layout: a grid of panels
plus a legend column sized to the number of settings, and a look per setting that is the same in every panel
(colour: learning rate; marker: optimizer; line style: trained parameters). Pure plotting, Agg backend, in the
shared style of `icl_gd.style`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from icl_gd.style import (  # noqa: E402
    FLOOR_COLOR,
    FLOOR_STYLE,
    LEGEND_SIZE,
    LOG2,
    PANEL_SIZE,
    TITLE_SIZE,
    save,
)

TRAJECTORY_COLS = 2  # trajectory panels per row
LR_CMAP, LR_RANGE = (
    "viridis",
    (0.0, 0.85),
)  # one colour per learning rate, small (dark) to large (light green)
OPTIMIZER_MARKERS = {"sgd": "o", "sgd+m": "s", "adam": "^", "adamw": "D"}
PARAMS_STYLES = ("-", "-.", ":")  # one line style per trained-parameter set (dashed is the floor's)
LEGEND_ROWS = 20  # entries per legend column
CHOSEN_STYLE = {
    "marker": "*",
    "s": 130,
    "facecolor": "gold",
    "edgecolor": "black",
    "linewidth": 0.8,
    "zorder": 5,
}
TRAJECTORY_BAND_ALPHA = 0.1  # lighter than BAND_ALPHA: a panel holds one band per setting
STEP_LINSCALE = (
    0.5  # width of the symlog axis' linear part (steps 0..1), in decades: the untrained point close by
)


def _lr_colors(lrs: list[float]) -> dict[float, object]:
    """A sequential colour per learning rate, in order of size, so that neighbouring rates look alike."""
    cmap = matplotlib.colormaps[LR_CMAP]
    lo, hi = LR_RANGE
    n = len(lrs)
    return {lr: cmap(lo + (hi - lo) * (i / (n - 1) if n > 1 else 0.5)) for i, lr in enumerate(sorted(lrs))}


def _optimizer_key(optimizer: str, momentum: float) -> str:
    return f"{optimizer}+m" if optimizer == "sgd" and momentum and float(momentum) > 0 else str(optimizer)


def _step_ticks(ax: plt.Axes, steps: pd.Series) -> None:
    """log2 axis over optimizer steps (symlog when step 0, the untrained model, is there), ticks at the steps."""
    values = sorted(set(steps.astype(int)))
    if values and min(values) <= 0:
        ax.set_xscale("symlog", base=LOG2, linthresh=1, linscale=STEP_LINSCALE)
    else:
        ax.set_xscale("log", base=LOG2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.set_xlabel("optimizer step (log2 scale; 0 = untrained)")
    ax.margins(x=0.06, y=0.08)  # room for the stars of points chosen at the first or last step


def _setting_styles(curves: pd.DataFrame, settings: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Each GD setting's line, the same in every panel: colour by lr, marker by optimizer, style by params."""
    colors = _lr_colors(sorted(curves["lr"].unique()))
    params = sorted(curves["params"].astype(str).unique())
    styles = {p: PARAMS_STYLES[i % len(PARAMS_STYLES)] for i, p in enumerate(params)}
    return {
        s["setting"]: {
            "color": colors[s["lr"]],
            "marker": OPTIMIZER_MARKERS.get(_optimizer_key(s["optimizer"], s["momentum"]), "o"),
            "linestyle": styles[str(s["params"])],
            "linewidth": 1.2,
            "markersize": 4,
        }
        for _, s in settings.iterrows()
    }


def _trajectory_curves(
    ax: plt.Axes,
    d: pd.DataFrame,
    lines: Mapping[str, dict[str, Any]],
    handles: dict[str, object],
) -> None:
    """One panel's curves, a line per GD setting in legend order with its 95% band where both bounds are finite;
    each setting's first line becomes its legend handle."""
    for setting, style in lines.items():
        g = d[d["setting"] == setting].sort_values("step")
        if g.empty:
            continue
        (line,) = ax.plot(g["step"], g["mean"], label=setting, **style)
        handles.setdefault(setting, line)
        band = g[np.isfinite(g["lo"].astype(float)) & np.isfinite(g["hi"].astype(float))]
        if len(band):
            ax.fill_between(
                band["step"],
                band["lo"],
                band["hi"],
                color=style["color"],
                alpha=TRAJECTORY_BAND_ALPHA,
                linewidth=0,
            )


def _trajectory_legend(ax: plt.Axes, handles: Mapping[str, object], floor_label: str, ncol: int) -> None:
    """The figure's one legend, in its own column: the floor and the chosen points first, then the settings."""
    ax.axis("off")
    names = {"chosen": "chosen point (best of each seed)", "floor": floor_label}
    order = [k for k in ("floor", "chosen") if k in handles] + [k for k in handles if k not in names]
    ax.legend(
        [handles[k] for k in order],
        [names.get(k, k) for k in order],
        loc="upper left",
        fontsize=LEGEND_SIZE,
        ncol=ncol,
        title="GD setting (colour: lr; marker: optimizer; line: params)",
        title_fontsize=LEGEND_SIZE,
        frameon=False,
    )


def gd_trajectory(
    curves: pd.DataFrame,
    chosen: pd.DataFrame,
    floors: Mapping[str, float],
    titles: list[str],
    ylabels: Mapping[str, str],
    path: Path,
    floor_label: str,
) -> Path:
    """Agreement with ICL on the selection queries against the optimizer step, one curve per GD setting (colour:
    learning rate; marker: optimizer; line style: trained parameters) with its 95% band over seeds, one panel per
    title; the chosen points starred; the ICL-order floor (test queries) dashed. One legend for every panel.

    curves: columns [panel, setting, optimizer, momentum, lr, params, step, mean, lo, hi]; chosen: [panel, step,
    select_value]; floors: panel -> floor value; ylabels: panel -> y label.
    """
    n = len(titles)
    n_cols = min(n, TRAJECTORY_COLS)
    n_rows = -(-n // n_cols)
    settings = curves.drop_duplicates("setting").sort_values(["params", "optimizer", "momentum", "lr"])
    legend_cols = max(1, -(-(len(settings) + 2) // LEGEND_ROWS))
    legend_width = 2.3 * legend_cols
    fig = plt.figure(figsize=(PANEL_SIZE[0] * n_cols + legend_width, PANEL_SIZE[1] * max(n_rows, 1.4)))
    grid = fig.add_gridspec(n_rows, n_cols + 1, width_ratios=[PANEL_SIZE[0]] * n_cols + [legend_width])
    fig.suptitle(
        "GD given its best chance: agreement with ICL along training (selection queries)",
        fontsize=TITLE_SIZE + 1,
    )
    lines = _setting_styles(curves, settings)
    handles: dict[str, object] = {}
    for i, title in enumerate(titles):
        ax = fig.add_subplot(grid[i // n_cols, i % n_cols])
        d = curves[curves["panel"] == title]
        _trajectory_curves(ax, d, lines, handles)
        c = chosen[chosen["panel"] == title]
        if len(c):
            handles.setdefault("chosen", ax.scatter(c["step"], c["select_value"], **CHOSEN_STYLE))
        if title in floors:
            handles.setdefault("floor", ax.axhline(floors[title], color=FLOOR_COLOR, **FLOOR_STYLE))
        _step_ticks(ax, d["step"] if len(d) else curves["step"])
        ax.set_ylabel(ylabels.get(title, "agreement with ICL"))
        ax.set_title(title, fontsize=TITLE_SIZE)
        ax.grid(alpha=0.3, linewidth=0.5)
    _trajectory_legend(fig.add_subplot(grid[:, -1]), handles, floor_label, legend_cols)
    return save(fig, path)
