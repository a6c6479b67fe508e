"""Figures of a language-model sweep's report: one function per figure, tidy frames in, one PNG out.

Pure plotting (Agg backend, no display), in the shared style of `icl_gd.style`: each function takes DataFrames
that `icl_gd.sweep.tables` builds, draws one subplot column per dataset, writes the PNG and returns its path. Curves
carry their 95% interval as a band (columns `mean`, `lo`, `hi`; a NaN bound, from a single value, draws none).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from icl_gd.style import (  # noqa: E402
    BAND_ALPHA,
    BOX_LABEL_ROTATION,
    CAPSIZE,
    FLOOR_COLOR,
    FLOOR_STYLE,
    LEGEND_SIZE,
    LOG2,
    MAIN_STYLE,
    PANEL_SIZE,
    STYLES,
    TITLE_SIZE,
    UNIT_RANGE,
    save,
)
from icl_gd.style import colors as _colors  # noqa: E402


def _grid(n_rows: int, n_cols: int, title: str) -> tuple[plt.Figure, np.ndarray]:
    """A titled figure of n_rows x n_cols panels of PANEL_SIZE each (axes always 2-D)."""
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(PANEL_SIZE[0] * n_cols, PANEL_SIZE[1] * n_rows), squeeze=False
    )
    fig.suptitle(title, fontsize=TITLE_SIZE + 1)
    return fig, axes


def _curve(ax: plt.Axes, df: pd.DataFrame, x: str, label: str | None, color: str, style: str) -> None:
    """One line (mean against x) and its 95% band."""
    d = df.sort_values(x)
    ax.plot(d[x], d["mean"], color=color, label=label, **STYLES[style])
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
    ax.set_xlabel("demonstrations N (log2 scale)")


def _step_axis(ax: plt.Axes, steps: pd.Series) -> None:
    """log axis over checkpoint steps (symlog when step 0 is present)."""
    if len(steps) and steps.min() <= 0:
        ax.set_xscale("symlog", linthresh=1)
    else:
        ax.set_xscale("log")
    ax.set_xlabel("checkpoint (training step, log scale)")


def _legend(ax: plt.Axes, outside: bool = False) -> None:
    """The axes' legend (none without labelled lines); `outside` puts it right of the axes, for many lines."""
    if not ax.get_legend_handles_labels()[0]:
        return
    if outside:
        ax.legend(fontsize=LEGEND_SIZE, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        ax.legend(fontsize=LEGEND_SIZE)


def _unit_range(ax: plt.Axes, means: pd.Series) -> None:
    """Fix the y axis to [0, 1] when every mean lies there (fractions, cosines of non-negative vectors)."""
    if len(means) and means.between(0, 1).all():
        ax.set_ylim(*UNIT_RANGE)


def _datasets(df: pd.DataFrame) -> list[str]:
    """The datasets of a frame, sorted: one subplot column each."""
    return sorted(df["dataset"].astype(str).unique())


def accuracy_vs_demos(acc: pd.DataFrame, path: Path) -> Path:
    """Label accuracy against N, one line per (model, method) with its band, one panel per dataset.

    acc: columns [dataset, line, demos, mean, lo, hi].
    """
    datasets = _datasets(acc)
    fig, axes = _grid(1, len(datasets), "Label accuracy vs number of demonstrations")
    colors = _colors(sorted(acc["line"].unique()))
    for ax, ds in zip(axes[0], datasets, strict=True):
        d = acc[acc["dataset"] == ds]
        for line, g in d.groupby("line", sort=True):
            _curve(ax, g, "demos", line, colors[line], "main")
        _demo_axis(ax, d["demos"])
        ax.set_ylabel("label accuracy (fraction correct)")
        ax.set_ylim(*UNIT_RANGE)
        ax.set_title(ds, fontsize=TITLE_SIZE)
        _legend(ax)
    return save(fig, path)


def agreement_vs_demos(agr: pd.DataFrame, path: Path, metric_labels: Mapping[str, str]) -> Path:
    """Agreement of each method pair against N (one row per metric), the ICL-order noise floor dashed.

    agr: columns [dataset, metric, line, floor (bool), demos, mean, lo, hi]; metric_labels: metric -> y label.
    """
    datasets = _datasets(agr)
    metrics = [m for m in metric_labels if m in set(agr["metric"])]
    fig, axes = _grid(len(metrics), len(datasets), "Agreement with ICL vs number of demonstrations")
    colors = _colors(sorted(agr.loc[~agr["floor"], "line"].unique()))
    for r, metric in enumerate(metrics):
        for c, ds in enumerate(datasets):
            ax = axes[r][c]
            d = agr[(agr["dataset"] == ds) & (agr["metric"] == metric)]
            for (line, floor), g in d.groupby(["line", "floor"], sort=True):
                color = FLOOR_COLOR if floor else colors[line]
                _curve(ax, g, "demos", line, color, "floor" if floor else "main")
            _demo_axis(ax, d["demos"] if len(d) else agr["demos"])
            ax.set_ylabel(metric_labels[metric])
            ax.set_ylim(*UNIT_RANGE)
            ax.set_title(ds, fontsize=TITLE_SIZE)
            _legend(ax)
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
    colors = _colors(sorted(layers["model"].unique()))
    for r, row in enumerate(rows):
        for c, ds in enumerate(datasets):
            ax = axes[r][c]
            d = layers[(layers["dataset"] == ds) & (layers["row"] == row)]
            for (model, series, style), g in d.groupby(["model", "series", "style"], sort=True):
                _curve(ax, g, "layer", f"{model}: {series}", colors[model], style)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("decoder layer")
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.set_ylabel(row_labels[row])
            ax.set_title(f"{ds}: {row}", fontsize=TITLE_SIZE)
            _legend(ax)
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
        ax.boxplot([d.loc[d["group"] == g, "std"].to_numpy(dtype=float) for g in groups])
        ax.set_xticks(range(1, len(groups) + 1), groups, rotation=BOX_LABEL_ROTATION, ha="right")
        ax.set_ylabel("std across orders (probability)")
        ax.set_title(f"{ds} (one point per query)", fontsize=TITLE_SIZE)
    return save(fig, path)


def sparsity(gd: pd.DataFrame, construction: pd.DataFrame, path: Path, xlabel: str) -> Path:
    """Fraction of weight-update entries below each threshold, per matrix type; the construction's dashed.

    gd: columns [dataset, method, line, threshold, fraction] (one row of panels per method, one column per
    dataset); construction: columns [line, threshold, fraction] (drawn on every panel; may have no rows);
    xlabel: what the threshold applies to.
    """
    datasets = _datasets(gd)
    methods = sorted(gd["method"].unique()) if "method" in gd else [None]
    fig, axes = _grid(len(methods), len(datasets), "Sparsity of the GD weight update (mean over layers)")
    colors = _colors(sorted(set(gd["line"]) | set(construction["line"])))
    for r, method in enumerate(methods):
        rows = gd if method is None else gd[gd["method"] == method]
        for ax, ds in zip(axes[r], datasets, strict=True):
            for line, g in rows[rows["dataset"] == ds].groupby("line", sort=True):
                d = g.sort_values("threshold")
                ax.plot(d["threshold"], d["fraction"], color=colors[line], label=line, **MAIN_STYLE)
            for line, g in construction.groupby("line", sort=True):
                d = g.sort_values("threshold")
                ax.plot(d["threshold"], d["fraction"], color=colors[line], label=line, **FLOOR_STYLE)
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("fraction of entries below threshold")
            ax.set_ylim(*UNIT_RANGE)
            ax.set_title(ds if method is None else f"{ds}: {method}", fontsize=TITLE_SIZE)
            _legend(ax, outside=True)
    return save(fig, path)


def weight_evolution(evo: pd.DataFrame, path: Path, metric_labels: Mapping[str, str]) -> Path:
    """Accuracy and agreement metrics against the checkpoint's training step, one row per metric.

    evo: columns [dataset, metric, line, floor (bool: the ICL-order noise floor, dashed), step, mean, lo, hi];
    metric_labels: metric -> y label (in this order).
    """
    datasets = _datasets(evo)
    metrics = [m for m in metric_labels if m in set(evo["metric"])]
    fig, axes = _grid(len(metrics), len(datasets), "Weight evolution: metrics across pretraining checkpoints")
    colors = _colors(sorted(evo["line"].unique()))
    for r, metric in enumerate(metrics):
        for c, ds in enumerate(datasets):
            ax = axes[r][c]
            d = evo[(evo["dataset"] == ds) & (evo["metric"] == metric)]
            for (line, floor), g in d.groupby(["line", "floor"], sort=True):
                _curve(
                    ax, g, "step", line, FLOOR_COLOR if floor else colors[line], "floor" if floor else "main"
                )
            _step_axis(ax, d["step"])
            _unit_range(ax, d["mean"])
            ax.set_ylabel(metric_labels[metric])
            ax.set_title(ds, fontsize=TITLE_SIZE)
            _legend(ax)
    return save(fig, path)
