"""Figures of the linear-regression lab: empirical points with 95% bands beside the theory curves.

Pure plotting: each function takes tidy DataFrames and a path, writes one PNG (Agg backend, no display) and
returns the path. Bands are normal-approximation 95% intervals of the Monte Carlo estimates.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from icl_gd.plots import save  # noqa: E402 -- one figure writer (layout, PNG, close) for every report

MAIN_STYLE = {"marker": "o", "linestyle": "-", "linewidth": 1.5, "markersize": 5}
BASELINE_STYLE = {"linestyle": ":", "linewidth": 1.0, "markersize": 4, "alpha": 0.8}
BASELINE_MARKERS = ("s", "^", "v", "x", "D", "P")
THEORY_STYLE = {"linestyle": "--", "linewidth": 1.2}
BAND_ALPHA = 0.2
FIGSIZE = (6.4, 4.4)


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
    fig, ax = plt.subplots(figsize=FIGSIZE)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (line, df) in enumerate(risks.groupby("line", sort=False)):
        c = colors[i % len(colors)]
        label = f" ({line})" if line else ""
        m = df[df.predictor == main].sort_values(axis)
        ax.plot(m[axis], m["mean"], color=c, label=f"{main}{label}", **MAIN_STYLE)
        ax.fill_between(m[axis], m["lo"], m["hi"], color=c, alpha=BAND_ALPHA, linewidth=0)
        th = theory[theory.line == line].sort_values(axis)
        ax.plot(th[axis], th["risk"], color=c, label=f"theory{label}", **THEORY_STYLE)
        for b, marker in zip(baselines, BASELINE_MARKERS, strict=False):
            bd = df[df.predictor == b].sort_values(axis)
            if len(bd):
                ax.plot(
                    bd[axis],
                    bd["mean"],
                    color=c,
                    marker=marker,
                    label=b if i == 0 else None,
                    **BASELINE_STYLE,
                )
    ax.set_xlabel(axis)
    ax.set_ylabel("query risk E(y_hat - y)^2")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return save(fig, path)


def prefix_curves(curves: pd.DataFrame, theory: pd.DataFrame, path: Path, panels: int) -> Path:
    """Risk against the number of in-context examples, one panel per grid point (at most `panels`).

    curves: columns [panel, predictor, position, mean, lo, hi]; theory: columns [panel, curve, position, risk].
    """
    names = list(dict.fromkeys(curves["panel"]))[:panels]
    fig, axes = plt.subplots(
        1, len(names), figsize=(FIGSIZE[0] * 0.75 * len(names), FIGSIZE[1]), squeeze=False
    )
    for ax, name in zip(axes[0], names, strict=True):
        for (pred, df), marker in zip(
            curves[curves.panel == name].groupby("predictor", sort=False), BASELINE_MARKERS, strict=False
        ):
            line = ax.plot(df["position"], df["mean"], label=pred, marker=marker, **BASELINE_STYLE)[0]
            ax.fill_between(
                df["position"], df["lo"], df["hi"], color=line.get_color(), alpha=BAND_ALPHA, linewidth=0
            )
        for curve, df in theory[theory.panel == name].groupby("curve", sort=False):
            ax.plot(df["position"], df["risk"], label=f"theory: {curve}", **THEORY_STYLE)
        ax.set_xlabel("in-context examples before the query")
        ax.set_title(name.lstrip("@"), fontsize=9)
    axes[0][0].set_ylabel("risk")
    axes[0][0].legend(fontsize=7)
    return save(fig, path)


def evolution(evo: pd.DataFrame, path: Path) -> Path:
    """Cosine and relative distance of the learned preconditioner to W* and to the GD construction, per checkpoint.

    evo: columns [step, line, metric, mean, lo, hi] with lo/hi the min/max over seeds.
    """
    metrics = list(dict.fromkeys(evo["metric"]))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(FIGSIZE[0] * 0.7 * len(metrics), FIGSIZE[1]), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        for line, df in evo[evo.metric == metric].groupby("line", sort=False):
            x = df["step"].clip(lower=1)  # log axis: the initial checkpoint sits at step 1
            p = ax.plot(x, df["mean"], label=line or metric, **MAIN_STYLE)[0]
            ax.fill_between(x, df["lo"], df["hi"], color=p.get_color(), alpha=BAND_ALPHA, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("training step")
        ax.set_title(metric, fontsize=9)
    axes[0][0].legend(fontsize=7)
    return save(fig, path)


def sparsity(sp: pd.DataFrame, path: Path) -> Path:
    """Fraction of entries below each threshold (relative to the largest entry), learned vs constructed weights.

    sp: columns [weights, threshold, fraction].
    """
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for name, df in sp.groupby("weights", sort=False):
        style = {**BASELINE_STYLE, "marker": "s"} if name.startswith("construction") else MAIN_STYLE
        ax.plot(df["threshold"], df["fraction"], label=name, **style)
    ax.set_xscale("log")
    ax.set_xlabel("threshold on |w| / max |w|")
    ax.set_ylabel("fraction of entries below")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    return save(fig, path)
