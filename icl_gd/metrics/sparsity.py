"""Sparsity of a weight tensor: how many entries lie below each (absolute or relative) threshold.

One definition for the GD update (analysis/sparsity.py) and the constructed weights (linreg lab, report).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

CHUNK = 1 << 22  # entries converted to float64 at a time: bounds the temporaries for embedding-sized updates


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
