"""Adam on the in-context squared loss over fresh random tasks, for every ensemble member at once.

Each step draws new tasks (no fixed training set), predicts the query of each prompt and minimises the mean squared
error. The loss is summed over members: Adam's update is elementwise, so every member trains exactly as it would
alone, and E models cost one batched computation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from icl_gd.errors import DivergedError

log = logging.getLogger("icl_gd.linreg")


@dataclass
class Schedule:
    steps: int  # optimisation steps
    lr: float  # peak Adam learning rate
    warmup: int  # linear warm-up steps
    min_lr_ratio: float  # the cosine decays to lr * min_lr_ratio


def lr_factor(step: int, s: Schedule) -> float:
    """Learning-rate multiplier at `step`: linear warm-up then cosine decay (a pure function of the step)."""
    if step < s.warmup:
        return (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def checkpoint_steps(steps: int, count: int) -> list[int]:
    """`count` roughly log-spaced steps in [0, steps] (training moves fastest early), always with 0 and steps."""
    if count <= 1:
        return [steps]
    grid = torch.logspace(0, math.log10(steps + 1), count) - 1
    return sorted({0, steps, *(int(round(g)) for g in grid.tolist())})


def query_loss(model: nn.Module, xs: Tensor, ys: Tensor) -> Tensor:
    """(E,) mean squared error of each member's query predictions."""
    return ((model(xs, ys, query_only=True) - ys[:, :, -1]) ** 2).mean(dim=1)


def train(
    model: nn.Module,
    sample: Callable[[], tuple[Tensor, Tensor]],
    schedule: Schedule,
    log_every: int,
    checkpoints: list[int],
    on_log: Callable[[int, Tensor], None] | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> list[tuple[int, list[float]]]:
    """Train every member with Adam on fresh tasks; returns the logged (step, per-member loss) history.

    `sample()` returns fresh (xs (E, B, T, d), ys (E, B, T)); `on_checkpoint(step)` runs before step `step` (and
    after the last one) for weight-evolution snapshots. Raises DivergedError on a non-finite loss.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=schedule.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, schedule))
    history: list[tuple[int, list[float]]] = []
    marks = set(checkpoints)
    for step in range(schedule.steps):
        if on_checkpoint is not None and step in marks:
            with torch.no_grad():
                on_checkpoint(step)
        xs, ys = sample()
        loss = query_loss(model, xs, ys)  # (E,)
        if not torch.isfinite(loss).all():
            bad = torch.nonzero(~torch.isfinite(loss)).flatten().tolist()
            raise DivergedError(f"linreg training diverged at step {step} (members {bad}); lower method.lr")
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == schedule.steps - 1:
            values = loss.detach().tolist()
            history.append((step, values))
            if on_log is not None:
                on_log(step, loss.detach())
    if on_checkpoint is not None and schedule.steps in marks:
        with torch.no_grad():
            on_checkpoint(schedule.steps)
    return history
