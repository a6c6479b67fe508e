"""Reductions of per-query values to a mean and its interval, and the tests a verdict rests on.

The demonstration set is the unit of replication (DESIGN.md, "Statistics"): across demo sets intervals are a
two-level cluster bootstrap (demo sets with replacement, then queries within each), seeded; per job (one demo set)
0/1 metrics get Wilson intervals and other means a bootstrap over queries. Pure functions; float64 throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def normal_interval(mean: float, se: float, z: float = Z95) -> tuple[float, float]:
    """(lo, hi) = mean -/+ z * se: the normal interval from a standard error (Monte Carlo estimates)."""
    return mean - z * se, mean + z * se


# ---------------------------------------------------------------------------------------------------------
# Reduction: mean and Student-t confidence interval


def t_quantile(q: float, df: float) -> float:
    """Quantile of Student's t with df degrees of freedom (scipy.stats.t)."""
    return float(stats.t.ppf(q, df))


def mean_ci(values: Tensor | Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the sample mean and its two-sided Student-t confidence interval.

    mean ± t_{(1+confidence)/2, n-1} * s / sqrt(n), s the sample standard deviation (n-1 denominator).
    values: any shape, flattened; NaNs are dropped first. n = 1 gives (x, nan, nan); n = 0 all NaN.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"mean_ci: confidence must be in (0, 1), got {confidence}")
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    x = x[~torch.isnan(x)]
    n = x.numel()
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = x.mean().item()
    if n == 1:
        return mean, math.nan, math.nan
    half = t_quantile(0.5 * (1.0 + confidence), n - 1) * x.std().item() / math.sqrt(n)
    return mean, mean - half, mean + half


def summarize(name: str, values: Tensor | Sequence[float]) -> dict[str, float]:
    """{name: mean, name_ci_lo: lo, name_ci_hi: hi, name_n: n}, with the 95% Student-t interval of `mean_ci`.

    n counts the non-NaN values.
    """
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    mean, lo, hi = mean_ci(x)
    n = int((~torch.isnan(x)).sum().item())
    return {name: mean, f"{name}_ci_lo": lo, f"{name}_ci_hi": hi, f"{name}_n": float(n)}


@dataclass(frozen=True)
class Interval:
    """A mean with its interval; n values in n_clusters clusters; `method` says how it was computed."""

    mean: float
    lo: float
    hi: float
    n: int
    n_clusters: int
    method: str
    p: float = math.nan  # two-sided bootstrap p-value of mean = 0 (paired tests only)


WILSON = "wilson"
CLUSTER_BOOTSTRAP = "cluster_bootstrap"  # demo sets, then queries within each
QUERY_BOOTSTRAP = "query_bootstrap"  # one demo set: covers query sampling only
BOOT_CHUNK = 1 << 22  # replicate x query counts held at once (memory bound of the vectorised bootstrap)


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (scipy.stats.binomtest): inside [0, 1], and it reaches 1 at k = n."""
    if n == 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(min(ci.high, 1.0))


def _codes(clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cluster code per value, start offset per cluster, size per cluster), values grouped by cluster."""
    _, codes = np.unique(clusters, return_inverse=True)
    sizes = np.bincount(codes)
    return codes, np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes


def bootstrap_counts(clusters: np.ndarray, n_boot: int, rng: np.random.Generator):
    """Yield (b, N) matrices of how often each value is drawn, b replicates at a time, N = len(clusters).

    Two levels: C clusters drawn with replacement, then, for each draw of cluster k, its n_k values with
    replacement. Values must be ordered by cluster (see `_codes`); a replicate's statistic is any weighted mean.
    """
    codes, start, sizes = _codes(clusters)
    C, N, width = len(sizes), len(clusters), int(sizes.max())
    per = max(1, BOOT_CHUNK // max(1, C * width + N))
    done = 0
    while done < n_boot:
        b = min(per, n_boot - done)
        k = rng.integers(0, C, size=(b, C))  # (b, C) clusters drawn
        n_k = sizes[k][..., None]  # (b, C, 1)
        idx = np.floor(rng.random((b, C, width)) * n_k).astype(np.int64)  # (b, C, width) within-cluster draws
        valid = np.arange(width) < n_k
        flat = (np.arange(b)[:, None, None] * N + start[k][..., None] + idx)[valid]
        yield np.bincount(flat, minlength=b * N).reshape(b, N).astype(np.float64)
        done += b


def _ordered(clusters: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.argsort(clusters, kind="stable")
    return (clusters[order], *(a[order] for a in arrays))


def _replicates(
    num: np.ndarray, den: np.ndarray | None, clusters: np.ndarray, n_boot: int, seed: int
) -> np.ndarray:
    """Bootstrap replicates of mean(num) (or of mean(num) / mean(den))."""
    rng = np.random.default_rng(seed)
    out = []
    for w in bootstrap_counts(clusters, n_boot, rng):
        top = w @ num / w.sum(1)
        out.append(top if den is None else top / (w @ den / w.sum(1)))
    return np.concatenate(out)


def _clean(values: np.ndarray, clusters: np.ndarray, *more: np.ndarray):
    keep = np.isfinite(values)
    for m in more:
        keep &= np.isfinite(m)
    return (values[keep], np.asarray(clusters)[keep], *(m[keep] for m in more))


def cluster_bootstrap(
    values, clusters, n_boot: int = 2000, level: float = 0.95, seed: int = 0, ratio_to=None
) -> Interval:
    """Mean of `values` (or mean(values) / mean(ratio_to)) with its two-level cluster-bootstrap percentile interval.

    clusters: one label per value (the demo set). One cluster: only queries are resampled (method says so).
    Non-finite values are dropped first. An empty input gives NaNs.
    """
    v = np.asarray(values, dtype=np.float64)
    den = None if ratio_to is None else np.asarray(ratio_to, dtype=np.float64)
    if den is None:
        v, c = _clean(v, np.asarray(clusters))
    else:
        v, c, den = _clean(v, np.asarray(clusters), den)
    n, n_clusters = len(v), len(np.unique(c))
    method = CLUSTER_BOOTSTRAP if n_clusters > 1 else QUERY_BOOTSTRAP
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, 0, method)
    mean = float(v.mean() if den is None else v.mean() / den.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, 1, method)
    c, v, *rest = _ordered(c, v, *([] if den is None else [den]))
    reps = _replicates(v, rest[0] if rest else None, c, n_boot, seed)
    a = (1 - level) / 2
    lo, hi = np.nanquantile(reps, [a, 1 - a])
    p = 2 * min((reps <= 0).sum() + 1, (reps >= 0).sum() + 1) / (len(reps) + 1)
    return Interval(mean, float(lo), float(hi), n, n_clusters, method, float(min(1.0, p)))


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN and are not counted."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def summarize_binary(name: str, values, level: float = 0.95) -> dict[str, float]:
    """{name, name_ci_lo, name_ci_hi, name_n} of a 0/1 metric over queries: the mean with its Wilson interval."""
    x = np.asarray(torch.as_tensor(values, dtype=torch.float64).flatten())
    x = x[np.isfinite(x)]
    lo, hi = wilson(int(round(x.sum())), len(x), level)
    mean = float(x.mean()) if len(x) else math.nan
    return {name: mean, f"{name}_ci_lo": lo, f"{name}_ci_hi": hi, f"{name}_n": float(len(x))}


def summarize_mean(
    name: str, values, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """The same keys for a mean over the queries of one demo set: a bootstrap over queries (inside the values' range)."""
    x = np.asarray(torch.as_tensor(values, dtype=torch.float64).flatten())
    r = cluster_bootstrap(x, np.zeros(len(x)), n_boot, level, seed)
    return {name: r.mean, f"{name}_ci_lo": r.lo, f"{name}_ci_hi": r.hi, f"{name}_n": float(r.n)}
