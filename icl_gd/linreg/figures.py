"""Which figures a linreg job draws, from its tables: the data and theory curves each plot in plots.py gets.

Main figure: risk against the first varying grid key in AXIS_ORDER (the other varying keys become lines), with a
dense closed-form theory curve where one is derived; plus risk vs context length, weight evolution, sparsity,
and risk vs LoRA rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from icl_gd import io
from icl_gd.linreg import plots
from icl_gd.linreg.config import LinregJob
from icl_gd.linreg.grid import fmt, point_spec
from icl_gd.linreg.tables import Tables
from icl_gd.linreg.theory import closed_form_risk

AXIS_ORDER = ("n", "noise", "rag_alpha", "align_alpha", "rank", "d")  # preferred x-axis of the main figure
DENSE = 41  # points on a continuous theory curve


def _axis(keys: list[str]) -> str | None:
    """The x-axis of the main figure: the first varying key in AXIS_ORDER (others become separate lines)."""
    return next((a for a in AXIS_ORDER if a in keys), None)


def _line(row: Any, others: list[str]) -> str:
    return ",".join(f"{k}={fmt(row[k])}" for k in others)


def _theory_curve(job: LinregJob, theory_rows: pd.DataFrame, axis: str, keys: list[str]) -> pd.DataFrame:
    """Theory along `axis`, one curve per line: dense closed forms where derived, else the grid points' values."""
    others = [k for k in keys if k != axis]
    rows: list[dict[str, Any]] = []
    lines = theory_rows.assign(line=theory_rows.apply(_line, axis=1, others=others))
    for line, df in lines.groupby("line", sort=False):
        dense = _dense_theory(job, df.iloc[0].to_dict(), axis, df[axis].min(), df[axis].max())
        pts = dense if dense is not None else list(zip(df[axis], df["risk"], strict=True))
        rows.extend({axis: x, "line": line, "risk": r} for x, r in pts)
    return pd.DataFrame(rows)


def _dense_theory(job: LinregJob, point: dict[str, Any], axis: str, lo: float, hi: float) -> list | None:
    """Closed-form risks on a fine grid of `axis` (integers for n), or None where some point has no closed form."""
    if axis not in ("noise", "rag_alpha", "align_alpha", "n"):
        return None
    xs = list(range(int(lo), int(hi) + 1)) if axis == "n" else np.linspace(lo, hi, DENSE).tolist()
    out = []
    for x in xs:
        p = {**point, axis: x, "d": int(point["d"])}
        rank = int(p["rank"]) if int(p["rank"]) < p["d"] else None
        closed = closed_form_risk(point_spec(job, p), int(p["n"]), rank)
        if closed is None:
            return None
        out.append((x, closed[0]))
    return out


def _lora_figure(lora: pd.DataFrame, keys: list[str], out: Path) -> Path:
    """Risk vs LoRA rank r, theory from r = 0 (the unadapted model) up."""
    axis = "lora_rank"
    df = lora.assign(line=lora.apply(_line, axis=1, others=keys))
    fit = df[df.predictor == "lora"]
    before = fit.groupby("line", sort=False, as_index=False)["risk_before"].mean()  # r = 0: no update
    th = pd.concat(
        [
            before.assign(**{axis: 0}).rename(columns={"risk_before": "risk"}),
            fit[[axis, "line", "theory"]].rename(columns={"theory": "risk"}),
        ],
        ignore_index=True,
    )
    title = "LoRA adaptation to the shifted distribution: risk vs rank r"
    return plots.risk_vs_axis(
        df, th, axis, "lora", ["pretrained", "pgd_optimal"], out / io.FIG_RISK_VS_LORA_RANK, title
    )


def _main_figure(job: LinregJob, tables: Tables, keys: list[str], axis: str, out: Path) -> Path:
    risks = tables.frame("risks")
    others = [k for k in keys if k != axis]
    df = risks.assign(line=risks.apply(_line, axis=1, others=others))
    th = _theory_curve(job, tables.frame("theory"), axis, keys)
    main = "trained" if job.trainable else "construction"
    path = out / io.FIG_RISK_VS_AXIS.format(axis=axis)
    baselines = ["pgd_optimal", "gd_1step", "ridge"]
    return plots.risk_vs_axis(df, th, axis, main, baselines, path, f"{job.model.name}: risk vs {axis}")


def figures(job: LinregJob, tables: Tables, keys: list[str], out: Path, tracker: Any) -> list[Path]:
    """Write every figure the tables support into `out` and log them."""
    paths: list[Path] = []
    lora = tables.frame("lora")
    if len(lora):
        paths.append(_lora_figure(lora, keys, out))
    axis = _axis(keys)
    if axis is not None and len(tables.frame("risks")):
        paths.append(_main_figure(job, tables, keys, axis, out))
    curves = tables.frame("curves")
    if len(curves):
        theory = tables.frame("curve_theory")
        paths.append(
            plots.prefix_curves(curves, theory, out / io.FIG_RISK_VS_CONTEXT, job.train.figure_panels)
        )
    evo = tables.frame("evolution")
    if len(evo):
        paths.append(plots.evolution(evo.rename(columns={"label": "line"}), out / io.FIG_EVOLUTION))
    sp = tables.frame("sparsity")
    if len(sp):
        agg = sp.groupby(["weights", "threshold"], sort=False, as_index=False)["fraction"].mean()
        paths.append(plots.sparsity(agg, out / io.FIG_SPARSITY))
    for p in paths:
        tracker.log_image(f"linreg/{p.stem}", p)
    return paths
