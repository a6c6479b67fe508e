"""Sparsity of weight updates (Shen et al.): how many entries of the GD update are (nearly) zero.

Shen et al. argue that the update fine-tuning makes is far from the sparse, structured update of the von Oswald et al.
construction, where linear self-attention implements one GD step. Here both are measured the same way: per layer and
matrix type, the fraction of entries whose magnitude lies below each threshold. Pure functions on tensors; tidy
DataFrames out, one row per (source, layer, matrix, threshold).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd
import torch
from torch import Tensor

from icl_gd.linreg.constructions import gd_weights

DEFAULT_THRESHOLDS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
CHUNK = 1 << 22  # entries converted to float64 at a time: bounds the temporaries for embedding-sized updates
COLUMNS = ["source", "layer", "matrix", "threshold", "fraction", "n_entries"]
NO_LAYER = -1  # layer index of parameters outside the decoder layers (embeddings, final norm, lm_head)

_LAYER = re.compile(r"(?:layer)?(\d+)")  # "12" in model.layers.12 / transformer.h.12, or "layer3" (layer_v)
_SUFFIXES = ("weight", "bias")


def parse_param(name: str) -> tuple[int, str]:
    """(layer index, matrix type) of a parameter name; NO_LAYER for parameters outside the decoder layers.

    model.layers.12.self_attn.v_proj.weight -> (12, "v_proj"); layer3.self_attn.v_proj.weight -> (3, "v_proj");
    transformer.h.4.attn.c_attn.weight -> (4, "c_attn"); peft's base_model.model.model.layers.0.self_attn.q_proj.
    lora_A.default.weight -> (0, "q_proj.lora_A"); lm_head.weight -> (-1, "lm_head"); a bias adds ".bias".
    """
    parts = name.split(".")
    suffix = parts.pop() if len(parts) > 1 and parts[-1] in _SUFFIXES else None
    lora = next((i for i, p in enumerate(parts) if p.startswith("lora_")), None)
    adapter = parts[lora] if lora is not None else None
    if lora is not None:
        parts = parts[:lora]  # drop the adapter name that follows lora_A / lora_B
    layer = next((int(m.group(1)) for p in parts if (m := _LAYER.fullmatch(p))), NO_LAYER)
    matrix = parts[-1] if parts else name
    if adapter:
        matrix += f".{adapter}"
    if suffix == "bias":
        matrix += ".bias"
    return layer, matrix


def below_counts(
    t: Tensor, thresholds: Sequence[float], relative: bool = False, chunk: int = CHUNK
) -> tuple[list[int], int]:
    """(entries with |t| < threshold, or |t| / max|t| < threshold when relative, per threshold; entries in all).

    float64, one chunk of the flattened tensor at a time, so a large update never gets a full float64 copy. An
    all-zero tensor counts as fully sparse in relative mode (0 / tiny < threshold).
    """
    flat = t.detach().reshape(-1)
    scale = 1.0
    if relative and flat.numel():
        scale = max(float(flat.abs().max().to(torch.float64)), torch.finfo(torch.float64).tiny)
    counts = [0] * len(thresholds)
    for start in range(0, flat.numel(), chunk):
        a = flat[start : start + chunk].to(torch.float64).abs()
        if relative:
            a = a / scale
        for i, thr in enumerate(thresholds):
            counts[i] += int((a < thr).sum())
    return counts, flat.numel()


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


def construction_weights(d: int, n: int, lr: float = 1.0) -> dict[str, Tensor]:
    """von Oswald et al.'s LSA weights for one GD step from w0 = 0 with H = I, (D, D) each, D = d + 1, and the
    products that act on the tokens: W_K^T W_Q (the attention scores' bilinear form) and P W_V (what is written)."""
    w = gd_weights(
        n,
        torch.tensor([lr], dtype=torch.float64),
        torch.eye(d, dtype=torch.float64)[None],
        torch.zeros(1, d, dtype=torch.float64),
    )
    w = {k: v[0] for k, v in w.items()}  # the one member
    return {**w, "wk_t_wq": w["wk"].T @ w["wq"], "proj_wv": w["proj"] @ w["wv"]}


def construction_sparsity(
    d: int, n: int, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, lr: float = 1.0
) -> pd.DataFrame:
    """The same fractions for the constructed one-step-GD LSA weights; source "construction", layer 0.

    Thresholds are relative (|w| / max|w|, as the linreg lab's sparsity_rows): the absolute scale of a construction
    is arbitrary (lr / n sits in P, and W_K, W_Q may trade a factor), so only the pattern is meaningful.
    """
    weights = construction_weights(d, n, lr)
    return _rows({(0, name): [w] for name, w in weights.items()}, thresholds, True, "construction")


def summarize_sparsity(df: pd.DataFrame) -> pd.DataFrame:
    """Mean fraction per (source, matrix, threshold) across layers (one curve per matrix type), with n_layers."""
    return (
        df.groupby(["source", "matrix", "threshold"], sort=False)
        .agg(fraction=("fraction", "mean"), n_layers=("layer", "nunique"))
        .reset_index()
    )
