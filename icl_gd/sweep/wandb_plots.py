"""The report's W&B line plots: label accuracy against demos per method, and agreement against demos per pair
with the noise floor, one plot per dataset (and agreement metric); the same data drawn as one PNG for README.

Each plot is a `LineSeries` (pure data: a W&B key, lines of (demos, mean)); the report run logs them with
`wandb.plot.line_series` (their data lands in the run's Table `<key>_table`, which a dashboard redraws), and
S/wandb_plots.json lists them, so `python -m icl_gd.dashboard` builds panels of exactly the keys the run logged.
The means are plain means over the pooled queries, the same as the report's figures (whose bands are here left out).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from icl_gd import io
from icl_gd.style import (
    MAIN_STYLE,
    TITLE_SIZE,
    UNIT_RANGE,
    curve_look,
    figure,
    method_style,
    outside_legend,
    pair_colors,
    save,
)
from icl_gd.sweep.pair_types import ORDER_PAIR, is_order_pair
from icl_gd.sweep.tables import AGREEMENT, against_icl, pair_name

if TYPE_CHECKING:
    from icl_gd.sweep.loading import Sweep
    from icl_gd.tracking import Tracker

PLOTS_PREFIX = "plots"
ACCURACY = "label_accuracy"  # what the accuracy plot draws (the job runs' summary key of the same name)
XNAME = "demos"
MODEL_SEP = " / "  # between a line's model and its method or pair, where models vary


@dataclass
class LineSeries:
    """One W&B line plot: `keys[i]`'s line is (xs[i], ys[i]); `floors` names the lines that are noise floors."""

    key: str  # the W&B key, plots/<dataset>/<metric>_vs_demos
    title: str
    dataset: str
    metric: str  # label_accuracy, or the agreement metric (overlap@k, ocs)
    kind: str  # "accuracy" (one line per method) or "agreement" (one line per pair, floors included)
    keys: list[str]
    xs: list[list[float]]
    ys: list[list[float]]
    floors: list[str]

    @property
    def table_key(self) -> str:
        """Where wandb.plot.line_series puts the plot's data in the run's summary."""
        return f"{self.key}_table"


def plot_key(dataset: str, metric: str) -> str:
    """The W&B key of a plot: plots/<dataset>/<metric>_vs_demos."""
    return f"{PLOTS_PREFIX}/{dataset}/{metric}_vs_{XNAME}"


def _lines(df: pd.DataFrame, line: str, value: str) -> tuple[list[str], list[list[float]], list[list[float]]]:
    """(line names, xs, ys): the mean of `value` per demos for each `line`, in order of demos."""
    keys, xs, ys = [], [], []
    for name, g in df.groupby(line, sort=True):
        m = g.groupby(XNAME, sort=True)[value].mean()
        keys.append(str(name))
        xs.append([float(x) for x in m.index])
        ys.append([float(y) for y in m.to_numpy()])
    return keys, xs, ys


def _label(df: pd.DataFrame, name: pd.Series) -> pd.Series:
    """A line's name, with its model in front when the frame has several models."""
    if "model" in df and df["model"].nunique() > 1:
        return df["model"].astype(str) + MODEL_SEP + name.astype(str)
    return name.astype(str)


def line_series(sweep: Sweep) -> list[LineSeries]:
    """The W&B plots of a sweep: per dataset, label accuracy by method, then each agreement metric by pair."""
    out: list[LineSeries] = []
    acc, queries = sweep.accuracy, sweep.queries
    datasets = sorted({*map(str, acc.get("dataset", [])), *map(str, queries.get("dataset", []))})
    for ds in datasets:
        a = acc[acc["dataset"].astype(str) == ds] if len(acc) else acc
        if len(a):
            a = a.assign(line=_label(a, a["method"]), value=a["correct"].astype(float))
            keys, xs, ys = _lines(a, "line", "value")
            title = f"{ds}: label accuracy vs demos, by method"
            out.append(LineSeries(plot_key(ds, ACCURACY), title, ds, ACCURACY, "accuracy", keys, xs, ys, []))
        q = queries[queries["dataset"].astype(str) == ds] if len(queries) else queries
        q = q[against_icl(q["pair_type"])] if len(q) else q  # as the report's figure: pairs with ICL, floors
        for metric in (m for m in AGREEMENT if len(q) and m in q):
            named = q.assign(line=_label(q, q["pair_type"].map(pair_name)))
            keys, xs, ys = _lines(named, "line", metric)
            floors = sorted(set(named.loc[named["pair_type"].map(is_order_pair), "line"]))
            title = f"{ds}: {metric} vs demos, by pair (dashed: noise floors)"
            out.append(LineSeries(plot_key(ds, metric), title, ds, metric, "agreement", keys, xs, ys, floors))
    return out


def log_line_series(tracker: Tracker, plots: list[LineSeries]) -> None:
    """Log each plot as a W&B line plot (its data: the Table `<key>_table`)."""
    for p in plots:
        tracker.log_line_series(p.key, p.xs, p.ys, p.keys, p.title, XNAME)


def write_manifest(folder: Path, plots: list[LineSeries]) -> Path:
    """S/wandb_plots.json: the plots the report run logs (key, table key, dataset, metric, kind, lines)."""
    rows = [{**asdict(p), "table_key": p.table_key} for p in plots]
    path = folder / io.WANDB_PLOTS
    io.write_text(path, json.dumps(rows, indent=1))
    return path


def read_manifest(folder: Path) -> list[dict[str, Any]]:
    """The plots a sweep's report run logged ([] when the report has not run)."""
    try:
        return json.loads((folder / io.WANDB_PLOTS).read_text())
    except (OSError, ValueError):
        return []


def _bare(name: str) -> str:
    """A line's method or pair, without its model."""
    return name.split(MODEL_SEP)[-1]


def _look(p: LineSeries, name: str, colors: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(colour, line keywords) of one line: the same colour and marker as in the report's own figures."""
    bare = _bare(name)
    if p.kind == "accuracy":
        look = method_style(bare)
        return look["color"], {**MAIN_STYLE, "marker": look["marker"]}
    floor = name in p.floors
    icl_floor = floor and bare == pair_name(ORDER_PAIR)
    color, kw = curve_look(bare, floor, icl_floor, bare.endswith("(control)"), colors)
    return color, {**MAIN_STYLE, **kw}


def draw(plots: list[LineSeries], path: Path) -> Path | None:
    """The W&B plots as one PNG and PDF (a row per dataset, a column per metric): what the dashboard shows, for
    README, in the report's fixed colours and markers, with one legend outside the panels."""
    if not plots:
        return None
    import matplotlib.pyplot as plt  # noqa: PLC0415

    datasets = sorted({p.dataset for p in plots})
    metrics = list(dict.fromkeys(p.metric for p in plots))
    fig, axes = figure(
        len(datasets), len(metrics), "The report run's W&B line plots (wandb.plot.line_series)"
    )
    pairs = sorted({_bare(k) for p in plots if p.kind != "accuracy" for k in p.keys})
    colors = pair_colors(pairs)  # a method's variants told apart, as in the report's agreement figure
    for ax in axes.flat:
        ax.set_visible(False)
    for p in plots:
        ax = axes[datasets.index(p.dataset)][metrics.index(p.metric)]
        ax.set_visible(True)
        for name, x, y in zip(p.keys, p.xs, p.ys, strict=True):
            color, kw = _look(p, name, colors)
            ax.plot(x, y, label=name, color=color, **kw)
        ax.set_xscale("symlog", base=2, linthresh=1)
        ax.set_xticks(sorted({v for x in p.xs for v in x}))
        ax.get_xaxis().set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylim(*UNIT_RANGE)
        ax.set_xlabel("demonstrations (N)")
        ax.set_ylabel(p.metric)
        by = "method" if p.kind == "accuracy" else "pair"
        ax.set_title(f"{p.dataset}: {p.metric} by {by}", fontsize=TITLE_SIZE)
    outside_legend(fig, axes.flat, title="method / pair (dashed: a noise floor)")
    return save(fig, path)
