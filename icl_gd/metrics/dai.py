"""Dai et al.'s metrics ("Why Can GPT Learn In-Context?"): Rec2FTP, SimAOU and its random baseline, SimAM.

Pure functions of captured tensors; analysis/dai.py captures, these compute.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from icl_gd.metrics.distributions import cosine


def rec2ftp(zs_correct: Tensor, icl_correct: Tensor, ft_correct: Tensor) -> tuple[float, int]:
    """(fraction, n_ft): of the n_ft queries that ZS gets wrong and GD gets right, the fraction ICL gets right.

    Inputs (Q,) bool. The fraction is nan when n_ft == 0.
    """
    corrected = ~zs_correct.bool() & ft_correct.bool()
    n_ft = int(corrected.sum())
    if n_ft == 0:
        return math.nan, 0
    return float((icl_correct.bool() & corrected).sum()) / n_ft, n_ft


def simaou(zs: Tensor, icl: Tensor, ft: Tensor) -> Tensor:
    """(Q,) cosine of the ICL update (icl - zs) and the GD update (ft - zs) of one layer's attention output."""
    zs = zs.to(torch.float64)
    return cosine(icl.to(torch.float64) - zs, ft.to(torch.float64) - zs)


def random_update_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """A standard normal tensor of x's shape (float64): the random update of the SimAOU baseline."""
    return torch.randn(x.shape, generator=generator, dtype=torch.float64)


def simaou_random(zs: Tensor, icl: Tensor, generator: torch.Generator) -> Tensor:
    """(Q,) cosine of the ICL update with a random update: the SimAOU baseline."""
    return cosine(icl.to(torch.float64) - zs.to(torch.float64), random_update_like(zs, generator))


def simam(map_a: Tensor, map_b: Tensor) -> Tensor:
    """(Q,) cosine of two attention maps (Q, heads, L) over the same L tokens, after averaging over heads."""
    return cosine(map_a.to(torch.float64).mean(1), map_b.to(torch.float64).mean(1))
