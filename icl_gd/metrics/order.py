"""Order sensitivity math: how far label probabilities move when only the order of the demonstrations changes.

Pure functions of tensors; the jobs that feed them are grouped in `icl_gd.sweep.order`.
"""

from __future__ import annotations

import torch
from torch import Tensor

MIN_ORDERS = 2  # a standard deviation across orders needs at least two of them


def label_prob_std(probs: Tensor) -> Tensor:
    """probs (M orders, Q queries, L labels), each row a distribution -> (Q,) mean over labels of the std over orders.

    The std uses the M-1 denominator (an unbiased variance across orders); M must be >= 2.
    """
    if probs.ndim != 3 or probs.shape[0] < MIN_ORDERS:
        raise ValueError(f"label_prob_std needs (orders>=2, queries, labels), got {tuple(probs.shape)}")
    return probs.to(torch.float64).std(dim=0).mean(dim=-1)
