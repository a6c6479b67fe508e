"""Parameter sensitivity in the lab (Shen et al.): the constructed one-step-GD LSA against trained LSA and H3.

For the job's first (d, n) grid group: the von Oswald construction of line-searched one-step GD (weights by
formula), an LSA and an H3 trained as method=train trains them, and the one-step-GD predictor itself (no weights:
the reference line). Each model's weight matrices are perturbed, W <- W + eps * std(W) * Z per matrix and member
(analysis/perturb.py), for every eps and noise seed, and its query risk measured on the same fresh tasks
(sensitivity.csv, figures/risk_sensitivity_eps.png; risk/sensitivity/<model>/eps=<eps> in the metrics).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from icl_gd import io
from icl_gd.analysis.perturb import draw, perturbed, summary
from icl_gd.linreg.config import LinregJob
from icl_gd.linreg.constructions import GDConstruction
from icl_gd.linreg.data import TaskSampler
from icl_gd.linreg.evaluate import evaluate
from icl_gd.linreg.grid import generator, groups
from icl_gd.linreg.models import GD, H3, LSA, H3Config, LSAConfig
from icl_gd.linreg.phases import line_search_gd
from icl_gd.linreg.train import Schedule, train

log = logging.getLogger("icl_gd.linreg")

TABLE = "sensitivity.csv"
FIGURE = "risk_sensitivity_eps.png"
MODELS = ("gd_construction", "lsa", "h3")  # method.sensitivity.models: what can be perturbed
REFERENCE = "gd_1step"  # the line-searched one-step GD predictor (no weights to perturb)
_INIT, _DATA, _EVAL = 0, 1, 2  # sub-streams of the lab's "sensitivity" random stream (grid.generator)


def build(
    name: str, job: LinregJob, d: int, n: int, members: int, gd_c: torch.Tensor, dtype, device
) -> nn.Module:
    """The constructed one-step-GD LSA, or a fresh LSA / H3 (trained by `fit`)."""
    cfg = job.train.sensitivity
    if name == "gd_construction":
        eye = torch.eye(d, dtype=torch.float64).expand(members, d, d).clone()
        return GDConstruction(n, gd_c * n, eye).to(device=device, dtype=dtype)
    gen = generator(job.seed, "sensitivity", _INIT, MODELS.index(name))
    if name == "lsa":
        model = LSA(LSAConfig(d, 1, d + 1, members, cfg.init_std, cfg.value_init), gen)
    else:
        model = H3(H3Config(d, n, None, members, cfg.init_std), gen)
    return model.to(device=device, dtype=dtype)


def fit(model: nn.Module, name: str, job: LinregJob, sampler: TaskSampler) -> None:
    """Adam on fresh tasks, method=train's schedule (method.steps, lr, warmup, min_lr_ratio)."""
    t = job.train
    gen = generator(job.seed, "sensitivity", _DATA, MODELS.index(name))
    train(
        model,
        lambda: sampler.sample(job.data.batch, gen)[:2],
        Schedule(t.steps, t.lr, t.warmup, t.min_lr_ratio),
        t.log_every,
        [],
    )
    model.requires_grad_(False)


def run(job: LinregJob, out: Path, tracker: Any) -> dict[str, float]:
    """The sensitivity job (see the module docstring); returns its flat metrics (every key holds 'risk')."""
    t0 = time.perf_counter()
    cfg = job.train.sensitivity
    dtype, device = getattr(torch, job.train.dtype), torch.device(job.train.device)
    group = groups(job)[0]
    d, n, E = group.d, group.n, group.members
    sampler = TaskSampler(group.spec, n, dtype, device)
    gd_c = line_search_gd(sampler, job.train.tune_tasks, generator(job.seed, "tune", group.index))
    rows: list[dict[str, Any]] = []
    eye = torch.eye(d, dtype=torch.float64)
    reference = GD((gd_c[:, None, None] * eye).to(dtype))
    for name in cfg.models:
        model = build(name, job, d, n, E, gd_c, dtype, device)
        if name != "gd_construction":
            fit(model, name, job, sampler)
        params = dict(model.named_parameters())
        for eps in cfg.eps:
            for noise_seed in range(cfg.noise_seeds if eps else 1):
                with perturbed(params, float(eps), noise_seed, member_axis=True):
                    gen_eval = generator(
                        job.seed, "sensitivity", _EVAL
                    )  # the same tasks for every model and eps
                    risks, _ = evaluate(
                        {name: model, REFERENCE: reference},
                        sampler,
                        cfg.eval_tasks,
                        job.train.eval_chunk,
                        gen_eval,
                    )
                rows.append(
                    {
                        "model": name,
                        "eps": float(eps),
                        "noise_seed": noise_seed,
                        "risk": float(risks[name].mean.mean()),
                        "risk_se": float(risks[name].se.mean()),
                        "risk_gd_1step": float(risks[REFERENCE].mean.mean()),
                        "d": d,
                        "n": n,
                    }
                )
        log.info(
            "sensitivity %s: %s", name, [(r["eps"], round(r["risk"], 4)) for r in rows if r["model"] == name]
        )
    table = pd.DataFrame(rows)
    base = table[table["eps"] == 0].groupby("model")["risk"].mean()
    table["risk_ratio"] = table["risk"] / table["model"].map(base)
    io.write_csv(out / TABLE, table)
    draw(
        table,
        {"risk": "query risk (log scale)"},
        "model",
        out / io.FIGURES / FIGURE,
        f"Risk under weight noise, d={d}, n={n} (band: noise seeds' range; one-step GD: {table['risk_gd_1step'].iloc[0]:.3g})",
        log_y=True,
    )
    metrics: dict[str, float] = {"risk/gd_1step": float(table["risk_gd_1step"].iloc[0])}
    for row in summary(table, ("risk", "risk_ratio")).itertuples(index=False):
        metrics[f"risk/sensitivity/{row.model}/eps={row.eps:g}"] = float(row.risk_mean)
        metrics[f"risk/sensitivity_ratio/{row.model}/eps={row.eps:g}"] = float(row.risk_ratio_mean)
    metrics["time/seconds"] = time.perf_counter() - t0
    tracker.summary(metrics)
    tracker.log_table("sensitivity", table)
    return metrics
