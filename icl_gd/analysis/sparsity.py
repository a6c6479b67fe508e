"""Sparsity of weight updates (Shen et al.): how many entries of the GD update are (nearly) zero.

Shen et al. argue that the update fine-tuning makes is far from the sparse, structured update of the von Oswald et al.
construction, where linear self-attention implements one GD step. Here both are measured the same way: per layer and
matrix type, the fraction of entries whose magnitude lies below each threshold. Pure functions on tensors; tidy
DataFrames out, one row per (source, layer, matrix, threshold).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from torch import Tensor

from icl_gd.metrics.sparsity import below_counts
from icl_gd.models.anatomy import parse_param

DEFAULT_THRESHOLDS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
COLUMNS = ["source", "layer", "matrix", "threshold", "fraction", "n_entries"]


def _rows(
    tensors: dict[tuple[int, str], list[Tensor]], thresholds: Sequence[float], relative: bool, source: str
) -> pd.DataFrame:
    """One row per (layer, matrix, threshold), pooling the entries of the tensors that share a key."""
    rows = []
    for (layer, matrix), ts in tensors.items():
        counts, total = [0] * len(thresholds), 0
        for t in ts:
            c, n = below_counts(t, thresholds, relative)
            counts, total = [a + b for a, b in zip(counts, c, strict=True)], total + n
        for thr, c in zip(thresholds, counts, strict=True):
            rows.append(
                {
                    "source": source,
                    "layer": layer,
                    "matrix": matrix,
                    "threshold": float(thr),
                    "fraction": c / total if total else float("nan"),
                    "n_entries": total,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def update_sparsity(
    update: dict[str, Tensor], thresholds: Sequence[float] = DEFAULT_THRESHOLDS, relative: bool = False
) -> pd.DataFrame:
    """Fraction of the GD update's entries below each threshold, per (layer, matrix type); source "gd_update".

    update: parameter name -> trained minus original (MethodOutput.weight_update). relative: compare |d| / max|d|
    (max per tensor) instead of |d|, the scale-free view the construction needs.
    """
    grouped: dict[tuple[int, str], list[Tensor]] = {}
    for name, delta in update.items():
        grouped.setdefault(parse_param(name), []).append(delta)
    return _rows(grouped, thresholds, relative, "gd_update")


def weights_sparsity(
    weights: dict[str, Tensor], thresholds: Sequence[float] = DEFAULT_THRESHOLDS, source: str = "construction"
) -> pd.DataFrame:
    """The same fractions for given weights (e.g. `linreg.constructions.construction_weights`), layer 0.

    Thresholds are relative (|w| / max|w|, as the linreg lab's sparsity rows): the absolute scale of a construction
    is arbitrary (lr / n sits in P, and W_K, W_Q may trade a factor), so only the pattern is meaningful.
    """
    return _rows({(0, name): [w] for name, w in weights.items()}, thresholds, True, source)


def summarize_sparsity(df: pd.DataFrame) -> pd.DataFrame:
    """Mean fraction per (source, matrix, threshold) across layers (one curve per matrix type), with n_layers."""
    return (
        df.groupby(["source", "matrix", "threshold"], sort=False)
        .agg(fraction=("fraction", "mean"), n_layers=("layer", "nunique"))
        .reset_index()
    )
