"""The sweep's one interval helper: a two-level cluster bootstrap over demo sets (the `seed` column), then queries.

The settings (`stats.n_boot`, `stats.level`, `stats.seed`) are the jobs' own (`settings_of`), else conf/config.yaml's.
`wide_ci` and `long_ci` reduce a per-query frame per group; with one demo set in a group the interval covers
query sampling only (its `n_clusters` says 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from icl_gd.confdir import config_file
from icl_gd.metrics.intervals import Interval, cluster_bootstrap

CLUSTER = "seed"  # the column naming a row's demonstration set: the unit of replication
CONFIG = config_file("config.yaml")  # conf/config.yaml of the checkout, or of an installed wheel


@dataclass(frozen=True)
class Boot:
    """Bootstrap settings: replicates, confidence level, seed of the draws."""

    n_boot: int
    level: float
    seed: int
    primary: str = "auto"


def _from(node: Any) -> Boot:
    return Boot(
        int(node["n_boot"]), float(node["level"]), int(node["seed"]), str(node.get("primary", "auto"))
    )


def default_settings() -> Boot:
    """conf/config.yaml's `stats:` node: the one place the defaults live."""
    return _from(OmegaConf.to_container(OmegaConf.load(CONFIG).stats))


def settings_of(configs: Iterable[dict[str, Any]]) -> Boot:
    """The first job config's `stats` node (jobs of one sweep share it), else the defaults."""
    for c in configs:
        if isinstance(c.get("stats"), dict):
            return _from(c["stats"])
    return default_settings()


_current = [default_settings()]


def use(settings: Boot) -> None:
    """Set the settings every interval of this process uses (compare and report call it with the jobs' own)."""
    _current[0] = settings


def current() -> Boot:
    return _current[0]


def interval(values: Any, clusters: Any = None) -> Interval:
    """The cluster-bootstrap interval of the mean of `values` (one cluster when `clusters` is None)."""
    v = np.asarray(values, dtype=float)
    c = np.zeros(len(v)) if clusters is None else np.asarray(clusters)
    b = current()
    return cluster_bootstrap(v, c, b.n_boot, b.level, b.seed)


def ci(values: Any, clusters: Any = None) -> tuple[float, float, float]:
    """(mean, lo, hi) of `interval`, NaNs dropped."""
    r = interval(values, clusters)
    return r.mean, r.lo, r.hi


def _clusters(g: pd.DataFrame) -> Any:
    return g[CLUSTER].astype(str).to_numpy() if CLUSTER in g else None


def wide_ci(df: pd.DataFrame, keys: list[str], values: Iterable[str]) -> pd.DataFrame:
    """Per group of `keys`: n, n_clusters and, for each value column v, v / v_lo / v_hi (mean and interval)."""
    values = [v for v in values if v in df]
    cols = [*keys, "n", "n_clusters", *[f"{v}{s}" for v in values for s in ("", "_lo", "_hi")]]
    rows = []
    for key, g in df.groupby(keys, sort=True, dropna=False):
        clusters = _clusters(g)
        row: dict[str, Any] = {**dict(zip(keys, key, strict=True)), "n": len(g)}
        row["n_clusters"] = 1 if clusters is None else len(set(clusters))
        for v in values:
            row[v], row[f"{v}_lo"], row[f"{v}_hi"] = ci(g[v], clusters)
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def long_ci(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """wide_ci of one value, its columns named mean / lo / hi (what the plots take)."""
    return wide_ci(df, keys, [value]).rename(
        columns={value: "mean", f"{value}_lo": "lo", f"{value}_hi": "hi"}
    )


def half_width(lo: float, hi: float) -> float:
    """Half the width of an interval (what a table shows after ±); NaN when the interval has no upper bound."""
    return (hi - lo) / 2 if np.isfinite(hi) else float("nan")


def with_half_widths(table: pd.DataFrame, values: Iterable[str]) -> pd.DataFrame:
    """A wide_ci table with each value's v_lo / v_hi replaced by v_ci, its half-width, right after v."""
    values = [v for v in values if v in table]
    out = table.assign(
        **{
            f"{v}_ci": [half_width(lo, hi) for lo, hi in zip(table[f"{v}_lo"], table[f"{v}_hi"], strict=True)]
            for v in values
        }
    )
    bounds = {f"{v}{s}" for v in values for s in ("_lo", "_hi")}
    ordered = [x for c in table.columns if c not in bounds for x in ((c, f"{c}_ci") if c in values else (c,))]
    return out[ordered]
