"""The tidy tables of a linreg job: rows collected over groups, the sparsity rows, and the CSV files they become.

Nothing here trains or samples: it turns numbers the lab computed into rows, files and tracker tables.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from icl_gd import io
from icl_gd.linreg.constructions import construction_weights, gd_weights
from icl_gd.linreg.models import H3, LSA
from icl_gd.metrics.sparsity import below_counts

LOGGED = ("risks", "theory", "lora", "sparsity")  # the tables also logged to the tracker


class Tables:
    """Tidy rows collected over groups, turned into DataFrames at the end."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.histograms: dict[str, list[float]] = {}  # tracker histograms, logged once the job is done

    def add(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.rows[name].extend(rows)

    def frame(self, name: str) -> pd.DataFrame:
        return pd.DataFrame(self.rows.get(name, []))

    def write(self, out: Path, tracker: Any) -> None:
        """Every non-empty table as `<name>.csv` in `out` (atomically); the LOGGED ones to the tracker too."""
        for name in io.LINREG_TABLES:
            df = self.frame(name)
            if len(df):
                io.write_csv(out / f"{name}.csv", df)
                if name in LOGGED:
                    tracker.log_table(f"linreg/{name}", df)


def sparsity_rows(weights: dict[str, Tensor], thresholds: list[float]) -> list[dict[str, Any]]:
    """Fraction of entries with |w| / max|w| below each threshold (max per member), averaged over members."""
    rows = []
    for name, w in weights.items():
        counts = [below_counts(member, thresholds, relative=True) for member in w.detach()]
        total = sum(size for _, size in counts)
        for i, t in enumerate(thresholds):
            rows.append({"weights": name, "threshold": t, "fraction": sum(c[i] for c, _ in counts) / total})
    return rows


def _constructions(n: int, gd_c: Tensor, w_star: Tensor) -> dict[str, Tensor]:
    """The von Oswald weights of line-searched plain GD and of optimal preconditioned GD, as W_K^T W_Q and P W_V."""
    E, d = w_star.shape[0], w_star.shape[-1]
    plain = [construction_weights(d, n, float(lr)) for lr in gd_c * n]
    opt = gd_weights(
        n, torch.ones(E, dtype=torch.float64), n * w_star, torch.zeros(E, d, dtype=torch.float64)
    )
    return {
        "construction_gd_kq": torch.stack([w["wk_t_wq"] for w in plain]),
        "construction_gd_pv": torch.stack([w["proj_wv"] for w in plain]),
        "construction_optimal_kq": opt["wk"].transpose(-1, -2) @ opt["wq"],
        "construction_optimal_pv": opt["proj"] @ opt["wv"],
    }


def sparsity_weights(
    model: nn.Module, trainable: bool, n: int, gd_c: Tensor, w_star: Tensor, w_model: Tensor | None
) -> dict[str, Tensor]:
    """Learned weights (products and raw factors) beside the von Oswald and optimal-preconditioner constructions."""
    out = _constructions(n, gd_c, w_star)
    if isinstance(model, LSA):
        layer = model.layers[0]
        out["learned_kq"], out["learned_pv"] = layer.kq(), layer.pv()
        for name in ("wq", "wk", "wv", "proj"):
            out[f"learned_{name}"] = getattr(layer, name)
    elif isinstance(model, H3):
        for name in ("wq", "wk", "wv", "filt", "head"):
            out[f"learned_{name}"] = getattr(model, name)
    if w_model is not None:
        out["learned_precond" if trainable else "construction_precond"] = w_model
    return out
