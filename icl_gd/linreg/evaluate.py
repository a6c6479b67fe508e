"""One evaluation loop for every predictor, and the statistics of Monte Carlo risks.

All predictors see exactly the same fresh tasks, so their risks can be compared pairwise: the paired difference to
a reference predictor whose risk is known in closed form has a far smaller standard error than either risk alone
(a control variate). Intervals are normal-approximation 95% intervals, mean +- 1.96 standard errors
(`icl_gd.metrics.normal_interval`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from icl_gd.linreg.data import TaskSampler
from icl_gd.metrics import normal_interval


@dataclass
class Risk:
    """Monte Carlo squared-error risk per member (and per position when evaluated on prefixes)."""

    mean: Tensor  # (E,) or (E, T)
    se: Tensor  # same shape: standard error of the mean
    tasks: int  # tasks per member

    @property
    def ci95(self) -> tuple[Tensor, Tensor]:
        return normal_interval(self.mean, self.se)


class _Moments:
    """Running sums of a per-task quantity (E, B[, T]) in float64."""

    def __init__(self) -> None:
        self.s1: Tensor | None = None
        self.s2: Tensor | None = None
        self.count = 0

    def add(self, v: Tensor) -> None:
        v = v.to(torch.float64)
        s1, s2 = v.sum(1), (v**2).sum(1)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.count += v.shape[1]

    def risk(self) -> Risk:
        mean = self.s1 / self.count
        var = (self.s2 / self.count - mean**2).clamp_min(0) * self.count / max(1, self.count - 1)
        return Risk(mean, (var / self.count).sqrt(), self.count)


@torch.no_grad()
def evaluate(
    predictors: dict[str, nn.Module],
    sampler: TaskSampler,
    tasks: int,
    chunk: int,
    generator: torch.Generator,
    prefix: bool = False,
    reference: str | None = None,
) -> tuple[dict[str, Risk], dict[str, Risk]]:
    """Risks of every predictor on the same `tasks` fresh tasks per member, drawn in chunks.

    With prefix=False only the query is scored (E,); with prefix=True every position i, predicted from the i
    examples before it, is scored (E, T). Also returns, for every other predictor, the paired difference of its
    squared error to `reference`'s on the same tasks.
    """
    sums = {name: _Moments() for name in predictors}
    diffs = {name: _Moments() for name in predictors if reference is not None and name != reference}
    done = 0
    while done < tasks:
        b = min(chunk, tasks - done)
        xs, ys, _ = sampler.sample(b, generator)
        errs = {}
        for name, model in predictors.items():
            pred = model(xs, ys, query_only=not prefix)
            errs[name] = (pred - (ys if prefix else ys[:, :, -1])).to(torch.float64) ** 2
            sums[name].add(errs[name])
        for name, acc in diffs.items():
            acc.add(errs[name] - errs[reference])
        done += b
    return {k: v.risk() for k, v in sums.items()}, {k: v.risk() for k, v in diffs.items()}


def pool(risk: Risk, groups: list[list[int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Pool seeds: for each group of members, (mean over its members, standard error, std across members).

    The standard error is that of the mean of the members' Monte Carlo estimates (sqrt(sum se^2) / S): the
    uncertainty about these trained models' average risk. The spread between seeds is reported separately.
    """
    means, ses, stds = [], [], []
    for g in groups:
        m, s = risk.mean[g], risk.se[g]
        means.append(m.mean(0))
        ses.append((s**2).sum(0).sqrt() / len(g))
        stds.append(m.std(0) if len(g) > 1 else torch.zeros_like(m[0]))
    return torch.stack(means), torch.stack(ses), torch.stack(stds)
