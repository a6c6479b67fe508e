"""Order sensitivity: how much a method's label probabilities move when only the order of the demos changes.

For M orders of the same demonstrations (jobs that differ only in `order_seed`), each query's label-word
distribution (renormalised over the label words) gives M values per label; their standard deviation, averaged over
the labels, is the query's order sensitivity. ICL is order-sensitive; GD with batch size 1 sees the demos in order
(so it is too); full-batch GD is order-free up to float summation order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from icl_gd import metrics as M

ORDER_KEY = "order_seed"


def label_prob_std(probs: Tensor) -> Tensor:
    """probs (M orders, Q queries, L labels), each row a distribution -> (Q,) mean over labels of the std over orders.

    The std uses the M-1 denominator (an unbiased variance across orders); M must be >= 2.
    """
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(f"label_prob_std needs (orders>=2, queries, labels), got {tuple(probs.shape)}")
    return probs.to(torch.float64).std(dim=0).mean(dim=-1)


def order_sensitivity(jobs: list[Any]) -> pd.DataFrame:
    """One row per (job group, query): the order sensitivity of every group of >= 2 jobs differing only in order.

    jobs: compare.Job objects (folder, config, method_label, model_label). Jobs without label words are skipped.
    """
    groups: dict[str, list[Any]] = {}
    for j in jobs:
        groups.setdefault(j.key(ORDER_KEY), []).append(j)
    rows = []
    for group in groups.values():
        if len(group) < 2:
            continue
        frames = [j.predictions(["query_id", "label_probs"]) for j in group]
        if any("label_probs" not in f for f in frames):
            continue
        common = set.intersection(*(set(f.query_id) for f in frames))
        qids = [q for q in frames[0].query_id if q in common]
        stacked = torch.stack(
            [
                M.renormalize(
                    torch.as_tensor(np.stack(f.set_index("query_id").loc[qids, "label_probs"].to_numpy()))
                )
                for f in frames
            ]
        )
        std = label_prob_std(stacked)
        j0 = group[0]
        c = j0.config
        for q, s in zip(qids, std.tolist(), strict=True):
            rows.append(
                {
                    "model": j0.model_label,
                    "dataset": c["dataset"]["name"],
                    "demos": c["demos"],
                    "seed": c["seed"],
                    "method": j0.method_label,
                    "query_id": q,
                    "n_orders": len(group),
                    "std": s,
                }
            )
    return pd.DataFrame(rows)


def summarize_order(df: pd.DataFrame) -> pd.DataFrame:
    """Mean order sensitivity with its 95% interval per (model, dataset, demos, method), pooling queries and seeds."""
    rows = []
    for key, g in df.groupby(["model", "dataset", "demos", "method"], sort=True):
        mean, lo, hi = M.mean_ci(torch.as_tensor(g["std"].to_numpy(dtype=float, copy=True)))
        rows.append(
            {
                **dict(zip(["model", "dataset", "demos", "method"], key, strict=True)),
                "std": mean,
                "ci_lo": lo,
                "ci_hi": hi,
                "n": len(g),
                "n_orders": int(g["n_orders"].max()),
            }
        )
    return pd.DataFrame(rows)
