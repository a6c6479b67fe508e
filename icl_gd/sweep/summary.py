"""comparison.parquet: each pair metric per demo set and pooled per cell, the normalised shares, the paired verdicts.

Rows per demo set (one job pair: `seed`, `job_a`, `job_b` set; a bootstrap over its queries) and per cell (model,
dataset, demos, eval settings, pair: `seed` empty; a two-level cluster bootstrap over its demo sets, then queries).
`n` counts queries, `n_clusters` demo sets, `ci_method` says which interval it is.

The share of ICL's shift reproduced by X (DESIGN.md): 1 - mean D(X, ICL) / mean D(zero-shot, ICL) over a cell, for
D = tv, js (full vocabulary) and label_tv, label_js, where a zero-shot job of the same key exists; 1 = X answers
like ICL, 0 = no closer than zero-shot. The order pair's share is the floor on that scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from icl_gd.metrics.intervals import cluster_bootstrap
from icl_gd.sweep import stats
from icl_gd.sweep.pair_types import is_control
from icl_gd.sweep.verdicts import CELL_KEYS, paired_tests

SHARES = {"tv": "share_tv", "js": "share_js", "label_tv": "label_share_tv", "label_js": "label_share_js"}
ZS = "zs_"  # prefix of the per-query D(zero-shot, ICL) columns
PAIR_KEYS = ["pair_type", "method_a", "method_b"]
SET_KEYS = ["revision", "random_init", "seed", "order_seed_a", "order_seed_b", "job_a", "job_b"]
NOT_METRICS = {"query_id", *CELL_KEYS, *PAIR_KEYS, *SET_KEYS}


def with_zero_shot_distances(queries: pd.DataFrame) -> pd.DataFrame:
    """Add zs_<D> per query to every pair whose reference is an ICL job: D(zero-shot, that ICL job), same query.

    The zero-shot job is that ICL job's own method pair (not the shuffled-label control's zero-shot job)."""
    zs = queries[
        (queries["method_a"] == "icl")
        & (queries["method_b"] == "zeroshot")
        & ~queries["pair_type"].map(is_control)
    ]
    ds = [d for d in SHARES if d in queries]
    if zs.empty or not ds:
        return queries
    ref = zs[["job_a", "query_id", *ds]].rename(columns={d: f"{ZS}{d}" for d in ds})
    ref = ref.drop_duplicates(["job_a", "query_id"])
    return queries.merge(ref, on=["job_a", "query_id"], how="left")


def metric_columns(queries: pd.DataFrame) -> list[str]:
    """The per-query metric columns of a comparison_queries frame."""
    return [c for c in queries.columns if c not in NOT_METRICS and not c.startswith(ZS)]


def _row(keys: dict[str, Any], metric: str, r: Any) -> dict[str, Any]:
    return {
        **keys,
        "metric": metric,
        "mean": r.mean,
        "ci_lo": r.lo,
        "ci_hi": r.hi,
        "n": r.n,
        "n_clusters": r.n_clusters,
        "ci_method": r.method,
        "level": stats.current().level,
    }


def _share(g: pd.DataFrame, d: str, clusters: np.ndarray) -> Any:
    """1 - mean D(X, ICL) / mean D(zero-shot, ICL), with the interval mapped through 1 - ratio."""
    b = stats.current()
    r = cluster_bootstrap(
        g[d].to_numpy(float), clusters, b.n_boot, b.level, b.seed, ratio_to=g[f"{ZS}{d}"].to_numpy(float)
    )
    return type(r)(1 - r.mean, 1 - r.hi, 1 - r.lo, r.n, r.n_clusters, r.method)


def _rows(queries: pd.DataFrame, keys: list[str]) -> list[dict[str, Any]]:
    rows = []
    keys = [k for k in keys if k in queries]
    metrics = metric_columns(queries)
    for key, g in queries.groupby(keys, sort=True, dropna=False):
        desc = dict(zip(keys, key, strict=True))
        clusters = g["seed"].astype(str).to_numpy()
        for m in metrics:
            rows.append(_row(desc, m, stats.interval(g[m], clusters)))
        for d, name in SHARES.items():
            if f"{ZS}{d}" in g and g[f"{ZS}{d}"].notna().any():
                rows.append(_row(desc, name, _share(g, d, clusters)))
    return rows


def summarize(queries: pd.DataFrame) -> pd.DataFrame:
    """comparison.parquet (see the module docstring): per-demo-set rows, then pooled cell rows with the verdicts."""
    per_set = _rows(queries, [*CELL_KEYS, *PAIR_KEYS, *SET_KEYS])
    pooled = pd.DataFrame(_rows(queries, [*CELL_KEYS, *PAIR_KEYS]))
    tests = paired_tests(queries).drop(columns=["n", "n_clusters"])
    pooled = pooled.merge(tests, on=[*CELL_KEYS, "pair_type", "metric"], how="left")
    return pd.concat([pd.DataFrame(per_set), pooled], ignore_index=True)
