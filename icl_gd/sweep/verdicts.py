"""Verdicts: does a method pair agree with ICL as well as ICL agrees with itself in another order?

A pair's 95% interval on each agreement metric is compared with that of the ICL-vs-ICL order pair of the same
(model, dataset, demos): wholly below it is "below floor", wholly above "above floor", overlapping "within floor".
"""

from __future__ import annotations

import math

import pandas as pd

from icl_gd.sweep.jobs import ORDER_PAIR
from icl_gd.sweep.tables import AGREEMENT, wide_ci

BELOW, WITHIN, ABOVE, NA = "no (below floor)", "within floor", "above floor", "n/a"
MIN_ORDER_DEMOS = 2  # fewer demonstrations have a single order, so the ICL-order floor is trivially perfect
ONE_ORDER = "n/a (one order)"
HEADLINE_KEYS = ["model", "dataset", "demos"]


def interval(mean: float, lo: float, hi: float) -> tuple[float, float]:
    """The interval to compare; a single value (NaN bounds) is its own interval."""
    return (mean, mean) if math.isnan(lo) or math.isnan(hi) else (lo, hi)


def verdict(pair: tuple[float, float], floor: tuple[float, float]) -> str:
    """Does a method pair agree as well as ICL with itself in another order? Compares the two 95% intervals."""
    if any(math.isnan(v) for v in (*pair, *floor)):
        return NA
    if pair[1] < floor[0]:
        return BELOW
    if pair[0] > floor[1]:
        return ABOVE
    return WITHIN


def combine_verdicts(verdicts: list[str]) -> str:
    """One verdict over several metrics: below the floor on any metric is below; n/a only when all are."""
    known = [v for v in verdicts if v != NA]
    for v in (BELOW, ABOVE):
        if v in known:
            return v
    return WITHIN if known else NA


def headline_table(queries: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, demos, method pair): accuracies, agreement ± CI, the ICL-order floor and the verdict."""
    keys = HEADLINE_KEYS
    metrics = [m for m in AGREEMENT if m in queries]
    pairs = queries[queries["pair_type"] != ORDER_PAIR]
    table = wide_ci(
        pairs, [*keys, "pair_type", "method_a", "method_b"], [*metrics, "accuracy_a", "accuracy_b"]
    )
    floor = wide_ci(queries[queries["pair_type"] == ORDER_PAIR], keys, metrics).drop(columns="n")
    floor = floor.rename(columns={c: f"floor_{c}" for c in floor.columns if c not in keys})
    table = table.merge(floor, on=keys, how="left")

    def row_verdict(r: pd.Series) -> str:
        return combine_verdicts(
            [
                verdict(
                    interval(r[m], r[f"{m}_lo"], r[f"{m}_hi"]),
                    interval(r[f"floor_{m}"], r[f"floor_{m}_lo"], r[f"floor_{m}_hi"]),
                )
                for m in metrics
            ]
        )

    table["verdict"] = table.apply(row_verdict, axis=1) if len(table) else pd.Series(dtype=str)
    table.loc[table["demos"] < MIN_ORDER_DEMOS, "verdict"] = (
        ONE_ORDER  # one demo has no other order: no floor
    )
    return table
