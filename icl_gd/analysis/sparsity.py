"""Sparsity of weight updates (Shen et al.): how many entries of the GD update are (nearly) zero.

Shen et al. argue that the update fine-tuning makes is far from the sparse, structured update of the von Oswald et al.
construction, where linear self-attention implements one GD step. Here both are measured the same way: per layer and
matrix type, the fraction of entries whose magnitude lies below each threshold. Pure functions on tensors; tidy
DataFrames out, one row per (source, layer, matrix, threshold).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import Tensor

from icl_gd.metrics.sparsity import below_counts
from icl_gd.models.anatomy import parse_param

DEFAULT_THRESHOLDS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
COLUMNS = ["source", "layer", "matrix", "threshold", "fraction", "n_entries"]


# With the original weights given (`update_sparsity(..., reference=)`), every row also holds the same fraction
# under the other relative definitions, so update and weights are measured like with like:
STD_RELATIVE = (
    "fraction_std_relative"  # |dw| / std(w): the update against the spread of the weight it changes
)
WEIGHTS_MAX = (
    "weights_fraction"  # |w| / max|w| of the original weights: how sparse the weights themselves are
)
WEIGHTS_STD = "weights_fraction_std_relative"  # |w| / std(w)
REFERENCE_COLUMNS = [STD_RELATIVE, WEIGHTS_MAX, WEIGHTS_STD]


def _fractions(ts: list[Tensor], thresholds: Sequence[float], relative: bool) -> tuple[list[float], int]:
    """The pooled fraction of the tensors' entries below each threshold, and their number of entries."""
    counts, total = [0] * len(thresholds), 0
    for t in ts:
        c, n = below_counts(t, thresholds, relative)
        counts, total = [a + b for a, b in zip(counts, c, strict=True)], total + n
    return [c / total if total else float("nan") for c in counts], total


def std_scaled(x: Tensor, w: Tensor) -> Tensor:
    """x / std(w) in float64 (std over all of w's entries; a constant w divides by the smallest normal)."""
    std = (
        max(float(w.detach().to(torch.float64).std()), torch.finfo(torch.float64).tiny)
        if w.numel() > 1
        else 1.0
    )
    return x.detach().to(torch.float64) / std


def _rows(
    tensors: dict[tuple[int, str], list[Tensor]],
    thresholds: Sequence[float],
    relative: bool,
    source: str,
    reference: dict[tuple[int, str], list[Tensor]] | None = None,
) -> pd.DataFrame:
    """One row per (layer, matrix, threshold), pooling the entries of the tensors that share a key; with
    `reference` (the original weights of each tensor, in the same order) also the REFERENCE_COLUMNS."""
    rows = []
    for key, ts in tensors.items():
        layer, matrix = key
        fractions, total = _fractions(ts, thresholds, relative)
        extra: dict[str, list[float]] = {}
        if reference is not None:
            ws = reference[key]
            extra[STD_RELATIVE] = _fractions(
                [std_scaled(t, w) for t, w in zip(ts, ws, strict=True)], thresholds, False
            )[0]
            extra[WEIGHTS_MAX] = _fractions(ws, thresholds, True)[0]
            extra[WEIGHTS_STD] = _fractions([std_scaled(w, w) for w in ws], thresholds, False)[0]
        for i, thr in enumerate(thresholds):
            rows.append(
                {
                    "source": source,
                    "layer": layer,
                    "matrix": matrix,
                    "threshold": float(thr),
                    "fraction": fractions[i],
                    "n_entries": total,
                    **{k: v[i] for k, v in extra.items()},
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS + (REFERENCE_COLUMNS if reference is not None else []))


def update_sparsity(
    update: dict[str, Tensor],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    relative: bool = False,
    reference: dict[str, Tensor] | None = None,
) -> pd.DataFrame:
    """Fraction of the GD update's entries below each threshold, per (layer, matrix type); source "gd_update".

    update: parameter name -> trained minus original (MethodOutput.weight_update). relative: compare |d| / max|d|
    (max per tensor) instead of |d|, the scale-free view the construction needs. reference: name -> the original
    weights: adds |d| / std(w) and the weights' own |w| / max|w| and |w| / std(w) (REFERENCE_COLUMNS).
    """
    grouped: dict[tuple[int, str], list[Tensor]] = {}
    originals: dict[tuple[int, str], list[Tensor]] = {}
    for name, delta in update.items():
        grouped.setdefault(parse_param(name), []).append(delta)
        if reference is not None:
            originals.setdefault(parse_param(name), []).append(reference[name])
    return _rows(grouped, thresholds, relative, "gd_update", originals if reference is not None else None)


def weights_sparsity(
    weights: dict[str, Tensor],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    source: str = "construction",
    scale: str = "max",
) -> pd.DataFrame:
    """The same fractions for given weights (e.g. `linreg.constructions.construction_weights`), layer 0.

    Thresholds are relative, |w| / max|w| (scale "max", as the linreg lab's sparsity rows) or |w| / std(w) (scale
    "std", the definition of the update's STD_RELATIVE column): the absolute scale of a construction is arbitrary
    (lr / n sits in P, and W_K, W_Q may trade a factor), so only the pattern is meaningful.
    """
    if scale not in ("max", "std"):
        raise ValueError(f"scale must be 'max' or 'std', not {scale!r}")
    if scale == "std":
        return _rows(
            {(0, name): [std_scaled(w, w)] for name, w in weights.items()}, thresholds, False, source
        )
    return _rows({(0, name): [w] for name, w in weights.items()}, thresholds, True, source)


def summarize_sparsity(df: pd.DataFrame) -> pd.DataFrame:
    """Mean fraction per (source, matrix, threshold) across layers (one curve per matrix type), with n_layers."""
    return (
        df.groupby(["source", "matrix", "threshold"], sort=False)
        .agg(fraction=("fraction", "mean"), n_layers=("layer", "nunique"))
        .reset_index()
    )
