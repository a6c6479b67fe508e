"""The grid of a linreg job: its points, their labels and task distributions, the (d, n) groups they form, and
the random streams every phase draws from.

Each (d, n) pair of the grid is one group; every grid point of a group times `method.seeds` is one ensemble
member (e = point * seeds + seed), and all members of a group train and evaluate as one batched computation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from icl_gd.linreg.config import CovConfig, LinregJob
from icl_gd.linreg.data import TaskSpec, covariance, stack_specs
from icl_gd.linreg.tables import Tables

GRID_KEYS = ("d", "n", "noise", "rag_alpha", "align_alpha", "rank")  # list-valued keys expand into a grid
STREAMS = {
    "data": 0,
    "init": 1,
    "eval": 2,
    "theory": 3,
    "tune": 4,
    "lora": 5,
    "construction": 6,
    "curves": 7,
    "sensitivity": 8,
}


def generator(seed: int, stream: str, *extra: int) -> torch.Generator:
    """An independent generator per (seed, purpose, group): changing one stream never shifts another."""
    state = np.random.SeedSequence([seed, STREAMS[stream], *extra]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def covariances(cov: CovConfig, d: int) -> torch.Tensor:
    """The d x d covariance a CovConfig describes (float64)."""
    return covariance(cov.kind, d, cov.power, cov.matrix)


def point_spec(job: LinregJob, point: dict[str, Any], shifted: bool = False) -> TaskSpec:
    """The task distribution of one grid point (E = 1); `shifted` swaps in dataset.shift's covariances."""
    d = point["d"]
    fc, tc = job.data.feature_cov, job.data.task_cov
    if shifted:
        fc = job.data.shift.feature_cov or fc
        tc = job.data.shift.task_cov or tc

    def one(v: float) -> torch.Tensor:
        return torch.tensor([float(v)], dtype=torch.float64)

    return TaskSpec(
        covariances(fc, d)[None],
        covariances(tc, d)[None],
        one(point["noise"]),
        one(point["rag_alpha"]),
        one(point["align_alpha"]),
    )


def _axes(job: LinregJob) -> dict[str, list]:
    data = job.data
    values = [data.d, data.n, data.noise, data.rag_alpha, data.align_alpha, job.ranks]
    return dict(zip(GRID_KEYS, values, strict=True))


def grid_points(job: LinregJob) -> list[dict[str, Any]]:
    """Every grid point (a dict over GRID_KEYS), in a stable order: d and n outermost so groups are contiguous."""
    return [dict(zip(GRID_KEYS, vals, strict=True)) for vals in itertools.product(*_axes(job).values())]


def varying_keys(job: LinregJob) -> list[str]:
    """Grid keys with more than one value (they label metrics and form figure axes)."""
    return [k for k, values in _axes(job).items() if len(values) > 1]


def fmt(v: Any) -> str:
    """A grid value as it appears in labels: 'full' for rank None, floats in %g."""
    if v is None:
        return "full"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def suffix(point: dict[str, Any], keys: list[str]) -> str:
    """Metric-key suffix naming a grid point by its varying keys: '@d=5,noise=0.5' ('' for a one-point job)."""
    return "@" + ",".join(f"{k}={fmt(point[k])}" for k in keys) if keys else ""


@dataclass
class Group:
    """One (d, n) pair: its grid points and their seeds as ensemble members e = point * seeds + seed."""

    index: int
    d: int
    n: int
    points: list[dict[str, Any]]
    seeds: int
    spec: TaskSpec = field(init=False)

    def __post_init__(self) -> None:
        self.members_of = [list(range(p * self.seeds, (p + 1) * self.seeds)) for p in range(len(self.points))]

    @property
    def members(self) -> int:
        return len(self.points) * self.seeds

    def per_member(self, values: list[Any]) -> list[Any]:
        return [v for v in values for _ in range(self.seeds)]


def groups(job: LinregJob) -> list[Group]:
    """The job's (d, n) groups in grid order; a construction has one member per point (nothing to seed)."""
    seeds = job.train.seeds if job.trainable else 1
    by_dn = itertools.groupby(grid_points(job), key=lambda p: (p["d"], p["n"]))
    out = [Group(i, d, n, list(pts), seeds) for i, ((d, n), pts) in enumerate(by_dn)]
    for g in out:
        g.spec = stack_specs([point_spec(job, p) for p in g.points for _ in range(g.seeds)])
    return out


@dataclass
class Context:
    """What every phase of a job shares: the typed job, its varying keys, where rows and logs go, dtype/device."""

    job: LinregJob
    keys: list[str]
    tracker: Any
    tables: Tables
    dtype: torch.dtype
    device: torch.device
