"""One linreg job: train (or construct) the models of a grid, evaluate them beside theory and baselines, report.

`run_job(cfg, output_dir, tracker)` is what the runner calls for `dataset=linreg` (after `config.validate`). Each
(d, n) pair of the grid is one group (grid.py) whose members train and evaluate as one batched computation.
Steps, per group:

1. theory for every point (risks.group_theories) and the line-searched plain GD step;
2. the model: Adam on fresh tasks (lsa, h3), or for model=gd_construction the von Oswald weights (phases.py);
3. one evaluation loop over the same fresh tasks for the model and the baselines, plus risk-vs-prefix curves
   (risks.py);
4. optionally a LoRA phase: rank-r updates of the trained attention, fitted on a shifted distribution (lora.py);
5. tables (csv, tables.py), figures (png, figures.py), tracker logs, and the flat metrics dict it returns.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from icl_gd import io
from icl_gd.linreg import risks
from icl_gd.linreg.config import LinregJob, parse
from icl_gd.linreg.constructions import construction_check
from icl_gd.linreg.data import TaskSampler
from icl_gd.linreg.figures import figures
from icl_gd.linreg.grid import Context, Group, generator, groups, suffix, varying_keys
from icl_gd.linreg.lora import lora_phase
from icl_gd.linreg.phases import construct_phase, line_search_gd, train_phase
from icl_gd.linreg.tables import Tables, sparsity_rows, sparsity_weights

log = logging.getLogger("icl_gd.linreg")

SPARSITY_METRICS = (  # the weights whose sparsity is a metric; the raw factors stay in sparsity.csv
    "learned_kq",
    "learned_pv",
    "learned_precond",
    "construction_gd_kq",
    "construction_gd_pv",
    "construction_optimal_kq",
    "construction_precond",
)


def run_group(ctx: Context, group: Group, step_offset: int) -> tuple[int, dict[str, float]]:
    """Train/construct, evaluate and tabulate one (d, n) group; returns (training steps taken, metrics)."""
    job, d, n = ctx.job, group.d, group.n
    theories = risks.group_theories(job, group)
    w_star = torch.stack([t.w_star for t in group.per_member(theories)])  # (E, d, d)
    sampler = TaskSampler(group.spec, n, ctx.dtype, ctx.device)
    labels = [suffix(p, ctx.keys) for p in group.points]
    gen_tune = generator(job.seed, "tune", group.index)
    gd_c = line_search_gd(sampler, job.train.tune_tasks, gen_tune)  # (E,) line-searched plain one-step GD
    targets = {"w_star": w_star, "gd_c": gd_c}
    if job.trainable:
        fit = train_phase(ctx, group, sampler, labels, targets, step_offset)
    else:
        fit = construct_phase(ctx, group, sampler, targets, gen_tune)
    ctx.tables.add("evolution", fit.evolution)

    preds = risks.predictors(fit, group, w_star, gd_c, ctx.dtype)
    learned = fit.preconditioner()
    w = {"w_star": w_star, "learned": learned}
    metrics = risks.evaluate_group(ctx, group, fit, preds, sampler, theories, labels, w)
    risks.curves(ctx, group, fit, preds, sampler, theories, labels, learned)
    if learned is not None:  # logged at the end of the job: an un-stepped log would advance W&B's step
        ctx.tables.histograms[f"linreg/precond_entries@d={d},n={n}"] = learned.flatten().tolist()

    weights = sparsity_weights(fit.model, job.trainable, n, gd_c, w_star, learned)
    rows = sparsity_rows(weights, job.train.sparsity_thresholds)
    ctx.tables.add("sparsity", [{**r, "d": d, "n": n} for r in rows])

    steps = fit.steps
    if job.train.lora.ranks and job.trainable:
        metrics.update(lora_phase(ctx, group, fit.model, step_offset + steps))
        steps += job.train.lora.steps
    return steps, metrics


def summary_metrics(job: LinregJob, metrics: dict[str, float], tables: Tables) -> dict[str, float]:
    """The job-wide metrics: the largest |risk/theory - 1|, the smallest W cosine, sparsity per weight set."""
    main = "trained" if job.trainable else "construction"
    gaps = [v for k, v in metrics.items() if k.startswith((f"risk/{main}_rel_gap", "risk/lora_rel_gap"))]
    out = {"risk/max_abs_rel_gap": float(max(abs(g) for g in gaps))}
    cosines = [v for k, v in metrics.items() if k.startswith("precond_cosine")]
    if cosines:
        out["precond_cosine_min"] = float(min(cosines))
    for (name, t), df in tables.frame("sparsity").groupby(["weights", "threshold"]):
        if name in SPARSITY_METRICS:
            out[f"sparsity/{name}@{t:.0e}"] = float(df["fraction"].mean())
    return out


def run_job(cfg: DictConfig | LinregJob, output_dir: Path, tracker: Any) -> dict[str, float]:
    """Run one linreg job (see the module docstring); returns its flat metrics (every risk key holds 'risk').

    `cfg` is the composed config, or a job `config.parse` already typed (then it is not parsed again).
    """
    job = cfg if isinstance(cfg, LinregJob) else parse(cfg)
    threads = torch.get_num_threads()
    if job.train.threads:
        torch.set_num_threads(job.train.threads)  # small tensors: one thread beats contended ones
    try:
        if job.train.sensitivity is not None:  # Shen et al.'s parameter sensitivity (linreg/sensitivity.py)
            from icl_gd.linreg.sensitivity import run  # noqa: PLC0415

            return run(job, Path(output_dir), tracker)
        return _run(job, Path(output_dir), tracker)
    finally:
        torch.set_num_threads(threads)


def _run(job: LinregJob, out: Path, tracker: Any) -> dict[str, float]:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    keys = varying_keys(job)
    ctx = Context(
        job, keys, tracker, Tables(), getattr(torch, job.train.dtype), torch.device(job.train.device)
    )
    d, n, train = job.data.d[0], job.data.n[0], job.train
    gen = generator(job.seed, "construction")
    metrics = construction_check(d, n, train.construction_stack, train.construction_tasks, gen)
    log.info("construction check: %s", metrics)
    offset = 0
    for group in groups(job):
        steps, m = run_group(ctx, group, offset)
        offset += steps
        metrics.update(m)
    metrics.update(summary_metrics(job, metrics, ctx.tables))

    ctx.tables.write(out, tracker)
    figures(job, ctx.tables, keys, out / io.FIGURES, tracker)
    for key, values in ctx.tables.histograms.items():
        tracker.log_histogram(key, values)
    metrics["time/seconds"] = time.perf_counter() - t0
    io.write_text(out / io.LINREG_SUMMARY, json.dumps({"grid_keys": keys, "metrics": metrics}, indent=2))
    tracker.summary(metrics)
    log.info(
        "linreg job done in %.1fs: max |trained/theory - 1| = %.4f",
        metrics["time/seconds"],
        metrics["risk/max_abs_rel_gap"],
    )
    return metrics
