"""Order sensitivity of a sweep: how much a method's label probabilities move when only the order of the demos changes.

For M orders of the same demonstrations (jobs that differ only in `order_seed`), each query's label-word
distribution (renormalised over the label words) gives M values per label; their standard deviation, averaged over
the labels, is the query's order sensitivity (`icl_gd.metrics.order.label_prob_std`). ICL is order-sensitive; GD
with batch size 1 sees the demos in order (so it is too); full-batch GD is order-free up to float summation order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from icl_gd.metrics.distributions import renormalize
from icl_gd.metrics.order import MIN_ORDERS, label_prob_std
from icl_gd.sweep.jobs import ORDER_KEY, Job, UnreadableJobFile
from icl_gd.sweep.tables import wide_ci

log = logging.getLogger(__name__)

ORDER_TABLE_KEYS = ["model", "dataset", "demos", "method"]


def _label_probs(frames: list[pd.DataFrame], qids: list[str]) -> Tensor:
    """(M orders, Q queries, L labels): each job's label probabilities on `qids`, renormalised over the labels."""
    return torch.stack(
        [
            renormalize(
                torch.as_tensor(np.stack(f.set_index("query_id").loc[qids, "label_probs"].to_numpy()))
            )
            for f in frames
        ]
    )


def _readable(group: list[Job]) -> dict[Path, pd.DataFrame]:
    """folder -> query ids and label probabilities of each job of `group` whose predictions read back."""
    frames = {}
    if len(group) < MIN_ORDERS:
        return frames
    for j in group:
        try:
            frames[j.folder] = j.predictions(["query_id", "label_probs"])
        except UnreadableJobFile as e:
            log.error("%s", e)
    return frames


def order_sensitivity(jobs: list[Job]) -> pd.DataFrame:
    """One row per (job group, query): the order sensitivity of every group of >= 2 jobs differing only in order.

    Jobs without label words are skipped; only the queries every job of a group answered count. A job whose
    predictions do not read back is left out of its group, with an error naming it and the fix.
    """
    groups: dict[str, list[Job]] = {}
    for j in jobs:
        groups.setdefault(j.key(ORDER_KEY), []).append(j)
    rows = []
    for group in groups.values():
        frames = _readable(group)
        group = [j for j in group if j.folder in frames]
        if len(group) < MIN_ORDERS:
            continue
        frames = [frames[j.folder] for j in group]
        if any("label_probs" not in f for f in frames):
            continue
        common = set.intersection(*(set(f.query_id) for f in frames))
        qids = [q for q in frames[0].query_id if q in common]
        std = label_prob_std(_label_probs(frames, qids))
        j0 = group[0]
        c = j0.config
        for q, s in zip(qids, std.tolist(), strict=True):
            rows.append(
                {
                    "model": j0.model_label,
                    "dataset": c["dataset"]["name"],
                    "demos": c["demos"],
                    "seed": c["seed"],
                    "method": j0.shown_label,  # "(shuffled labels)" marked: no pooling with the original
                    "query_id": q,
                    "n_orders": len(group),
                    "std": s,
                }
            )
    return pd.DataFrame(rows)


def order_table(orders: pd.DataFrame) -> pd.DataFrame:
    """Mean per-query std across demo orders per (model, dataset, demos, method), with the number of orders.

    Columns: the keys, n, std / std_lo / std_hi (mean and 95% interval pooling queries and seeds), n_orders.
    """
    keys = ORDER_TABLE_KEYS
    n_orders = orders.groupby(keys, sort=True)["n_orders"].max().reset_index()
    return wide_ci(orders, keys, ["std"]).merge(n_orders, on=keys)
