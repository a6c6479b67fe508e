"""The figure style both reports share: sizes, fonts, line styles, one fixed colour and marker per method and per
method pair, the legend outside the data, and the one figure writer (PNG and, beside it, a vector PDF).

Used by the language-model report's figures (icl_gd/sweep) and the linear-regression lab's (icl_gd/linreg). A
colour never follows a figure's sorted labels: a method keeps its colour in every figure (ICL blue, GD vermillion,
zero-shot green, ...; the Okabe-Ito colour-blind-safe palette), a pair "icl vs X" takes X's colour and marker, and
any other label (a method variant such as "gd(lr=0.001)", a grid point of the lab) a colour fixed by its name.
"""

from __future__ import annotations

import hashlib
import logging
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from icl_gd import io  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# Sizes and fonts: readable at a paper's column width (a panel is PANEL_SIZE inches; fonts in points)

PANEL_SIZE = (4.8, 3.6)  # inches per subplot
DPI = 200  # of the PNG; the PDF beside it is vector
FONT_SIZE = 10
LABEL_SIZE = 10
TICK_SIZE = 9
LEGEND_SIZE = 9
TITLE_SIZE = 11
TITLE_CHARS_PER_INCH = 9  # a figure title wraps at this many characters per inch of the figure's width
MARKER_SIZE = 6
LINE_WIDTH = 1.6
RC = {
    "font.size": FONT_SIZE,
    "axes.labelsize": LABEL_SIZE,
    "axes.titlesize": TITLE_SIZE,
    "xtick.labelsize": TICK_SIZE,
    "ytick.labelsize": TICK_SIZE,
    "legend.fontsize": LEGEND_SIZE,
    "figure.titlesize": TITLE_SIZE + 1,
    "lines.markersize": MARKER_SIZE,
    "lines.linewidth": LINE_WIDTH,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text (editable, searchable), as journals ask
    "svg.fonttype": "none",
}
matplotlib.rcParams.update(RC)
# the PDF backend subsets fonts through fontTools, which logs every table it prunes at INFO: not the user's business
logging.getLogger("fontTools").setLevel(logging.WARNING)

# ---------------------------------------------------------------------------------------------------------
# Line styles: every style draws markers, so that a curve of a single point (one demo count) still shows

MAIN_STYLE = {"marker": "o", "linestyle": "-", "linewidth": LINE_WIDTH, "markersize": MARKER_SIZE}
FLOOR_STYLE = {"marker": "x", "linestyle": "--", "linewidth": 1.3, "markersize": MARKER_SIZE}
BASELINE_STYLE = {"marker": "v", "linestyle": ":", "linewidth": 1.4, "markersize": MARKER_SIZE - 1}
CONTROL_STYLE = {"linestyle": ":", "fillstyle": "none"}  # a shuffled-label control: its pair's colour, hollow
STYLES = {"main": MAIN_STYLE, "floor": FLOOR_STYLE, "baseline": BASELINE_STYLE}
FLOOR_COLOR = "0.35"  # ICL against ICL in another order: the noise floor every verdict tests against
BAND_ALPHA = 0.2
BOX_LABEL_ROTATION = 30
LOG2 = 2
CAPSIZE = 3  # error-bar caps of a curve with a single point, where no band can be drawn
UNIT_RANGE = (-0.02, 1.02)  # y limits of a quantity in [0, 1], with a margin for markers on the bounds
LEGEND_PAD = 0.2  # inches between the panels and a legend right of them
LEGEND_ROWS = 18  # entries per legend column, beyond which the legend gets another column

# ---------------------------------------------------------------------------------------------------------
# Fixed colours and markers

OKABE_ITO = {
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "green": "#009E73",
    "purple": "#CC79A7",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}
METHOD_COLORS = {
    "icl": OKABE_ITO["blue"],
    "gd": OKABE_ITO["vermillion"],
    "zeroshot": OKABE_ITO["green"],
    "lora": OKABE_ITO["purple"],
    "gd_best": OKABE_ITO["orange"],
    "gd_search": OKABE_ITO["orange"],
    "train": OKABE_ITO["sky"],
}
METHOD_MARKERS = {
    "icl": "o",
    "gd": "s",
    "zeroshot": "^",
    "lora": "D",
    "gd_best": "P",
    "gd_search": "P",
    "train": "v",
}
# the linear-regression lab's predictors and weights, and the matrices of a sparsity figure
NAMED_COLORS = {
    "trained": OKABE_ITO["blue"],
    "construction": OKABE_ITO["vermillion"],
    "pgd_optimal": OKABE_ITO["green"],
    "gd_1step": OKABE_ITO["orange"],
    "ridge": OKABE_ITO["purple"],
    "pretrained": OKABE_ITO["sky"],
    "q_proj": OKABE_ITO["blue"],
    "k_proj": OKABE_ITO["vermillion"],
    "v_proj": OKABE_ITO["green"],
    "o_proj": OKABE_ITO["purple"],
}
# colours of any other label, picked by a hash of its name: none close to a method's, nor the floor's grey
EXTRA_COLORS = ("#9467BD", "#8C564B", "#E377C2", "#BCBD22", "#17BECF", "#8B0000", "#B8860B", "#2E8B57")
EXTRA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
PAIR = re.compile(r"^(?P<a>\S+) vs (?P<b>\S+)")
REFERENCE = "icl"  # the method every pair is measured against


def _hashed(label: str, choices: Sequence[Any], taken: Iterable[Any] = ()) -> Any:
    """A choice fixed by the label's name (the same in every figure); the next free one where it is taken."""
    start = int(hashlib.md5(label.encode()).hexdigest(), 16) % len(choices)
    used = set(taken)
    for i in range(len(choices)):
        c = choices[(start + i) % len(choices)]
        if c not in used:
            return c
    return choices[start]


def base_method(label: str) -> str:
    """A method label's method: "gd(lr=0.001)" -> "gd"."""
    return str(label).split("(", 1)[0]


def method_style(label: str) -> dict[str, Any]:
    """{color, marker} of a method label: the method's own for "gd", a colour fixed by the name for "gd(lr=...)"."""
    label = str(label)
    if label in METHOD_COLORS:
        return {"color": METHOD_COLORS[label], "marker": METHOD_MARKERS[label]}
    return {
        "color": _hashed(label, EXTRA_COLORS, METHOD_COLORS.values()),
        "marker": METHOD_MARKERS.get(base_method(label), _hashed(label, EXTRA_MARKERS)),
    }


def pair_style(pair: str) -> dict[str, Any]:
    """{color, marker} of a method pair's name ("icl vs gd", "gd vs zeroshot", "icl vs gd on shuffled labels
    (control)"): a pair against ICL takes the other method's style, any other pair a style fixed by its name."""
    m = PAIR.match(str(pair))
    if m and m["a"] == REFERENCE:
        return method_style(m["b"])
    key = f"{m['a']} vs {m['b']}" if m else str(pair)
    return {"color": _hashed(key, EXTRA_COLORS), "marker": _hashed(key, EXTRA_MARKERS)}


def pair_colors(pairs: Iterable[str]) -> dict[str, Any]:
    """A colour per pair name of one figure: a pair against ICL takes its other method's colour, fixed for a
    method ("icl vs gd": gd's) and distinct within the figure for its variants ("icl vs gd(lr=0.001)"), so that a
    preset's twelve GD variants do not repeat colours; any other pair its `pair_style` colour."""
    pairs = list(dict.fromkeys(str(p) for p in pairs))
    other = {p: m["b"] for p in pairs if (m := PAIR.match(p)) and m["a"] == REFERENCE}
    by_method = colors(other.values())
    return {p: by_method[other[p]] if p in other else pair_style(p)["color"] for p in pairs}


def curve_look(
    pair: str, floor: bool, icl_floor: bool, control: bool, colors: Mapping[str, Any] | None = None
) -> tuple[Any, dict[str, Any]]:
    """(colour, line keywords) of an agreement curve: ICL's floor grey and dashed, another method's floor (GD's)
    dashed in that method's colour, a control dotted and hollow, a pair its `pair_style`, or its colour in
    `colors` (the figure's `pair_colors`, where a method's variants are told apart)."""
    if icl_floor:
        return FLOOR_COLOR, dict(FLOOR_STYLE)
    if floor:
        look = method_style(str(pair).split(" vs ", 1)[0])
        return look["color"], {**FLOOR_STYLE, "marker": look["marker"], "fillstyle": "none"}
    look = pair_style(pair)
    extra = CONTROL_STYLE if control else {}
    return (colors or {}).get(pair, look["color"]), {"marker": look["marker"], **extra}


def color(label: str) -> Any:
    """The fixed colour of a label: a method's, a named predictor's or matrix's, else one fixed by its name."""
    label = str(label)
    if label in METHOD_COLORS:
        return METHOD_COLORS[label]
    if label in NAMED_COLORS:
        return NAMED_COLORS[label]
    return _hashed(label, EXTRA_COLORS)


def colors(keys: Iterable[str]) -> dict[str, Any]:
    """One colour per key, each fixed by the key alone (`color`), two keys of one figure never the same where
    the palette allows: a hashed colour that another key of the figure holds moves to the next free one."""
    keys = list(dict.fromkeys(str(k) for k in keys))
    out: dict[str, Any] = {}
    fixed = {k: color(k) for k in keys if k in METHOD_COLORS or k in NAMED_COLORS}
    spare = tuple(c for c in OKABE_ITO.values() if c not in EXTRA_COLORS)  # when the extra colours run out
    for k in keys:
        taken = [*fixed.values(), *out.values()]
        pick = fixed.get(k) or _hashed(k, EXTRA_COLORS, taken)
        if k not in fixed and pick in taken:
            pick = _hashed(k, spare, taken)
        out[k] = pick
    return out


# ---------------------------------------------------------------------------------------------------------
# Figures, legends and the writer


def figure(n_rows: int, n_cols: int, title: str | None = None, width: float | None = None) -> tuple:
    """A figure of n_rows x n_cols panels of PANEL_SIZE (axes always 2-D), laid out by matplotlib's constrained
    layout, which keeps room for a legend outside the panels (`outside_legend`); width: inches, None = panels'."""
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(width or PANEL_SIZE[0] * n_cols, PANEL_SIZE[1] * n_rows),
        squeeze=False,
        layout="constrained",
    )
    if title:
        fig.suptitle(textwrap.fill(title, max(1, int(fig.get_figwidth() * TITLE_CHARS_PER_INCH))))
    return fig, axes


def outside_legend(fig: plt.Figure, axes: Iterable[plt.Axes], title: str | None = None) -> None:
    """One legend for the figure, right of its panels (never over the data): each label once, first seen first."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label and not label.startswith("_"):
                seen.setdefault(label, handle)
    if not seen:
        return
    ncol = -(-len(seen) // LEGEND_ROWS)
    legend = fig.legend(
        list(seen.values()),
        list(seen),
        loc="outside right center",
        ncol=ncol,
        frameon=False,
        title=title,
        title_fontsize=LEGEND_SIZE,
    )
    # the panels keep their size: the figure grows by the legend's width
    width = legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi
    fig.set_figwidth(fig.get_figwidth() + width + LEGEND_PAD)


def save(fig: plt.Figure, path: Path) -> Path:
    """Write a figure (atomically) as `path` (PNG at DPI) and as the same name .pdf beside it, then close it;
    returns `path`. A figure without a layout engine is laid out tightly first."""
    try:
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        io.write_figure(path, fig, DPI)
        io.write_figure(path.with_suffix(".pdf"), fig, DPI)
    finally:
        plt.close(fig)
    return path
