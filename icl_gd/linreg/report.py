"""Reporting for the linreg lab: metric-key names, tidy tables, sparsity fractions and the figures.

Everything here turns numbers the lab computed into names, rows and PNGs; nothing trains or samples.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from icl_gd.linreg import plots
from icl_gd.linreg.config import LinregJob, point_spec
from icl_gd.linreg.theory import closed_form_risk

AXIS_ORDER = ("n", "noise", "rag_alpha", "align_alpha", "rank", "d")  # preferred x-axis of the main figure
DENSE = 41  # points on a continuous theory curve


def _fmt(v: Any) -> str:
    if v is None:
        return "full"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def suffix(point: dict[str, Any], keys: list[str]) -> str:
    """Metric-key suffix naming a grid point by its varying keys: '@d=5,noise=0.5' ('' for a one-point job)."""
    return "@" + ",".join(f"{k}={_fmt(point[k])}" for k in keys) if keys else ""


class Tables:
    """Tidy rows collected over groups, turned into DataFrames at the end."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.histograms: dict[str, list[float]] = {}  # tracker histograms, logged once the job is done

    def add(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.rows[name].extend(rows)

    def frame(self, name: str) -> pd.DataFrame:
        return pd.DataFrame(self.rows.get(name, []))


def sparsity_rows(weights: dict[str, Tensor], thresholds: list[float]) -> list[dict[str, Any]]:
    """Fraction of entries with |w| / max|w| below each threshold, averaged over members."""
    rows = []
    for name, w in weights.items():
        w = w.detach().to(torch.float64).flatten(1).abs()  # (E, entries)
        rel = w / w.max(dim=1, keepdim=True).values.clamp_min(torch.finfo(torch.float64).tiny)
        for t in thresholds:
            rows.append({"weights": name, "threshold": t, "fraction": float((rel < t).double().mean())})
    return rows


def _axis(keys: list[str]) -> str | None:
    """The x-axis of the main figure: the first varying key in AXIS_ORDER (others become separate lines)."""
    return next((a for a in AXIS_ORDER if a in keys), None)


def _line(row: Any, others: list[str]) -> str:
    return ",".join(f"{k}={_fmt(row[k])}" for k in others)


def _theory_curve(job: LinregJob, theory_rows: pd.DataFrame, axis: str, keys: list[str]) -> pd.DataFrame:
    """Theory along `axis`, one curve per line: dense closed forms where derived, else the grid points' values."""
    others = [k for k in keys if k != axis]
    rows: list[dict[str, Any]] = []
    for line, df in theory_rows.assign(line=theory_rows.apply(_line, axis=1, others=others)).groupby(
        "line", sort=False
    ):
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


def figures(job: LinregJob, tables: Tables, keys: list[str], out: Path, tracker: Any) -> list[Path]:
    """Write every figure the tables support and log them."""
    paths: list[Path] = []
    risks, lora = tables.frame("risks"), tables.frame("lora")
    main = "trained" if job.trainable else "construction"
    if len(lora):
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
        paths.append(
            plots.risk_vs_axis(
                df,
                th,
                axis,
                "lora",
                ["pretrained", "pgd_optimal"],
                out / "risk_vs_lora_rank.png",
                "LoRA adaptation to the shifted distribution: risk vs rank r",
            )
        )
    axis = _axis(keys)
    if axis is not None and len(risks):
        others = [k for k in keys if k != axis]
        df = risks.assign(line=risks.apply(_line, axis=1, others=others))
        th = _theory_curve(job, tables.frame("theory"), axis, keys)
        paths.append(
            plots.risk_vs_axis(
                df,
                th,
                axis,
                main,
                ["pgd_optimal", "gd_1step", "ridge"],
                out / f"risk_vs_{axis}.png",
                f"{job.model.name}: risk vs {axis}",
            )
        )
    curves = tables.frame("curves")
    if len(curves):
        paths.append(
            plots.prefix_curves(
                curves, tables.frame("curve_theory"), out / "risk_vs_context.png", job.train.figure_panels
            )
        )
    evo = tables.frame("evolution")
    if len(evo):
        paths.append(plots.evolution(evo.rename(columns={"label": "line"}), out / "weight_evolution.png"))
    sp = tables.frame("sparsity")
    if len(sp):
        agg = sp.groupby(["weights", "threshold"], sort=False, as_index=False)["fraction"].mean()
        paths.append(plots.sparsity(agg, out / "sparsity.png"))
    for p in paths:
        tracker.log_image(f"linreg/{p.stem}", p)
    return paths
