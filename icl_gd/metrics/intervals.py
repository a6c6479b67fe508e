"""Reductions of per-query values to a mean and its interval: Student-t over values, normal from a standard error.

Pure functions; float64 throughout. Issue-14 statistics (cluster bootstrap, Wilson) belong here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import torch
from torch import Tensor

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def normal_interval(mean: float, se: float, z: float = Z95) -> tuple[float, float]:
    """(lo, hi) = mean -/+ z * se: the normal interval from a standard error (Monte Carlo estimates)."""
    return mean - z * se, mean + z * se


# ---------------------------------------------------------------------------------------------------------
# Reduction: mean and Student-t confidence interval


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    """Student-t CDF: for t >= 0, F(t) = 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2."""
    tail = 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, df: float) -> float:
    """Quantile of Student's t with df degrees of freedom (upper half, q in [0.5, 1)).

    Bisection on the exact CDF (|error| < 1e-9); above 1e5 degrees of freedom the normal quantile with the
    first Cornish-Fisher term, z + (z^3 + z) / (4 df), is exact to well below 1e-9.
    """
    if not 0.5 <= q < 1.0:
        raise ValueError(f"t quantile: q must be in [0.5, 1), got {q}")
    z = NormalDist().inv_cdf(q)
    if df > 1e5:
        return z + (z**3 + z) / (4.0 * df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


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
