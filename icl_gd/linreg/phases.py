"""The model of a group, trained or built by formula, and the plain-GD step sizes both need.

`train_phase`: Adam on fresh tasks (lsa, h3), logging each point's loss and, at log-spaced checkpoints, the learned
preconditioner's cosine and relative distance to W* and to the GD construction. `construct_phase`: for
model=gd_construction, the von Oswald weights by formula (plain GD with a given or tuned step, or W*).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from icl_gd.linreg.constructions import GDConstruction, golden_section, one_step_line_search
from icl_gd.linreg.data import TaskSampler
from icl_gd.linreg.grid import Context, Group, generator
from icl_gd.linreg.models import GD, H3, LSA, H3Config, LSAConfig
from icl_gd.linreg.train import Schedule, checkpoint_steps, train
from icl_gd.metrics import cosine

log = logging.getLogger("icl_gd.linreg")

GD_STABLE = 2.0  # GD on a quadratic diverges past step 2 / lambda_max


@dataclass
class Fitted:
    """A group's model, trained or constructed, and what its phase recorded."""

    main: str  # its predictor name: "trained" or "construction"
    model: nn.Module
    has_w: bool  # whether it has one effective preconditioner W (one layer; H3's lag-averaged W)
    steps: int = 0  # logged training steps (0..steps), for the tracker's step offset
    evolution: list[dict[str, Any]] = field(default_factory=list)

    def preconditioner(self) -> Tensor | None:
        """(E, d, d) float64 W of the model, or None where it has none."""
        return self.model.preconditioner().to(torch.float64) if self.has_w else None


def rel_dist(a: Tensor, b: Tensor) -> Tensor:
    """|a - b| / |b| of matrices along their last two axes (Frobenius)."""
    return (a - b).flatten(-2).norm(dim=-1) / b.flatten(-2).norm(dim=-1)


def build_model(ctx: Context, group: Group) -> nn.Module:
    """A fresh LSA or H3 with one member per (point, seed), in the training dtype."""
    job, d, E = ctx.job, group.d, group.members
    gen = generator(job.seed, "init", group.index)
    if job.model.name == "lsa":
        ranks = [p["rank"] or d + 1 for p in group.points]
        cfg = LSAConfig(d, job.model.layers, max(ranks), E, job.model.init_std, job.model.value_init)
        model = LSA(cfg, gen)
        for layer in model.layers:
            layer.set_ranks(torch.tensor(group.per_member(ranks)))
    else:
        model = H3(H3Config(d, group.n, job.model.hidden, E, job.model.init_std), gen)
    return model.to(device=ctx.device, dtype=ctx.dtype)


def line_search_gd(sampler: TaskSampler, tasks: int, gen: torch.Generator) -> Tensor:
    """(E,) scale c of the best plain one-step GD, W = c I, by exact line search on fresh tuning tasks."""
    xs, ys, _ = sampler.sample(tasks, gen)
    xs, ys = xs.to(torch.float64), ys.to(torch.float64)
    return one_step_line_search(xs, ys)


def multi_step_lr(ctx: Context, group: Group, sampler: TaskSampler, gen: torch.Generator) -> Tensor:
    """(E,) best GD learning rate for model.layers steps, by golden section on fresh tuning tasks."""
    job = ctx.job
    xs, ys, _ = sampler.sample(job.train.tune_tasks, gen)
    xs, ys = xs.to(torch.float64), ys.to(torch.float64)
    E, d, n, k = group.members, group.d, group.n, job.model.layers
    lam_max = torch.linalg.eigvalsh(group.spec.x_cov)[:, -1]  # (E,)
    hi = GD_STABLE / (lam_max * (1 + (d / n) ** 0.5) ** 2)
    eye = torch.eye(d, dtype=torch.float64).expand(E, d, d)

    def risk(lr: Tensor) -> Tensor:
        pred = GD((lr / n)[:, None, None] * eye, steps=k)(xs, ys, query_only=True)
        return ((pred - ys[:, :, -1]) ** 2).mean(1)

    return golden_section(risk, torch.zeros(E, dtype=torch.float64), hi, job.train.line_search_iters)


class _Monitor:
    """Training callbacks: per-point losses (tracker, train_loss table) and checkpoints of the learned W."""

    def __init__(
        self, ctx: Context, group: Group, labels: list[str], fit: Fitted, targets: dict, offset: int
    ):
        self.ctx, self.group, self.labels, self.fit, self.offset = ctx, group, labels, fit, offset
        self.w_star, self.gd_c = targets["w_star"], targets["gd_c"]

    def on_log(self, step: int, loss: Tensor) -> None:
        rec = {"linreg/train_loss": float(loss.mean())}
        for lab, mem in zip(self.labels, self.group.members_of, strict=True):
            if lab:
                rec[f"linreg/train_loss{lab}"] = float(loss[mem].mean())
            self.ctx.tables.add("train_loss", [{"step": step, "label": lab, "loss": float(loss[mem].mean())}])
        self.ctx.tracker.log(rec, step=self.offset + step)

    def on_checkpoint(self, step: int) -> None:
        if not self.fit.has_w:
            return
        w = self.fit.preconditioner()  # (E, d, d)
        eye = torch.eye(self.group.d, dtype=torch.float64)
        vals = {
            "cosine to W*": cosine(w, self.w_star),
            "rel. distance to W*": rel_dist(w, self.w_star),
            "cosine to GD construction": cosine(w, eye.expand_as(w)),
            "rel. distance to GD construction": rel_dist(w, self.gd_c.to(torch.float64)[:, None, None] * eye),
        }
        for lab, mem in zip(self.labels, self.group.members_of, strict=True):
            for metric, v in vals.items():
                self.fit.evolution.append(
                    {
                        "step": step,
                        "label": lab,
                        "metric": metric,
                        "mean": float(v[mem].mean()),
                        "lo": float(v[mem].min()),
                        "hi": float(v[mem].max()),
                    }
                )
        rec = {"linreg/precond_cosine": float(vals["cosine to W*"].mean())}
        self.ctx.tracker.log(rec, step=self.offset + step)


def train_phase(
    ctx: Context, group: Group, sampler: TaskSampler, labels: list[str], targets: dict, offset: int
) -> Fitted:
    """Adam on fresh tasks for every member at once; `targets` holds W* (E, d, d) and the GD scale gd_c (E,)."""
    job, cfg = ctx.job, ctx.job.train
    model = build_model(ctx, group)
    has_w = job.model.name == "h3" or job.model.layers == 1
    fit = Fitted("trained", model, has_w)
    monitor = _Monitor(ctx, group, labels, fit, targets, offset)
    gen_data = generator(job.seed, "data", group.index)
    log.info(
        "group d=%d n=%d: training %d members (%d points x %d seeds) for %d steps",
        group.d,
        group.n,
        group.members,
        len(group.points),
        group.seeds,
        cfg.steps,
    )
    train(
        model,
        lambda: sampler.sample(job.data.batch, gen_data)[:2],
        Schedule(cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr_ratio),
        cfg.log_every,
        checkpoint_steps(cfg.steps, cfg.checkpoints),
        monitor.on_log,
        monitor.on_checkpoint,
    )
    fit.steps = cfg.steps + 1  # logged steps 0..steps (the last checkpoint is logged at `steps`)
    model.requires_grad_(False)
    return fit


def construct_phase(
    ctx: Context, group: Group, sampler: TaskSampler, targets: dict, gen_tune: torch.Generator
) -> Fitted:
    """The von Oswald LSA by formula: W* (preconditioner=optimal), else plain GD with a given or tuned step."""
    job, E, d, n = ctx.job, group.members, group.d, group.n
    eye = torch.eye(d, dtype=torch.float64)
    if job.model.preconditioner == "optimal":
        lr, precond = torch.ones(E, dtype=torch.float64), n * targets["w_star"]
    else:
        if job.model.lr is not None:
            lr = torch.full((E,), job.model.lr, dtype=torch.float64)
        elif job.model.layers == 1:
            lr = targets["gd_c"] * n
        else:
            lr = multi_step_lr(ctx, group, sampler, gen_tune)
        precond = eye.expand(E, d, d).clone()
    model = GDConstruction(n, lr, precond, layers=job.model.layers).to(device=ctx.device, dtype=ctx.dtype)
    return Fitted("construction", model, job.model.layers == 1)
