"""The LoRA phase: adapt each trained LSA member to the shifted distribution with rank-r LoRA, every r at once.

Member e of the group becomes members e * R + i, i indexing method.lora.ranks; the base weights are frozen and a
LoRA parametrization adds a rank-r update to the target weight. Theory: the best rank-r update of the member's
learned preconditioner on the new design (theory.lora_optimum).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from icl_gd.linreg import theory
from icl_gd.linreg.data import TaskSampler, stack_specs
from icl_gd.linreg.evaluate import Risk, evaluate, pool
from icl_gd.linreg.grid import Context, Group, generator, point_spec, suffix
from icl_gd.linreg.models import GD, LSA, LoRA, LSAConfig
from icl_gd.linreg.risks import REFERENCE, interval, theory_of
from icl_gd.linreg.train import Schedule, train
from icl_gd.metrics import Z95

log = logging.getLogger("icl_gd.linreg")
WEIGHTS = ("wq", "wk", "wv", "proj")


def _copy(ctx: Context, group: Group, base: LSA, repeats: int) -> LSA:
    """A one-layer LSA with each member of `base` repeated `repeats` times in a row, frozen."""
    layer = base.layers[0]
    out = LSA(LSAConfig(group.d, 1, None, group.members * repeats)).to(device=ctx.device, dtype=ctx.dtype)
    with torch.no_grad():
        for name in WEIGHTS:
            getattr(out.layers[0], name).copy_(getattr(layer, name).repeat_interleave(repeats, dim=0))
    return out.requires_grad_(False)


def _adapt(
    ctx: Context, group: Group, base: LSA, gen: torch.Generator, sampler: TaskSampler, offset: int
) -> LSA:
    """Copies of the base with a LoRA update of the target weight, trained on the shifted tasks."""
    job = ctx.job
    cfg, ranks = job.train.lora, job.train.lora.ranks
    adapted = _copy(ctx, group, base, len(ranks))
    target = getattr(adapted.layers[0], cfg.target)
    rank_t = torch.tensor(ranks * group.members)
    lora = LoRA(tuple(target.shape), rank_t, cfg.alpha, cfg.init_std, gen).to(
        device=ctx.device, dtype=ctx.dtype
    )
    parametrize.register_parametrization(adapted.layers[0], cfg.target, lora)
    gen_data = generator(job.seed, "lora", group.index, 1)
    E2 = group.members * len(ranks)
    log.info(
        "group d=%d n=%d: LoRA ranks %s on %d members for %d steps", group.d, group.n, ranks, E2, cfg.steps
    )

    def on_log(step: int, loss: Tensor) -> None:
        ctx.tracker.log({"linreg/lora_loss": float(loss.mean())}, step=offset + step)

    train(
        adapted,
        lambda: sampler.sample(job.data.batch, gen_data)[:2],
        Schedule(cfg.steps, cfg.lr, job.train.warmup, job.train.min_lr_ratio),
        job.train.log_every,
        [],
        on_log,
    )
    adapted.requires_grad_(False)
    return adapted


def _rows(
    ctx: Context, group: Group, risks: dict[str, Risk], paired: dict[str, Risk], th_new: list, w: dict
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Rows of the lora table and the phase's metrics. w: {"old": (E, d, d) pretrained W, "adapted": (E2, d, d)}."""
    ranks, R, n = ctx.job.train.lora.ranks, len(ctx.job.train.lora.ranks), group.n
    members_of = [
        [(p * group.seeds + s) * R + i for s in range(group.seeds)]
        for p in range(len(group.points))
        for i in range(R)
    ]
    metrics: dict[str, float] = {}
    rows = []
    for name, risk in risks.items():
        mean, se, std = pool(risk, members_of)
        gaps = pool(paired[name], members_of)[:2] if name in paired else None
        for j, mem in enumerate(members_of):
            p, i = divmod(j, R)
            th, s0 = th_new[p]
            olds = w["old"][[e // R for e in mem]]
            lora_th = theory.lora_optimum(olds, s0.x_cov[0], s0.beta_cov[0], s0.noise[0], n, ranks[i])[
                1
            ].mean()
            point = {**group.points[p], "lora_rank": ranks[i]}
            lab = suffix(point, [*ctx.keys, "lora_rank"])
            rows.append(
                {
                    **point,
                    "label": lab,
                    "predictor": name,
                    **interval(float(mean[j]), float(se[j])),
                    "seed_std": float(std[j]),
                    "theory": float(lora_th),
                    "theory_method": "closed form (LoRA)",
                    "risk_before": float(th.risk_of(olds).mean()),
                    "risk_new_optimum": th.risk,
                }
            )
            metrics[f"risk/{name}{lab}"] = float(mean[j])
            if gaps is not None:  # control variate against the new optimum, whose risk is exact
                gap, gap_se = float(gaps[0][j]), float(gaps[1][j])
                metrics[f"risk/{name}_cv{lab}"] = th.risk + gap
                metrics[f"risk/{name}_cv_ci95{lab}"] = Z95 * gap_se
            if name == "lora":
                metrics[f"risk/lora_theory{lab}"] = float(lora_th)
                metrics[f"risk/lora_rel_gap{lab}"] = metrics[f"risk/lora_cv{lab}"] / float(lora_th) - 1
                metrics[f"risk/lora_precond{lab}"] = float(th.risk_of(w["adapted"][mem]).mean())
    return rows, metrics


def lora_phase(ctx: Context, group: Group, base: LSA, offset: int) -> dict[str, float]:
    """Adapt, then evaluate the adapted members, the unadapted model and the new optimum on the same shifted
    tasks; writes the lora table and returns the phase's metrics."""
    job, R = ctx.job, len(ctx.job.train.lora.ranks)
    gen = generator(job.seed, "lora", group.index)
    new_specs = [point_spec(job, p, shifted=True) for p in group.points]
    spec2 = stack_specs([s for s in new_specs for _ in range(group.seeds * R)])
    sampler = TaskSampler(spec2, group.n, ctx.dtype, ctx.device)
    adapted = _adapt(ctx, group, base, gen, sampler, offset)
    th_new = [
        theory_of(job, s, group.n, None, gen) for s in new_specs
    ]  # after LoRA's init, from the same stream
    w_new = torch.stack([th_new[p].w_star for p in range(len(group.points)) for _ in range(group.seeds * R)])
    preds = {
        "lora": adapted,
        "pretrained": _copy(ctx, group, base, R),
        "pgd_optimal": GD(w_new.to(ctx.dtype)),
    }
    gen_eval = generator(job.seed, "eval", group.index, 1)
    risks, paired = evaluate(
        preds, sampler, job.train.eval_tasks, job.train.eval_chunk, gen_eval, reference=REFERENCE
    )
    w = {
        "old": base.preconditioner().to(torch.float64),
        "adapted": adapted.preconditioner().to(torch.float64),
    }
    rows, metrics = _rows(ctx, group, risks, paired, list(zip(th_new, new_specs, strict=True)), w)
    ctx.tables.add("lora", rows)
    return metrics
