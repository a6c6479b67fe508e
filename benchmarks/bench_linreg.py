"""Linear-regression lab: one batched training step over seeds x tasks versus a Python loop over them.

The lab trains every (grid point, seed) member on fresh tasks as one tensor computation. The naive way trains
each member as its own model and handles one task at a time. Both do the same work per step (sample fresh tasks,
predict the queries, squared loss, backward); the ratio of their wall times, measured in the same run on the same
thread count, is `linreg_batched_vs_loop`. A second ratio loops over members only (each member batched over its
tasks): how much of the gain is the batching of seeds.

    python -m benchmarks.bench_linreg
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from icl_gd.linreg.data import TaskSampler, TaskSpec
from icl_gd.linreg.models import LSA, LSAConfig
from icl_gd.linreg.train import query_loss

log = logging.getLogger("icl_gd.bench")


@dataclass
class BenchConfig:
    d: int = 5  # the linreg_theory preset's size
    n: int = 10
    seeds: int = 2
    noise: tuple[float, ...] = (0.0, 0.5)  # grid points batched with the seeds: members = 2 x 2
    tasks: int = 128  # tasks per member per step (the loop handles them one by one)
    steps: int = 3  # timed steps per variant; the best of `repeats` rounds is kept
    repeats: int = 3
    threads: int = 1  # as method.threads in the lab


def _spec(cfg: BenchConfig) -> TaskSpec:
    members = len(cfg.noise) * cfg.seeds
    eye = torch.eye(cfg.d, dtype=torch.float64).expand(members, cfg.d, cfg.d).clone()
    noise = torch.tensor([s for s in cfg.noise for _ in range(cfg.seeds)], dtype=torch.float64)
    zeros = torch.zeros(members, dtype=torch.float64)
    return TaskSpec(eye, eye.clone(), noise, zeros, zeros.clone())


def _best_time(fn: Callable[[], None], steps: int, repeats: int) -> float:
    """Best-of-`repeats` wall time of `steps` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(cfg: BenchConfig | None = None) -> dict[str, float]:
    """Measure both ways in one run; returns {"linreg_batched_vs_loop": ratio, ...}."""
    cfg = cfg or BenchConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        spec = _spec(cfg)
        E = spec.members
        batched = LSA(LSAConfig(cfg.d, members=E), torch.Generator().manual_seed(0))
        sampler = TaskSampler(spec, cfg.n)
        gen = torch.Generator().manual_seed(1)

        def batched_step() -> None:
            xs, ys, _ = sampler.sample(cfg.tasks, gen)  # (E, B, T, d) fresh tasks for every member
            batched.zero_grad()
            query_loss(batched, xs, ys).sum().backward()

        # the naive way: one model per member, one task at a time
        singles = [LSA(LSAConfig(cfg.d, members=1), torch.Generator().manual_seed(e)) for e in range(E)]
        member_samplers = [TaskSampler(spec.member(e), cfg.n) for e in range(E)]

        def loop_step() -> None:
            for model, smp in zip(singles, member_samplers, strict=True):
                model.zero_grad()
                total = 0.0
                for _ in range(cfg.tasks):
                    xs, ys, _ = smp.sample(1, gen)
                    total = total + query_loss(model, xs, ys).sum()
                (total / cfg.tasks).backward()

        def seed_loop_step() -> None:
            for model, smp in zip(singles, member_samplers, strict=True):
                xs, ys, _ = smp.sample(cfg.tasks, gen)
                model.zero_grad()
                query_loss(model, xs, ys).sum().backward()

        t_batched = _best_time(batched_step, cfg.steps, cfg.repeats)
        t_loop = _best_time(loop_step, cfg.steps, cfg.repeats)
        t_seed_loop = _best_time(seed_loop_step, cfg.steps, cfg.repeats)
    finally:
        torch.set_num_threads(threads)
    out = {
        "linreg_batched_vs_loop": t_loop / t_batched,
        "linreg_batched_vs_seed_loop": t_seed_loop / t_batched,
        "linreg_batched_step_ms": 1e3 * t_batched / cfg.steps,
    }
    log.info(
        "linreg: batched %.2f ms/step; loop over tasks %.1fx slower; loop over seeds %.1fx slower",
        out["linreg_batched_step_ms"],
        out["linreg_batched_vs_loop"],
        out["linreg_batched_vs_seed_loop"],
    )
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run()
    logging.getLogger("icl_gd.bench").info("%s", result)
