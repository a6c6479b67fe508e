"""Verdicts: does a method agree with ICL as well as ICL agrees with itself in another order? A paired test.

Per query, d = sim(X, ICL) - sim(ICL in another order, ICL) on the same queries and demo set, on one primary
metric (`stats.primary`; auto = label_tv where label words exist, else overlap@k), signed so that d > 0 means X is
more alike to ICL than the floor. The mean of d gets a two-level cluster-bootstrap interval and p-value (demo sets,
then queries); p-values are Holm-adjusted across the table's cells; p_holm < 1 - level gives "below floor" or
"above floor" by the sign of d, else "within floor".

Tested: ICL (original labels) against each other method but zero-shot, the shuffled-label control included (its
ICL is the floor's ICL, so the test is paired as any other). Not tested: order pairs (floors themselves, GD's
`gd_vs_gd_order` shown beside ICL's), pairs of two jobs on shuffled labels (their ICL is not the floor's), and
pairs without ICL or against zero-shot (`gd vs zeroshot`, `gd(bs=1) vs gd(bs=all)`: "—", the floor says nothing
about them).
"""

from __future__ import annotations

import pandas as pd

from icl_gd.metrics.intervals import holm
from icl_gd.sweep import stats
from icl_gd.sweep.pair_types import ORDER_PAIR, is_both_control, is_control, is_order_pair
from icl_gd.sweep.stats import wide_ci
from icl_gd.sweep.tables import AGREEMENT

BELOW, WITHIN, ABOVE, NA = "below floor", "within floor", "above floor", "n/a"
MIN_ORDER_DEMOS = 2  # fewer demonstrations have a single order, so there is no ICL-order floor
ONE_ORDER = "n/a (one order)"
NOT_A_CANDIDATE = "—"  # not ICL against a candidate (icl vs zeroshot, gd vs zeroshot, gd(bs=1) vs gd(bs=all))
FLOOR_ROW = "n/a (a floor)"  # an order pair's row: a noise floor itself (GD's beside ICL's), not a candidate
BOTH_CONTROL_ROW = (
    "n/a (both controls)"  # both jobs on shuffled labels / another task's demos: not the floor's ICL
)
HEADLINE_KEYS = ["model", "dataset", "demos", "eval"]  # eval: pairs pool only within equal settings
CELL_KEYS = ["model", "dataset", "demos", "eval"]  # pairs are pooled only within equal evaluation settings
DISTANCES = ("tv", "js", "kl")  # lower = more alike (also label_tv, label_js, label_kl)
NOT_TESTED = (
    "icl",
    "zeroshot",
)  # ICL is the reference; zero-shot is a control, not a candidate for "like ICL"
JOIN = ["seed", "query_id"]


def more_alike_sign(metric: str) -> float:
    """+1 where higher = more alike (overlap, OCS, agreement, shares), -1 for divergences."""
    return -1.0 if metric.removeprefix("label_") in DISTANCES else 1.0


def primary_metric(queries: pd.DataFrame, primary: str | None = None) -> str:
    """The verdict's metric: `stats.primary`, or for auto label_tv where the pairs have label words, else overlap@k."""
    primary = primary or stats.current().primary
    if primary != "auto":
        return primary
    return "label_tv" if "label_tv" in queries and queries["label_tv"].notna().any() else "overlap@k"


def with_eval(queries: pd.DataFrame) -> pd.DataFrame:
    """The frame with an `eval` column (comparison files written before it existed pool as one setting)."""
    return queries if "eval" in queries else queries.assign(eval="")


def is_candidate(frame: pd.DataFrame) -> pd.Series:
    """Per row (of a frame with pair_type, method_a, method_b): a pair the ICL floor can judge, ICL against
    another method that is not zero-shot (no order pair; no pair of two control jobs: their ICL reference is not
    the floor's; no pair of two other methods: the floor says nothing about them)."""
    pair = frame["pair_type"].astype(str)
    return (
        (frame["method_a"] == "icl")
        & ~pair.map(is_order_pair)
        & ~pair.map(is_both_control)
        & ~frame["method_b"].isin(NOT_TESTED)
    )


def tested_pairs(queries: pd.DataFrame) -> pd.DataFrame:
    """Rows of the pairs that get a verdict (`is_candidate`)."""
    return queries[is_candidate(queries)]


def paired_tests(queries: pd.DataFrame, primary: str | None = None) -> pd.DataFrame:
    """One row per (cell, tested pair): the primary metric's paired difference with the floor, p, p_holm, verdict."""
    queries = with_eval(queries)
    metric = primary_metric(queries, primary)
    cols = [*CELL_KEYS, "pair_type", "metric", "d_mean", "d_lo", "d_hi", "p", "n", "n_clusters"]
    if queries.empty or metric not in queries:
        return pd.DataFrame(columns=[*cols, "p_holm", "verdict"])
    sign = more_alike_sign(metric)
    floor = (
        queries[queries["pair_type"] == ORDER_PAIR].groupby([*CELL_KEYS, *JOIN], dropna=False)[metric].mean()
    )
    rows = []
    for key, g in tested_pairs(queries).groupby([*CELL_KEYS, "pair_type"], dropna=False):
        j = g.join(floor.rename("floor"), on=[*CELL_KEYS, *JOIN], how="inner")
        if j.empty:  # no order pair in this cell (one demo, or no order seed run): no floor to test against
            continue
        r = stats.interval(sign * (j[metric] - j["floor"]), j["seed"].astype(str))
        rows.append(
            {
                **dict(zip([*CELL_KEYS, "pair_type"], key, strict=True)),
                "metric": metric,
                "d_mean": r.mean,
                "d_lo": r.lo,
                "d_hi": r.hi,
                "p": r.p,
                "n": r.n,
                "n_clusters": r.n_clusters,
            }
        )
    out = pd.DataFrame(rows, columns=cols)
    out["p_holm"] = holm(out["p"].to_numpy()) if len(out) else []
    alpha = 1 - stats.current().level
    out["verdict"] = [
        NA if pd.isna(p) else WITHIN if p >= alpha else (ABOVE if d > 0 else BELOW)
        for p, d in zip(out["p_holm"], out["d_mean"], strict=True)
    ]
    return out


def headline_table(queries: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, demos, method pair): accuracies, agreement ± CI, the ICL-order floor, the paired verdict.

    Other order pairs (GD's floor `gd_vs_gd_order`, ...) are rows of their own, beside the ICL floor's columns."""
    keys = HEADLINE_KEYS
    queries = with_eval(queries)
    metrics = [m for m in AGREEMENT if m in queries]
    pairs = queries[queries["pair_type"] != ORDER_PAIR]
    table = wide_ci(
        pairs, [*keys, "pair_type", "method_a", "method_b"], [*metrics, *accuracy_columns(queries)]
    )
    floor = wide_ci(queries[queries["pair_type"] == ORDER_PAIR], keys, metrics).drop(
        columns=["n", "n_clusters"]
    )
    floor = floor.rename(columns={c: f"floor_{c}" for c in floor.columns if c not in keys})
    table = table.merge(floor, on=keys, how="left")
    tests = paired_tests(queries)[[*keys, "pair_type", "metric", "d_mean", "p_holm", "verdict"]]
    table = table.merge(tests, on=[*keys, "pair_type"], how="left")
    table["verdict"] = table["verdict"].fillna(NA)
    pair = table["pair_type"].astype(str)
    candidate = is_candidate(table)
    table.loc[~candidate, "verdict"] = NOT_A_CANDIDATE
    table.loc[pair.map(is_both_control), "verdict"] = BOTH_CONTROL_ROW
    table.loc[pair.map(is_order_pair), "verdict"] = FLOOR_ROW
    table["metric"] = table["metric"].fillna("—")  # rows that get no test (zero-shot controls, no floor)
    table.loc[candidate & (table["demos"] < MIN_ORDER_DEMOS), "verdict"] = ONE_ORDER  # one order: no floor
    group = pair.map(row_group)
    return (
        table.assign(_group=group)
        .sort_values([*keys, "_group", "pair_type"], kind="stable", ignore_index=True)
        .drop(columns="_group")
    )


def accuracy_columns(queries: pd.DataFrame) -> list[str]:
    """The headline's accuracy columns: label accuracy (what the accuracy figure shows) where the comparison
    has it, else top-1 accuracy (comparison files written before label accuracy was stored)."""
    label = ["label_accuracy_a", "label_accuracy_b"]
    return label if all(c in queries for c in label) else ["accuracy_a", "accuracy_b"]


def row_group(pair_type: str) -> int:
    """Where a pair's row goes within its cell: the method pairs, the floors (GD's), the shuffled-label controls,
    then the pairs of two jobs on shuffled labels."""
    if is_both_control(pair_type):
        return 3
    if is_control(pair_type):
        return 2
    return 1 if is_order_pair(pair_type) else 0
