"""One linreg job: train (or construct) the models of a grid, evaluate them beside theory and baselines, report.

`run_job(cfg, output_dir, tracker)` is what the runner calls for `dataset=linreg` (after `config.validate`). Each
(d, n) pair of the grid is one group; every grid point of a group times `method.seeds` is one ensemble member, and
all members train and evaluate as one batched tensor computation. Steps, per group:

1. theory for every point: the optimal (rank-constrained) preconditioner W* and its risk, closed form where derived
   (theory.py), else from Monte Carlo moments; the best plain GD step;
2. Adam on fresh tasks (lsa, h3), logging the loss and, at checkpoints, the learned preconditioner's distance and
   cosine to W* and to the GD construction; or, for model=gd_construction, the von Oswald weights by formula;
3. one evaluation loop over the same fresh tasks for the model and the baselines (optimal one-step preconditioned
   GD, line-searched one-step GD, its LSA construction, Bayes ridge, least squares), plus risk-vs-prefix curves;
4. optionally a LoRA phase: rank-r updates of the trained attention, fitted on a shifted distribution;
5. tables (csv), figures (png), tracker logs, and the flat metrics dict it returns.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.utils import parametrize

from icl_gd.linreg import theory
from icl_gd.linreg.config import LinregJob, grid_points, parse, point_spec, varying_keys
from icl_gd.linreg.constructions import GDConstruction, gd_weights, golden_section, one_step_line_search
from icl_gd.linreg.data import TaskSampler, TaskSpec, stack_specs
from icl_gd.linreg.evaluate import Z95, evaluate, pool
from icl_gd.linreg.models import GD, H3, LSA, H3Config, LoRA, LSAConfig, Ridge
from icl_gd.linreg.report import Tables, figures, sparsity_rows, suffix
from icl_gd.linreg.theory import PointTheory, point_theory
from icl_gd.linreg.train import Schedule, checkpoint_steps, train

log = logging.getLogger("icl_gd.linreg")

STREAMS = {"data": 0, "init": 1, "eval": 2, "theory": 3, "tune": 4, "lora": 5, "construction": 6, "curves": 7}
REFERENCE = "pgd_optimal"  # its risk is known exactly, so paired differences to it are tight
SPARSITY_METRICS = (
    "learned_kq",
    "learned_pv",
    "learned_precond",
    "construction_gd_kq",
    "construction_gd_pv",
    "construction_optimal_kq",
    "construction_precond",
)
GD_STABLE = 2.0  # GD on a quadratic diverges past step 2 / lambda_max


def _generator(seed: int, stream: str, *extra: int) -> torch.Generator:
    """An independent generator per (seed, purpose, group): changing one stream never shifts another."""
    state = np.random.SeedSequence([seed, STREAMS[stream], *extra]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _cos(a: Tensor, b: Tensor) -> Tensor:
    """Cosine between matrices along their last two axes."""
    a, b = a.flatten(-2), b.flatten(-2)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(torch.finfo(a.dtype).tiny)


def _rel_dist(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).flatten(-2).norm(dim=-1) / b.flatten(-2).norm(dim=-1)


# ------------------------------------------------------------------------------------------------------- theory


def _point_theory(
    job: LinregJob, spec: TaskSpec, n: int, rank: int | None, gen: torch.Generator
) -> PointTheory:
    return point_theory(spec, n, rank, job.train.theory_mc_samples, job.train.eval_chunk, gen)


# ------------------------------------------------------------------------------------------------------- checks


def construction_check(job: LinregJob) -> dict[str, float]:
    """Item 1 on random inputs in float64: the von Oswald LSA equals one GD step, k stacked layers k steps."""
    d, n, k = job.data.d[0], job.data.n[0], job.train.construction_stack
    g = _generator(job.seed, "construction")
    m = job.train.construction_tasks
    xs = torch.randn(1, m, n + 1, d, generator=g, dtype=torch.float64)
    ys = torch.randn(1, m, n + 1, generator=g, dtype=torch.float64)
    lr = torch.rand(1, generator=g, dtype=torch.float64)  # an arbitrary step in (0, 1)
    w0 = torch.randn(1, d, generator=g, dtype=torch.float64)
    precond = torch.randn(1, d, d, generator=g, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)[None]
    out = {}
    with torch.no_grad():
        for name, h, layers in [("one_step", eye, 1), (f"stack{k}", eye, k), ("preconditioned", precond, 1)]:
            lsa = GDConstruction(n, lr, h, w0, layers=layers)
            gd = GD((lr / n)[:, None, None] * h, steps=layers, w0=w0)
            out[f"construction/{name}_max_abs_err"] = float((lsa(xs, ys) - gd(xs, ys)).abs().max())
    return out


# ------------------------------------------------------------------------------------------------------ groups


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


def build_model(job: LinregJob, group: Group, gen: torch.Generator) -> nn.Module:
    """A fresh LSA or H3 with one member per (point, seed), in the training dtype."""
    d, E = group.d, group.members
    if job.model.name == "lsa":
        ranks = [p["rank"] or d + 1 for p in group.points]
        model = LSA(
            LSAConfig(d, job.model.layers, max(ranks), E, job.model.init_std, job.model.value_init), gen
        )
        for layer in model.layers:
            layer.set_ranks(torch.tensor(group.per_member(ranks)))
        return model
    return H3(H3Config(d, group.n, job.model.hidden, E, job.model.init_std), gen)


def _line_search_gd(sampler: TaskSampler, tasks: int, gen: torch.Generator) -> Tensor:
    """(E,) scale c of the best plain one-step GD, W = c I, by exact line search on fresh tuning tasks."""
    xs, ys, _ = sampler.sample(tasks, gen)
    xs, ys = xs.to(torch.float64), ys.to(torch.float64)
    return one_step_line_search(xs, ys)


def _multi_step_lr(sampler: TaskSampler, job: LinregJob, group: Group, gen: torch.Generator) -> Tensor:
    """(E,) best GD learning rate for model.layers steps, by golden section on fresh tuning tasks."""
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


def run_group(
    job: LinregJob,
    group: Group,
    keys: list[str],
    tracker: Any,
    step_offset: int,
    tables: Tables,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[int, dict[str, float]]:
    """Train/construct, evaluate and tabulate one (d, n) group; returns (training steps taken, metrics)."""
    d, n, E, cfg = group.d, group.n, group.members, job.train
    group.spec = stack_specs([point_spec(job, p) for p in group.points for _ in range(group.seeds)])
    gen_theory = _generator(job.seed, "theory", group.index)
    theories = [_point_theory(job, point_spec(job, p), n, p["rank"], gen_theory) for p in group.points]
    th_m = group.per_member(theories)  # theory of each member
    w_star = torch.stack([t.w_star for t in th_m])  # (E, d, d)
    sampler = TaskSampler(group.spec, n, dtype, device)
    labels = [suffix(p, keys) for p in group.points]
    metrics: dict[str, float] = {}
    eye = torch.eye(d, dtype=torch.float64)

    # ---- the model: trained, or built by formula
    steps_taken = 0
    evo_rows: list[dict[str, Any]] = []
    gen_tune = _generator(job.seed, "tune", group.index)
    gd_c = _line_search_gd(sampler, cfg.tune_tasks, gen_tune)  # (E,) line-searched plain one-step GD
    if job.trainable:
        main = "trained"
        model = build_model(job, group, _generator(job.seed, "init", group.index)).to(
            device=device, dtype=dtype
        )
        has_w = job.model.name == "h3" or job.model.layers == 1
        gen_data = _generator(job.seed, "data", group.index)
        marks = checkpoint_steps(cfg.steps, cfg.checkpoints)

        def on_log(step: int, loss: Tensor) -> None:
            rec = {"linreg/train_loss": float(loss.mean())}
            for lab, mem in zip(labels, group.members_of, strict=True):
                if lab:
                    rec[f"linreg/train_loss{lab}"] = float(loss[mem].mean())
                tables.add("train_loss", [{"step": step, "label": lab, "loss": float(loss[mem].mean())}])
            tracker.log(rec, step=step_offset + step)

        def on_checkpoint(step: int) -> None:
            if not has_w:
                return
            w = model.preconditioner().to(torch.float64)  # (E, d, d)
            vals = {
                "cosine to W*": _cos(w, w_star),
                "rel. distance to W*": _rel_dist(w, w_star),
                "cosine to GD construction": _cos(w, eye.expand_as(w)),
                "rel. distance to GD construction": _rel_dist(w, gd_c.to(torch.float64)[:, None, None] * eye),
            }
            for p, mem in enumerate(group.members_of):
                for metric, v in vals.items():
                    evo_rows.append(
                        {
                            "step": step,
                            "label": labels[p],
                            "metric": metric,
                            "mean": float(v[mem].mean()),
                            "lo": float(v[mem].min()),
                            "hi": float(v[mem].max()),
                        }
                    )
            tracker.log(
                {"linreg/precond_cosine": float(vals["cosine to W*"].mean())}, step=step_offset + step
            )

        log.info(
            "group d=%d n=%d: training %d members (%d points x %d seeds) for %d steps",
            d,
            n,
            E,
            len(group.points),
            group.seeds,
            cfg.steps,
        )
        train(
            model,
            lambda: sampler.sample(job.data.batch, gen_data)[:2],
            Schedule(cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr_ratio),
            cfg.log_every,
            marks,
            on_log,
            on_checkpoint,
        )
        steps_taken = cfg.steps + 1  # logged steps 0..steps (the last checkpoint is logged at `steps`)
        model.requires_grad_(False)
    else:
        main = "construction"
        has_w = job.model.layers == 1
        if job.model.preconditioner == "optimal":
            lr, precond = torch.ones(E, dtype=torch.float64), n * w_star
        else:
            if job.model.lr is not None:
                lr = torch.full((E,), job.model.lr, dtype=torch.float64)
            elif job.model.layers == 1:
                lr = gd_c * n
            else:
                lr = _multi_step_lr(sampler, job, group, gen_tune)
            precond = eye.expand(E, d, d).clone()
        model = GDConstruction(n, lr, precond, layers=job.model.layers).to(device=device, dtype=dtype)
    tables.add("evolution", evo_rows)

    # ---- one evaluation loop for the model and every baseline
    predictors: dict[str, nn.Module] = {
        main: model,
        "pgd_optimal": GD(w_star.to(dtype)),
        "gd_1step": GD((gd_c[:, None, None] * eye).to(dtype)),
        "gd_construction": GDConstruction(n, gd_c * n, eye.expand(E, d, d).clone()).to(dtype),
        "ridge": Ridge(group.spec.noise, group.spec.beta_cov),
        "least_squares": Ridge(torch.zeros(E, dtype=torch.float64), eye.expand(E, d, d).clone()),
    }
    risks, paired = evaluate(
        predictors,
        sampler,
        cfg.eval_tasks,
        cfg.eval_chunk,
        _generator(job.seed, "eval", group.index),
        reference=REFERENCE,
    )
    w_learned = model.preconditioner().to(torch.float64) if has_w else None
    risk_rows = []
    for name, risk in risks.items():
        mean, se, std = pool(risk, group.members_of)
        gap = pool(paired[name], group.members_of) if name in paired else None
        for p, point in enumerate(group.points):
            th = theories[p]
            row = {
                **point,
                "rank": point["rank"] or d,
                "label": labels[p],
                "predictor": name,
                "mean": float(mean[p]),
                "se": float(se[p]),
                "lo": float(mean[p] - Z95 * se[p]),
                "hi": float(mean[p] + Z95 * se[p]),
                "seed_std": float(std[p]),
                "theory": th.risk,
                "theory_method": th.method,
                "gap_to_reference": float(gap[0][p]) if gap else 0.0,
                "gap_se": float(gap[1][p]) if gap else 0.0,
            }
            risk_rows.append(row)
            metrics[f"risk/{name}{labels[p]}"] = row["mean"]
    tables.add("risks", risk_rows)

    for p, (point, lab, th) in enumerate(zip(group.points, labels, theories, strict=True)):
        mem = group.members_of[p]
        main_mean = metrics[f"risk/{main}{lab}"]
        gap, gap_se = pool(paired[main], group.members_of)[:2]
        metrics[f"risk/theory{lab}"] = th.risk
        metrics[f"risk/{main}_ci95{lab}"] = float(Z95 * pool(risks[main], group.members_of)[1][p])
        # control variate: R* + E[e_model^2 - e_opt^2] on the same tasks, unbiased and ~10x tighter than plain MC
        cv = th.risk + float(gap[p])
        metrics[f"risk/{main}_cv{lab}"] = cv
        metrics[f"risk/{main}_cv_ci95{lab}"] = float(Z95 * gap_se[p])
        metrics[f"risk/{main}_rel_gap{lab}"] = cv / th.risk - 1
        metrics[f"risk/{main}_mc_rel_gap{lab}"] = main_mean / th.risk - 1
        metrics[f"risk/gd_1step_theory{lab}"] = th.gd_risk
        if th.risk_full != th.risk:
            metrics[f"risk/theory_full_rank{lab}"] = th.risk_full
        if w_learned is not None and not isinstance(model, H3):  # H3's lag-averaged W only approximates it
            metrics[f"risk/{main}_precond{lab}"] = float(th.risk_of(w_learned[mem]).mean())
        if w_learned is not None:
            metrics[f"precond_cosine{lab}"] = float(_cos(w_learned[mem], w_star[mem]).mean())
            metrics[f"precond_rel_dist{lab}"] = float(_rel_dist(w_learned[mem], w_star[mem]).mean())
        tables.add(
            "theory",
            [
                {
                    **point,
                    "rank": point["rank"] or d,
                    "label": lab,
                    "risk": th.risk,
                    "method": th.method,
                    "gd_risk": th.gd_risk,
                    "gd_scale": th.gd_scale,
                    "w_star_scale": float(th.w_star.diagonal().mean()),
                }
            ],
        )

    # ---- risk against the number of in-context examples (i.i.d. points, where theory has a curve)
    iid_points = [p for p, th in enumerate(theories) if th.iid][: cfg.figure_panels]
    if iid_points:
        curve_preds = {k: predictors[k] for k in (main, "pgd_optimal", "gd_1step", "ridge")}
        curves, _ = evaluate(
            curve_preds,
            sampler,
            cfg.curve_tasks,
            cfg.eval_chunk,
            _generator(job.seed, "curves", group.index),
            prefix=True,
        )
        rows, trows = [], []
        for name, risk in curves.items():
            mean, se, _ = pool(risk, group.members_of)
            for p in iid_points:
                for k in range(n + 1):
                    rows.append(
                        {
                            "panel": labels[p] or f"d={d}, n={n}",
                            "predictor": name,
                            "position": k,
                            "mean": float(mean[p, k]),
                            "lo": float(mean[p, k] - Z95 * se[p, k]),
                            "hi": float(mean[p, k] + Z95 * se[p, k]),
                        }
                    )
        for p in iid_points:
            th, panel = theories[p], labels[p] or f"d={d}, n={n}"
            for k in range(n + 1):
                trows.append(
                    {"panel": panel, "curve": "optimal R*_k", "position": k, "risk": th.optimum_at(k)}
                )
                trows.append(
                    {
                        "panel": panel,
                        "curve": f"W*(n={n}) at k",
                        "position": k,
                        "risk": th.risk_at(th.w_star, k),
                    }
                )
                if w_learned is not None and job.model.name == "lsa":
                    w = w_learned[group.members_of[p]]
                    trows.append(
                        {
                            "panel": panel,
                            "curve": "learned W at k",
                            "position": k,
                            "risk": float(np.mean([th.risk_at(wi, k) for wi in w])),
                        }
                    )
        tables.add("curves", rows)
        tables.add("curve_theory", trows)

    if w_learned is not None:  # logged at the end of the job: an un-stepped log would advance W&B's step
        tables.histograms[f"linreg/precond_entries@d={d},n={n}"] = w_learned.flatten().tolist()

    # ---- sparsity of learned vs constructed weights
    weights = _weights_for_sparsity(job, model, n, gd_c, w_star, w_learned)
    tables.add("sparsity", [{**r, "d": d, "n": n} for r in sparsity_rows(weights, cfg.sparsity_thresholds)])

    if cfg.lora.ranks and job.trainable:
        metrics.update(
            lora_phase(job, group, model, keys, tables, dtype, device, step_offset + steps_taken, tracker)
        )
        steps_taken += cfg.lora.steps
    return steps_taken, metrics


def _weights_for_sparsity(
    job: LinregJob, model: nn.Module, n: int, gd_c: Tensor, w_star: Tensor, w_model: Tensor | None
) -> dict[str, Tensor]:
    """Learned weights (products and raw factors) beside the von Oswald and optimal-preconditioner constructions."""
    E, d = w_star.shape[0], w_star.shape[-1]
    zeros = torch.zeros(E, d, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64).expand(E, d, d)
    out: dict[str, Tensor] = {}
    for tag, (lr, h) in {
        "construction_gd": (gd_c * n, eye),
        "construction_optimal": (torch.ones(E, dtype=torch.float64), n * w_star),
    }.items():
        w = gd_weights(n, lr, h, zeros)
        out[f"{tag}_kq"] = w["wk"].transpose(-1, -2) @ w["wq"]
        out[f"{tag}_pv"] = w["proj"] @ w["wv"]
    if isinstance(model, LSA):
        layer = model.layers[0]
        out["learned_kq"], out["learned_pv"] = layer.kq(), layer.pv()
        for name in ("wq", "wk", "wv", "proj"):
            out[f"learned_{name}"] = getattr(layer, name)
    elif isinstance(model, H3):
        for name in ("wq", "wk", "wv", "filt", "head"):
            out[f"learned_{name}"] = getattr(model, name)
    if w_model is not None:
        out["learned_precond" if job.trainable else "construction_precond"] = w_model
    return out


# --------------------------------------------------------------------------------------------------------- LoRA


def lora_phase(
    job: LinregJob,
    group: Group,
    base: LSA,
    keys: list[str],
    tables: Tables,
    dtype: torch.dtype,
    device: torch.device,
    step_offset: int,
    tracker: Any,
) -> dict[str, float]:
    """Adapt each trained member to the shifted distribution with rank-r LoRA, for every r at once.

    Member e of the group becomes members e * R + i, i indexing method.lora.ranks; the base weights are frozen and
    a LoRA parametrization adds a rank-r update to the target weight. Theory: the best rank-r update of the
    member's learned preconditioner on the new design (theory.lora_optimum).
    """
    cfg, ranks = job.train.lora, job.train.lora.ranks
    R, d, n = len(ranks), group.d, group.n
    E2 = group.members * R
    layer = base.layers[0]
    adapted = LSA(LSAConfig(d, 1, None, E2)).to(device=device, dtype=dtype)
    with torch.no_grad():
        for name in ("wq", "wk", "wv", "proj"):
            getattr(adapted.layers[0], name).copy_(getattr(layer, name).repeat_interleave(R, dim=0))
    adapted.requires_grad_(False)
    gen = _generator(job.seed, "lora", group.index)
    rank_t = torch.tensor(ranks * group.members)
    target = getattr(adapted.layers[0], cfg.target)
    lora = LoRA(tuple(target.shape), rank_t, cfg.alpha, cfg.init_std, gen).to(device=device, dtype=dtype)
    parametrize.register_parametrization(adapted.layers[0], cfg.target, lora)

    new_specs = [point_spec(job, p, shifted=True) for p in group.points]
    spec2 = stack_specs([s for s in new_specs for _ in range(group.seeds * R)])
    sampler2 = TaskSampler(spec2, n, dtype, device)
    gen_data = _generator(job.seed, "lora", group.index, 1)
    log.info("group d=%d n=%d: LoRA ranks %s on %d members for %d steps", d, n, ranks, E2, cfg.steps)

    def on_log(step: int, loss: Tensor) -> None:
        tracker.log({"linreg/lora_loss": float(loss.mean())}, step=step_offset + step)

    train(
        adapted,
        lambda: sampler2.sample(job.data.batch, gen_data)[:2],
        Schedule(cfg.steps, cfg.lr, job.train.warmup, job.train.min_lr_ratio),
        job.train.log_every,
        [],
        on_log,
    )
    adapted.requires_grad_(False)

    # evaluate: adapted (E2 members), and the unadapted model and the new optimum on the same shifted tasks
    w_old = base.preconditioner().to(torch.float64)  # (E, d, d)
    th_new = [_point_theory(job, s, n, None, gen) for s in new_specs]
    w_new = torch.stack([th_new[p].w_star for p in range(len(group.points)) for _ in range(group.seeds * R)])
    frozen = LSA(LSAConfig(d, 1, None, E2)).to(device=device, dtype=dtype)
    with torch.no_grad():
        for name in ("wq", "wk", "wv", "proj"):
            getattr(frozen.layers[0], name).copy_(getattr(layer, name).repeat_interleave(R, dim=0))
    preds = {"lora": adapted, "pretrained": frozen, "pgd_optimal": GD(w_new.to(dtype))}
    risks, paired = evaluate(
        preds,
        sampler2,
        job.train.eval_tasks,
        job.train.eval_chunk,
        _generator(job.seed, "eval", group.index, 1),
        reference=REFERENCE,
    )
    members_of = [
        [(p * group.seeds + s) * R + i for s in range(group.seeds)]
        for p in range(len(group.points))
        for i in range(R)
    ]
    metrics: dict[str, float] = {}
    rows = []
    w_adapt = adapted.preconditioner().to(torch.float64)
    for name, risk in risks.items():
        mean, se, std = pool(risk, members_of)
        gaps = pool(paired[name], members_of)[:2] if name in paired else None
        for j, mem in enumerate(members_of):
            p, i = divmod(j, R)
            th, s0 = th_new[p], new_specs[p]
            olds = w_old[[e // R for e in mem]]
            lora_th = theory.lora_optimum(olds, s0.x_cov[0], s0.beta_cov[0], s0.noise[0], n, ranks[i])[
                1
            ].mean()
            point = {**group.points[p], "lora_rank": ranks[i]}
            lab = suffix(point, [*keys, "lora_rank"])
            rows.append(
                {
                    **point,
                    "label": lab,
                    "predictor": name,
                    "mean": float(mean[j]),
                    "se": float(se[j]),
                    "lo": float(mean[j] - Z95 * se[j]),
                    "hi": float(mean[j] + Z95 * se[j]),
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
                metrics[f"risk/lora_precond{lab}"] = float(th.risk_of(w_adapt[mem]).mean())
    tables.add("lora", rows)
    return metrics


def run_job(cfg: DictConfig, output_dir: Path, tracker: Any) -> dict[str, float]:
    """Run one linreg job (see the module docstring); returns its flat metrics (every risk key holds 'risk')."""
    job = parse(cfg)
    threads = torch.get_num_threads()
    if job.train.threads:
        torch.set_num_threads(job.train.threads)  # small tensors: one thread beats contended ones
    try:
        return _run(job, Path(output_dir), tracker)
    finally:
        torch.set_num_threads(threads)


def _run(job: LinregJob, out: Path, tracker: Any) -> dict[str, float]:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    dtype, device = getattr(torch, job.train.dtype), torch.device(job.train.device)
    keys = varying_keys(job)
    metrics = construction_check(job)
    log.info("construction check: %s", metrics)
    tables = Tables()
    offset = 0
    groups = itertools.groupby(grid_points(job), key=lambda p: (p["d"], p["n"]))
    for index, ((d, n), pts) in enumerate(groups):
        group = Group(index, d, n, list(pts), job.train.seeds if job.trainable else 1)
        steps, m = run_group(job, group, keys, tracker, offset, tables, dtype, device)
        offset += steps
        metrics.update(m)

    main = "trained" if job.trainable else "construction"
    gaps = [v for k, v in metrics.items() if k.startswith((f"risk/{main}_rel_gap", "risk/lora_rel_gap"))]
    metrics["risk/max_abs_rel_gap"] = float(max(abs(g) for g in gaps))
    cosines = [v for k, v in metrics.items() if k.startswith("precond_cosine")]
    if cosines:
        metrics["precond_cosine_min"] = float(min(cosines))
    sp = tables.frame("sparsity")
    for (name, t), df in sp.groupby(["weights", "threshold"]):
        if name in SPARSITY_METRICS:  # the raw factors stay in sparsity.csv
            metrics[f"sparsity/{name}@{t:.0e}"] = float(df["fraction"].mean())

    for name in ("risks", "theory", "curves", "curve_theory", "evolution", "sparsity", "train_loss", "lora"):
        df = tables.frame(name)
        if len(df):
            df.to_csv(out / f"{name}.csv", index=False)
            if name in ("risks", "theory", "lora", "sparsity"):
                tracker.log_table(f"linreg/{name}", df)
    figures(job, tables, keys, out / "figures", tracker)
    for key, values in tables.histograms.items():
        tracker.log_histogram(key, values)
    metrics["time/seconds"] = time.perf_counter() - t0
    (out / "linreg_summary.json").write_text(json.dumps({"grid_keys": keys, "metrics": metrics}, indent=2))
    tracker.summary(metrics)
    log.info(
        "linreg job done in %.1fs: max |trained/theory - 1| = %.4f",
        metrics["time/seconds"],
        metrics["risk/max_abs_rel_gap"],
    )
    return metrics
