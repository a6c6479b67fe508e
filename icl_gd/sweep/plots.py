"""Figures of a language-model sweep's report: one function per figure, tidy frames in, PNG and PDF out.

Pure plotting (Agg backend, no display), in the shared style of `icl_gd.style`: each function takes DataFrames
that `icl_gd.sweep.tables` builds, draws one subplot column per dataset, writes the PNG (and a PDF beside it) and
returns the PNG's path. Curves carry their 95% interval as a band (columns `mean`, `lo`, `hi`; a NaN bound, from a
single value, draws none). Every method and pair has the one colour and marker `icl_gd.style` gives it, in every
figure; the legend is the figure's own, right of its panels.

The GD search's trajectory figure, with a layout of its own, is in `icl_gd.sweep.trajectory_plots`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from icl_gd import style as S  # noqa: E402
from icl_gd.style import (  # noqa: E402
    BAND_ALPHA,
    BOX_LABEL_ROTATION,
    CAPSIZE,
    FLOOR_COLOR,
    FLOOR_STYLE,
    LOG2,
    MAIN_STYLE,
    STYLES,
    UNIT_RANGE,
    figure,
    outside_legend,
    save,
)
from icl_gd.sweep.verdicts import MIN_ORDER_DEMOS  # noqa: E402

MODEL_LINESTYLES = (
    "-",
    "-.",
    (0, (5, 1)),
    (0, (3, 1, 1, 1, 1, 1)),
)  # one per model of a figure (dashed: floors)
CONSTRUCTION_COLOR = "0.15"  # the sparsity figure's construction lines (dashed, one marker per matrix)
NO_FLOOR_NOTE = "one demonstration: one order,\nno noise floor to draw"
DOT_ROW_INCHES = 0.28  # the height of one pair's row in the one-demo-count agreement figure
LABEL_INCHES_PER_CHAR = 0.075  # the width a character of its row names takes there (at the style's font size)
BOX_ALPHA = 0.35  # fill of an order-sensitivity box, in its method's colour


def _grid(n_rows: int, n_cols: int, title: str) -> tuple[plt.Figure, np.ndarray]:
    """A titled figure of n_rows x n_cols panels of PANEL_SIZE each (axes always 2-D), room for a legend right."""
    return figure(n_rows, n_cols, title)


def _curve(ax: plt.Axes, df: pd.DataFrame, x: str, label: str | None, color: Any, **line: Any) -> None:
    """One line (mean against x) with its markers and its 95% band; a single point gets error bars instead."""
    d = df.sort_values(x)
    kw = {**MAIN_STYLE, **line}
    ax.plot(d[x], d["mean"], color=color, label=label, **kw)
    ax.fill_between(d[x], d["lo"], d["hi"], color=color, alpha=BAND_ALPHA, linewidth=0)
    if len(d) == 1 and np.isfinite(d[["lo", "hi"]].to_numpy(dtype=float)).all():  # a band needs two points
        err = [d["mean"] - d["lo"], d["hi"] - d["mean"]]
        ax.errorbar(d[x], d["mean"], yerr=err, color=color, capsize=CAPSIZE, linestyle="none")


def _demo_axis(ax: plt.Axes, demos: pd.Series) -> None:
    """log2 axis over the number of demonstrations (symlog when 0 demos are present), ticks at the values."""
    values = sorted(set(demos.astype(int)))
    if values and min(values) <= 0:
        ax.set_xscale("symlog", base=LOG2, linthresh=1)
    else:
        ax.set_xscale("log", base=LOG2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()
    if len(values) == 1:  # one demo count: a point in the middle, not on the frame
        v = values[0]
        ax.set_xlim((v / LOG2, v * LOG2) if v > 0 else (-1, 1))
    ax.set_xlabel("demonstrations N (log2 scale)")


def _step_axis(ax: plt.Axes, steps: pd.Series) -> None:
    """log axis over checkpoint steps (symlog when step 0 is present)."""
    if len(steps) and steps.min() <= 0:
        ax.set_xscale("symlog", linthresh=1)
    else:
        ax.set_xscale("log")
    ax.set_xlabel("checkpoint (training step, log scale)")


def _unit_range(ax: plt.Axes, means: pd.Series) -> None:
    """Fix the y axis to [0, 1] when every mean lies there (fractions, cosines of non-negative vectors)."""
    if len(means) and means.between(0, 1).all():
        ax.set_ylim(*UNIT_RANGE)


def _datasets(df: pd.DataFrame) -> list[str]:
    """The datasets of a frame, sorted: one subplot column each."""
    return sorted(df["dataset"].astype(str).unique())


def _model_linestyles(models: pd.Series) -> dict[str, Any]:
    """A line style per model of the figure (all solid with one model)."""
    names = sorted(models.astype(str).unique())
    return {m: MODEL_LINESTYLES[i % len(MODEL_LINESTYLES)] for i, m in enumerate(names)}


def accuracy_vs_demos(acc: pd.DataFrame, path: Path) -> Path:
    """Label accuracy against N, one line per (model, method) with its band, one panel per dataset; a method's
    colour and marker are its own (`icl_gd.style.method_style`), a model's line style tells models apart.

    acc: columns [dataset, line, demos, mean, lo, hi] and, to style the lines, model and method.
    """
    datasets = _datasets(acc)
    fig, axes = _grid(1, len(datasets), "Label accuracy vs number of demonstrations")
    has_keys = {"model", "method"} <= set(acc.columns)
    several = has_keys and acc["model"].nunique() > 1
    dashes = _model_linestyles(acc["model"]) if has_keys else {}
    for ax, ds in zip(axes[0], datasets, strict=True):
        d = acc[acc["dataset"] == ds]
        for line, g in d.groupby("line", sort=True):
            if has_keys:
                row = g.iloc[0]
                look = S.method_style(row["method"])
                label = str(line) if several else str(row["method"])
                _curve(
                    ax,
                    g,
                    "demos",
                    label,
                    look["color"],
                    marker=look["marker"],
                    linestyle=dashes[str(row["model"])],
                )
            else:
                _curve(ax, g, "demos", str(line), S.color(str(line)))
        _demo_axis(ax, d["demos"])
        ax.set_ylabel("label accuracy (fraction correct)")
        ax.set_ylim(*UNIT_RANGE)
        ax.set_title(ds)
    model = f", {acc['model'].iloc[0]}" if has_keys and not several and len(acc) else ""
    outside_legend(fig, axes.flat, title=f"method{model}")
    return save(fig, path)


AGREEMENT_KEYS = ["line", "pair", "floor", "icl_floor", "control"]  # what fixes an agreement curve's look


def _agreement_panels(
    agr: pd.DataFrame, axes: np.ndarray, datasets: list[str], metrics: list[str]
) -> Iterator[tuple[plt.Axes, int, str, pd.DataFrame, list[tuple[str, Any, dict[str, Any], pd.DataFrame]]]]:
    """Each agreement panel (a row per metric, a column per dataset): its axes, column, metric, rows and curves,
    each curve (line, colour, line keywords, rows) in its pair's look, a method's variants told apart."""
    distinct = S.pair_colors(sorted(set(agr["pair"].astype(str))))
    for r, metric in enumerate(metrics):
        for c, ds in enumerate(datasets):
            d = agr[(agr["dataset"] == ds) & (agr["metric"] == metric)]
            curves = []
            for (line, pair, floor, grey, ctrl), g in d.groupby(AGREEMENT_KEYS, sort=True):
                color, kw = S.curve_look(pair, bool(floor), bool(grey), bool(ctrl), distinct)
                curves.append((str(line), color, kw, g))
            yield axes[r][c], c, metric, d, curves


def agreement_vs_demos(agr: pd.DataFrame, path: Path, metric_labels: Mapping[str, str]) -> Path:
    """Agreement of each method pair against N (one row per metric), the ICL-order noise floor dashed grey.

    agr: columns [dataset, metric, line, floor (bool: a noise floor, dashed), demos, mean, lo, hi] and optionally
    icl_floor (bool: ICL's floor, grey; other floors, GD's, dashed in their method's colour; default: every floor),
    pair (the pair's name, which fixes its colour; default: line) and pair_type; metric_labels: metric -> y label.
    A floor is drawn only from MIN_ORDER_DEMOS demonstrations on: one demo has one order (its "floor" is 1).
    """
    agr = agr if "icl_floor" in agr else agr.assign(icl_floor=agr["floor"])
    agr = agr if "pair" in agr else agr.assign(pair=agr["line"])
    control = agr["pair"].astype(str).str.endswith("(control)")
    agr = agr.assign(control=control)
    datasets = _datasets(agr)
    metrics = [m for m in metric_labels if m in set(agr["metric"])]
    demos = agr["demos"]
    agr = agr[~(agr["floor"].astype(bool) & (agr["demos"] < MIN_ORDER_DEMOS))]
    if demos.nunique() == 1 and len(agr):  # one N: a line per pair would be a stack of points at one x
        return _agreement_dots(agr, datasets, metrics, metric_labels, int(demos.iloc[0]), path)
    fig, axes = _grid(len(metrics), len(datasets), "Agreement with ICL vs number of demonstrations")
    for ax, c, metric, d, curves in _agreement_panels(agr, axes, datasets, metrics):
        for line, color, kw, g in curves:
            _curve(ax, g, "demos", line, color, **kw)
        if d.empty:
            ax.text(0.5, 0.5, NO_FLOOR_NOTE, ha="center", va="center", transform=ax.transAxes)
        _demo_axis(ax, d["demos"] if len(d) else demos)
        ax.set_ylabel(metric_labels[metric])
        ax.set_ylim(*UNIT_RANGE)
        ax.set_title(datasets[c])
    outside_legend(fig, axes.flat, title="pair (dashed: a noise floor)")
    return save(fig, path)


def _agreement_dots(
    agr: pd.DataFrame,
    datasets: list[str],
    metrics: list[str],
    metric_labels: Mapping[str, str],
    n_demos: int,
    path: Path,
) -> Path:
    """The agreement figure of a sweep with one demo count: per panel a row per pair (named on the y axis, ICL's
    floor first), its mean and 95% interval as a dot with a horizontal bar, in the pair's colour and marker."""
    rows = agr.drop_duplicates("line").sort_values(
        ["icl_floor", "floor", "line"], ascending=[False, False, True]
    )
    order = list(rows["line"])
    width = S.PANEL_SIZE[0] * len(datasets) + LABEL_INCHES_PER_CHAR * max(map(len, order))  # room for names
    fig, axes = figure(len(metrics), len(datasets), f"Agreement with ICL at N = {n_demos}", width=width)
    fig.set_figheight(max(fig.get_figheight(), len(metrics) * DOT_ROW_INCHES * (len(order) + 1)))
    for ax, c, metric, d, curves in _agreement_panels(agr, axes, datasets, metrics):
        for line, color, kw, g in curves:
            mean, lo, hi = (float(g[k].mean()) for k in ("mean", "lo", "hi"))
            err = [[mean - lo], [hi - mean]] if np.isfinite([lo, hi]).all() else None
            fill = kw.get("fillstyle", "full")
            y = order.index(line)
            ax.errorbar(mean, y, xerr=err, color=color, marker=kw["marker"], fillstyle=fill, capsize=CAPSIZE)
        floor = d[d["icl_floor"].astype(bool)]
        if len(floor):  # the floor every verdict tests against, as a reference line through all rows
            ax.axvline(float(floor["mean"].mean()), color=FLOOR_COLOR, linestyle="--", linewidth=1)
        ax.set_yticks(range(len(order)), order if c == 0 else [""] * len(order))
        ax.set_ylim(len(order) - 0.5, -0.5)  # the first pair on top
        ax.set_xlim(*UNIT_RANGE)
        ax.set_xlabel(metric_labels[metric])
        ax.set_title(datasets[c])
    return save(fig, path)


def layer_curves(layers: pd.DataFrame, path: Path, row_labels: Mapping[str, str]) -> Path:
    """Per-layer similarity with bands: one row per panel kind (e.g. SimAOU, SimAM), one colour per model.

    layers: columns [dataset, row, model, series, style ("main" | "baseline" | "floor"), layer, mean, lo, hi];
    row_labels: row -> y label (in this order).
    """
    datasets = _datasets(layers)
    rows = [r for r in row_labels if r in set(layers["row"])]
    fig, axes = _grid(
        len(rows), len(datasets), "Dai et al.: ICL vs GD per layer (mean over queries and seeds)"
    )
    colors = S.colors(layers["model"].astype(str).unique())
    for r, row in enumerate(rows):
        for c, ds in enumerate(datasets):
            ax = axes[r][c]
            d = layers[(layers["dataset"] == ds) & (layers["row"] == row)]
            for (model, series, style), g in d.groupby(["model", "series", "style"], sort=True):
                _curve(ax, g, "layer", f"{model}: {series}", colors[str(model)], **STYLES[style])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("decoder layer")
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.set_ylabel(row_labels[row])
            ax.set_title(f"{ds}: {row}")
    outside_legend(fig, axes.flat, title="model: series (dotted: baseline)")
    return save(fig, path)


def order_sensitivity(orders: pd.DataFrame, path: Path) -> Path:
    """Distribution over queries of the std across demo orders of the label probabilities, per method.

    orders: columns [dataset, group, std] (group = the box's label, e.g. the method).
    """
    datasets = _datasets(orders)
    fig, axes = _grid(1, len(datasets), "Order sensitivity: std of label probabilities across demo orders")
    for ax, ds in zip(axes[0], datasets, strict=True):
        d = orders[orders["dataset"] == ds]
        groups = sorted(d["group"].unique())
        boxes = ax.boxplot(
            [d.loc[d["group"] == g, "std"].to_numpy(dtype=float) for g in groups],
            patch_artist=True,
            medianprops={"color": "black"},
        )
        for box, g in zip(boxes["boxes"], groups, strict=True):
            look = S.method_style(str(g).rsplit(": ", 1)[-1])  # "model: method" with several models
            box.set(facecolor=look["color"], alpha=BOX_ALPHA, edgecolor=look["color"])
        ax.set_xticks(range(1, len(groups) + 1), groups, rotation=BOX_LABEL_ROTATION, ha="right")
        ax.set_ylabel("std across orders (probability)")
        ax.set_title(f"{ds} (one point per query)")
    return save(fig, path)


def _matrix(line: str) -> str:
    """The matrix of a sparsity line ("model: q_proj", "construction: q_proj" -> "q_proj"): its colour."""
    return str(line).rsplit(": ", 1)[-1]


def sparsity(gd: pd.DataFrame, construction: pd.DataFrame, path: Path) -> Path:
    """Fraction of weight-update entries below each threshold, per matrix type; the construction's dashed.

    gd: columns [dataset, method, definition, line, threshold, fraction] (one row of panels per method and
    definition, one column per dataset); construction: columns [definition, line, threshold, fraction] (drawn on
    the panels of its definition; may have no rows). The x axis names the definition of its row.
    """
    datasets = _datasets(gd)
    rows_of = [(m, d) for m in sorted(gd["method"].unique()) for d in list(dict.fromkeys(gd["definition"]))]
    fig, axes = _grid(len(rows_of), len(datasets), "Sparsity of the GD weight update (mean over layers)")
    # a language-model matrix's colour, distinct within the figure; the construction's matrices (another model,
    # nearly flat lines) all in one dark grey, told apart by their markers
    by_matrix = S.colors(sorted({_matrix(line) for line in gd["line"]}))
    colors = {line: by_matrix[_matrix(line)] for line in gd["line"]}
    built_lines = sorted(set(construction["line"]))
    built_look = {
        line: {
            **FLOOR_STYLE,
            "color": CONSTRUCTION_COLOR,
            "marker": S.EXTRA_MARKERS[i % len(S.EXTRA_MARKERS)],
        }
        for i, line in enumerate(built_lines)
    }
    for r, (method, definition) in enumerate(rows_of):
        rows = gd[(gd["method"] == method) & (gd["definition"] == definition)]
        built = construction[construction["definition"] == definition]
        for ax, ds in zip(axes[r], datasets, strict=True):
            for line, g in rows[rows["dataset"] == ds].groupby("line", sort=True):
                d = g.sort_values("threshold")
                ax.plot(d["threshold"], d["fraction"], color=colors[line], label=line, **MAIN_STYLE)
            for line, g in built.groupby("line", sort=True):
                d = g.sort_values("threshold")
                ax.plot(d["threshold"], d["fraction"], label=line, **built_look[line])
            ax.set_xscale("log")
            ax.set_xlabel(f"threshold on {definition} (log scale)")
            ax.set_ylabel("fraction of entries below threshold")
            ax.set_ylim(*UNIT_RANGE)
            ax.set_title(f"{ds}: {method}")
    outside_legend(fig, axes.flat, title="matrix (dashed: construction)")
    return save(fig, path)


def weight_evolution(evo: pd.DataFrame, path: Path, metric_labels: Mapping[str, str]) -> Path:
    """Accuracy and agreement metrics against the checkpoint's training step, one row per metric.

    evo: columns [dataset, metric, line, floor (bool: the ICL-order noise floor, dashed), step, mean, lo, hi];
    metric_labels: metric -> y label (in this order).
    """
    datasets = _datasets(evo)
    metrics = [m for m in metric_labels if m in set(evo["metric"])]
    fig, axes = _grid(len(metrics), len(datasets), "Weight evolution: metrics across pretraining checkpoints")
    colors = S.colors(evo["line"].astype(str).unique())
    for r, metric in enumerate(metrics):
        for c, ds in enumerate(datasets):
            ax = axes[r][c]
            d = evo[(evo["dataset"] == ds) & (evo["metric"] == metric)]
            for (line, floor), g in d.groupby(["line", "floor"], sort=True):
                color = FLOOR_COLOR if floor else colors[str(line)]
                _curve(ax, g, "step", str(line), color, **STYLES["floor" if floor else "main"])
            _step_axis(ax, d["step"])
            _unit_range(ax, d["mean"])
            ax.set_ylabel(metric_labels[metric])
            ax.set_title(ds)
    outside_legend(fig, axes.flat)
    return save(fig, path)
