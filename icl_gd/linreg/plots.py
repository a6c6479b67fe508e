"""Figures of the linear-regression lab: empirical points with 95% bands beside the theory curves.

Pure plotting: each function takes tidy DataFrames and a path, writes one PNG and a PDF beside it (Agg backend,
no display) through the shared `icl_gd.style.save` and returns the PNG's path. Lines, bands, sizes, fonts, the
legend right of the panels and the colours (each predictor's fixed, `icl_gd.style.NAMED_COLORS`; any other line's
fixed by its name) are the shared style of both reports (icl_gd/style.py); only the theory curves' style is the
lab's own. Bands are normal-approximation 95% intervals of the Monte Carlo estimates.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from icl_gd.style import (  # noqa: E402
    BAND_ALPHA,
    BASELINE_STYLE,
    MAIN_STYLE,
    PANEL_SIZE,
    UNIT_RANGE,
    colors,
    figure,
    outside_legend,
    save,
)

BASELINE_MARKERS = ("s", "^", "v", "x", "D", "P")  # one per baseline, so lines of one colour stay apart
THEORY_STYLE = {"linestyle": "--", "linewidth": 1.3}  # the lab's own: theory beside the measured points
WIDE = 4 / 3  # a single-panel figure is a little larger than a report panel


def _baseline(marker: str) -> dict:
    return {**BASELINE_STYLE, "marker": marker}


def _single() -> tuple[plt.Figure, plt.Axes]:
    fig, axes = figure(1, 1, width=PANEL_SIZE[0] * WIDE)
    return fig, axes[0][0]


def _row(panels: int) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = figure(1, panels)
    return fig, list(axes[0])


def risk_vs_axis(
    risks: pd.DataFrame,
    theory: pd.DataFrame,
    axis: str,
    main: str,
    baselines: list[str],
    path: Path,
    title: str,
) -> Path:
    """Risk against one grid axis: `main` with its 95% band, baselines dotted, theory dashed, one colour per line.

    risks: columns [axis, line, predictor, mean, lo, hi]; theory: columns [axis, line, risk] (dense where closed).
    """
    fig, ax = _single()
    groups = list(risks.groupby("line", sort=False))
    single = len(groups) == 1  # one line: each predictor in its own fixed colour, else one colour per line
    palette = colors([main, *baselines] if single else [line for line, _ in groups])
    for i, (line, df) in enumerate(groups):
        c = palette[main] if single else palette[line]
        label = f" ({line})" if line else ""
        m = df[df.predictor == main].sort_values(axis)
        ax.plot(m[axis], m["mean"], color=c, label=f"{main}{label}", **MAIN_STYLE)
        ax.fill_between(m[axis], m["lo"], m["hi"], color=c, alpha=BAND_ALPHA, linewidth=0)
        th = theory[theory.line == line].sort_values(axis)
        ax.plot(th[axis], th["risk"], color=c, label=f"theory{label}", **THEORY_STYLE)
        for b, marker in zip(baselines, BASELINE_MARKERS, strict=False):
            bd = df[df.predictor == b].sort_values(axis)
            if len(bd):
                bc = palette[b] if single else c
                ax.plot(bd[axis], bd["mean"], color=bc, label=b if i == 0 else None, **_baseline(marker))
    ax.set_xlabel(axis)
    ax.set_ylabel("query risk E(y_hat - y)^2")
    ax.set_title(title)
    outside_legend(fig, [ax])
    return save(fig, path)


def prefix_curves(curves: pd.DataFrame, theory: pd.DataFrame, path: Path, panels: int) -> Path:
    """Risk against the number of in-context examples, one panel per grid point (at most `panels`).

    curves: columns [panel, predictor, position, mean, lo, hi]; theory: columns [panel, curve, position, risk].
    """
    names = list(dict.fromkeys(curves["panel"]))[:panels]
    palette = colors(
        [*dict.fromkeys(curves["predictor"]), *dict.fromkeys(theory["curve"])]
    )  # no shared colour
    fig, axes = _row(len(names))
    for ax, name in zip(axes, names, strict=True):
        by_pred = curves[curves.panel == name].groupby("predictor", sort=False)
        for (pred, df), marker in zip(by_pred, BASELINE_MARKERS, strict=False):
            c = palette[pred]
            ax.plot(df["position"], df["mean"], color=c, label=pred, **_baseline(marker))
            ax.fill_between(df["position"], df["lo"], df["hi"], color=c, alpha=BAND_ALPHA, linewidth=0)
        for curve, df in theory[theory.panel == name].groupby("curve", sort=False):
            ax.plot(
                df["position"], df["risk"], color=palette[curve], label=f"theory: {curve}", **THEORY_STYLE
            )
        ax.set_xlabel("in-context examples before the query")
        ax.set_title(name.lstrip("@"))
    axes[0].set_ylabel("risk")
    outside_legend(fig, axes)
    return save(fig, path)


def evolution(evo: pd.DataFrame, path: Path) -> Path:
    """Cosine and relative distance of the learned preconditioner to W* and to the GD construction, per checkpoint.

    evo: columns [step, line, metric, mean, lo, hi] with lo/hi the min/max over seeds.
    """
    metrics = list(dict.fromkeys(evo["metric"]))
    palette = colors(list(dict.fromkeys(evo["line"])))
    fig, axes = _row(len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        for line, df in evo[evo.metric == metric].groupby("line", sort=False):
            x = df["step"].clip(lower=1)  # log axis: the initial checkpoint sits at step 1
            c = palette[line]
            ax.plot(x, df["mean"], color=c, label=line or metric, **MAIN_STYLE)
            ax.fill_between(x, df["lo"], df["hi"], color=c, alpha=BAND_ALPHA, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("training step")
        ax.set_title(metric)
    outside_legend(fig, axes)
    return save(fig, path)


def sparsity(sp: pd.DataFrame, path: Path) -> Path:
    """Fraction of entries below each threshold (relative to the largest entry), learned vs constructed weights.

    sp: columns [weights, threshold, fraction].
    """
    fig, ax = _single()
    names = list(dict.fromkeys(sp["weights"]))
    palette = colors(names)
    for name, df in sp.groupby("weights", sort=False):
        style = _baseline("s") if name.startswith("construction") else MAIN_STYLE
        ax.plot(df["threshold"], df["fraction"], color=palette[name], label=name, **style)
    ax.set_xscale("log")
    ax.set_xlabel("threshold on |w| / max |w|")
    ax.set_ylabel("fraction of entries below")
    ax.set_ylim(*UNIT_RANGE)
    outside_legend(fig, [ax])
    return save(fig, path)
