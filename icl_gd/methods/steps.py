"""What the training loops share (finetune.train, grid.train_grid): the record of a training, the optimizer and its
float32 master weights, which parameters require grad, the step schedule, and the divergence check on the losses,
read on the host in batches.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn

from icl_gd.errors import DivergedError
from icl_gd.methods import fast_step
from icl_gd.methods.demo_loss import ANSWER


@dataclass
class TrainResult:
    curve: list[dict[str, float]] = field(default_factory=list)  # one row per optimizer step, in loss_kind
    initial_loss: float = math.nan  # mean per-demo training objective (loss_kind) before training
    final_loss: float = math.nan  # the same after training
    n_trainable: int = 0
    loss_kind: str = ANSWER  # what initial_loss, final_loss and the curve measure
    initial_answer_loss: float = math.nan  # mean per-demo answer loss before training, whatever loss_kind
    final_answer_loss: float = math.nan  # the same after training: comparable between GD and layer-causal GD
    initial_layer_losses: list[float] = field(default_factory=list)  # layer-causal: per-layer, per-demo mean
    final_layer_losses: list[float] = field(default_factory=list)


HALF = (torch.float16, torch.bfloat16)


class MasterWeights:
    """float32 master copies of half-precision trained parameters: the optimizer steps the masters, the model gets
    them rounded after each step. A bf16 weight moves only by >= half its ulp (2^-9 of its size), so an update of
    1e-3 of a weight is rounded away every step without them; the masters keep it, and the sum of small steps
    reaches the model. float32 parameters are stepped directly (`trained` is then the parameters themselves).
    """

    def __init__(self, params: dict[str, nn.Parameter]) -> None:
        self.params = list(params.values())
        self.masters = [
            p.detach().float().clone().requires_grad_(True) if p.dtype in HALF else p for p in self.params
        ]

    @property
    def trained(self) -> list[torch.Tensor]:
        """What the optimizer steps."""
        return self.masters

    def pull_grads(self) -> None:
        """The model's gradients onto the masters, in float32 (the model's own are cleared: no accumulation)."""
        for p, m in zip(self.params, self.masters, strict=True):
            if m is not p:
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None

    @torch.no_grad()
    def push(self) -> None:
        """The masters' values into the model's parameters (rounded to their dtype)."""
        for p, m in zip(self.params, self.masters, strict=True):
            if m is not p:
                p.copy_(m)


def make_optimizer(params: list[torch.Tensor], cfg: DictConfig, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer of cfg.optimizer; `fused`: torch's fused kernel (the same update, one pass over all tensors)."""
    kw = {"fused": True} if fused and fast_step.fused_ok(params) else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **kw)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)


def diverged(value: float, initial: float, cfg: DictConfig) -> bool:
    return not math.isfinite(value) or value > cfg.explode_factor * max(initial, 1e-8)


def diverged_error(step: int, value: float, initial: float, cfg: DictConfig) -> DivergedError:
    return DivergedError(
        f"training loss diverged at step {step} (loss={value}, first loss={initial:.4g}): "
        f"lower method.lr={cfg.lr} or set method.grad_clip."
    )


class LossRows:
    """The losses of the steps taken, read on the host in batches: the divergence check and the on_step rows.

    The plain step reads each loss at once (`.item()`, a host sync a step); the fast step keeps them on the device
    and `flush`es every fast_step.SYNC_EVERY steps and before each evaluation point, checking and reporting them
    in step order, so a diverged step raises the same error a few steps later (and no evaluation sees it).
    """

    def __init__(
        self, result: TrainResult, cfg: DictConfig, on_step: Callable[[dict[str, float]], None] | None
    ):
        self.result, self.cfg, self.on_step = result, cfg, on_step
        self.pending: list[tuple[int, int, torch.Tensor]] = []

    def check(self, step: int, epoch: int, value: float) -> None:
        if diverged(value, self.result.initial_loss, self.cfg):
            raise diverged_error(step, value, self.result.initial_loss, self.cfg)

    def add(self, step: int, epoch: int, value: float) -> None:
        row = {"step": step, "epoch": epoch, "train_loss": value}
        self.result.curve.append(row)
        if self.on_step:
            self.on_step(row)

    def defer(self, step: int, epoch: int, loss: torch.Tensor) -> None:
        self.pending.append((step, epoch, loss.detach()))

    def flush(self) -> None:
        if not self.pending:
            return
        values = torch.stack([x[2].float() for x in self.pending]).tolist()  # one host sync for them all
        pending, self.pending = self.pending, []
        for (step, epoch, _), value in zip(pending, values, strict=True):
            self.check(step, epoch, value)
            self.add(step, epoch, value)


@contextlib.contextmanager
def trainable_only(model: nn.Module, params: dict[str, nn.Parameter]) -> Iterator[None]:
    """Only `params` require grad inside (every other parameter of the model frozen); the flags restored on exit."""
    all_params = list(model.parameters())
    frozen = [p.requires_grad for p in all_params]
    for p in all_params:
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, f in zip(all_params, frozen, strict=True):
            p.requires_grad_(f)


def batch_size(cfg: DictConfig, n_demos: int) -> int:
    """Demos per optimizer step: all of them for batch_size=all."""
    return n_demos if cfg.batch_size == "all" else int(cfg.batch_size)


def schedule(n_demos: int, bs: int, epochs: int, steps: int | None) -> Iterator[tuple[int, int, int]]:
    """(step, epoch, first demo) of each optimizer step: `epochs` passes over the demos in their order, or exactly
    `steps` steps (cycling through the demos) when steps is given."""
    per_epoch = math.ceil(n_demos / bs)
    step = 0
    for epoch in range(epochs if steps is None else math.ceil(steps / per_epoch)):
        for start in range(0, n_demos, bs):
            if steps is not None and step >= steps:
                return
            yield step, epoch, start
            step += 1
