"""Risks of a group: theory for every point, one evaluation loop for the model and every baseline, risk curves.

Theory (theory.py): the optimal (rank-constrained) preconditioner W* and its risk, closed form where derived,
else from Monte Carlo moments; the best plain GD step. The baselines: optimal one-step preconditioned GD, line-
searched one-step GD and its LSA construction, Bayes ridge, least squares. All predictors see the same fresh
tasks, so each risk also has a paired difference to the reference (pgd_optimal, whose risk is exact): the
control-variate estimate R* + E[e_model^2 - e_opt^2] is unbiased and ~10x tighter than the plain Monte Carlo mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from icl_gd.linreg.config import LinregJob
from icl_gd.linreg.constructions import GDConstruction
from icl_gd.linreg.data import TaskSampler, TaskSpec
from icl_gd.linreg.evaluate import Risk, evaluate, pool
from icl_gd.linreg.grid import Context, Group, generator, point_spec
from icl_gd.linreg.models import GD, H3, Ridge
from icl_gd.linreg.phases import Fitted, rel_dist
from icl_gd.linreg.theory import PointTheory, point_theory
from icl_gd.metrics import Z95, cosine, normal_interval

REFERENCE = "pgd_optimal"  # its risk is known exactly, so paired differences to it are tight
CURVE_PREDICTORS = ("pgd_optimal", "gd_1step", "ridge")  # beside the model, in the risk-vs-context curves


def theory_of(job: LinregJob, spec: TaskSpec, n: int, rank: int | None, gen: torch.Generator) -> PointTheory:
    return point_theory(spec, n, rank, job.train.theory_mc_samples, job.train.eval_chunk, gen)


def group_theories(job: LinregJob, group: Group) -> list[PointTheory]:
    """Theory of every point of the group, from the group's theory stream."""
    gen = generator(job.seed, "theory", group.index)
    return [theory_of(job, point_spec(job, p), group.n, p["rank"], gen) for p in group.points]


def interval(mean: float, se: float) -> dict[str, float]:
    """{mean, se, lo, hi}: the normal 95% interval of a Monte Carlo estimate."""
    lo, hi = normal_interval(mean, se)
    return {"mean": mean, "se": se, "lo": lo, "hi": hi}


def predictors(
    fit: Fitted, group: Group, w_star: Tensor, gd_c: Tensor, dtype: torch.dtype
) -> dict[str, nn.Module]:
    """The model and every baseline, one member per group member."""
    E, d, n = group.members, group.d, group.n
    eye = torch.eye(d, dtype=torch.float64)
    return {
        fit.main: fit.model,
        "pgd_optimal": GD(w_star.to(dtype)),
        "gd_1step": GD((gd_c[:, None, None] * eye).to(dtype)),
        "gd_construction": GDConstruction(n, gd_c * n, eye.expand(E, d, d).clone()).to(dtype),
        "ridge": Ridge(group.spec.noise, group.spec.beta_cov),
        "least_squares": Ridge(torch.zeros(E, dtype=torch.float64), eye.expand(E, d, d).clone()),
    }


def _risk_rows(
    group: Group,
    theories: list[PointTheory],
    labels: list[str],
    risks: dict[str, Risk],
    paired: dict[str, Risk],
) -> list[dict[str, Any]]:
    rows = []
    for name, risk in risks.items():
        mean, se, std = pool(risk, group.members_of)
        gap = pool(paired[name], group.members_of) if name in paired else None
        for p, point in enumerate(group.points):
            th = theories[p]
            rows.append(
                {
                    **point,
                    "rank": point["rank"] or group.d,
                    "label": labels[p],
                    "predictor": name,
                    **interval(float(mean[p]), float(se[p])),
                    "seed_std": float(std[p]),
                    "theory": th.risk,
                    "theory_method": th.method,
                    "gap_to_reference": float(gap[0][p]) if gap else 0.0,
                    "gap_se": float(gap[1][p]) if gap else 0.0,
                }
            )
    return rows


def _point_metrics(
    fit: Fitted,
    mem: list[int],
    lab: str,
    th: PointTheory,
    main_mean: float,
    ci: tuple[float, float, float],
    w: dict,
) -> dict[str, float]:
    """The metrics of one point beyond its plain risks; ci = (se of the model's risk, paired gap, its se)."""
    main, (se, gap, gap_se) = fit.main, ci
    cv = th.risk + gap  # control variate: R* + E[e_model^2 - e_opt^2] on the same tasks
    out = {
        f"risk/theory{lab}": th.risk,
        f"risk/{main}_ci95{lab}": float(Z95 * se),
        f"risk/{main}_cv{lab}": cv,
        f"risk/{main}_cv_ci95{lab}": float(Z95 * gap_se),
        f"risk/{main}_rel_gap{lab}": cv / th.risk - 1,
        f"risk/{main}_mc_rel_gap{lab}": main_mean / th.risk - 1,
        f"risk/gd_1step_theory{lab}": th.gd_risk,
    }
    if th.risk_full != th.risk:
        out[f"risk/theory_full_rank{lab}"] = th.risk_full
    learned, w_star = w["learned"], w["w_star"]
    if learned is not None and not isinstance(fit.model, H3):  # H3's lag-averaged W only approximates it
        out[f"risk/{main}_precond{lab}"] = float(th.risk_of(learned[mem]).mean())
    if learned is not None:
        out[f"precond_cosine{lab}"] = float(cosine(learned[mem], w_star[mem]).mean())
        out[f"precond_rel_dist{lab}"] = float(rel_dist(learned[mem], w_star[mem]).mean())
    return out


def _theory_row(point: dict[str, Any], d: int, lab: str, th: PointTheory) -> dict[str, Any]:
    return {
        **point,
        "rank": point["rank"] or d,
        "label": lab,
        "risk": th.risk,
        "method": th.method,
        "gd_risk": th.gd_risk,
        "gd_scale": th.gd_scale,
        "w_star_scale": float(th.w_star.diagonal().mean()),
    }


def evaluate_group(
    ctx: Context,
    group: Group,
    fit: Fitted,
    preds: dict[str, nn.Module],
    sampler: TaskSampler,
    theories: list[PointTheory],
    labels: list[str],
    w: dict,
) -> dict[str, float]:
    """Query risks of every predictor into the risks and theory tables; returns the group's risk metrics.

    w: {"w_star": (E, d, d), "learned": the model's W (E, d, d) or None}.
    """
    cfg = ctx.job.train
    gen = generator(ctx.job.seed, "eval", group.index)
    risks, paired = evaluate(preds, sampler, cfg.eval_tasks, cfg.eval_chunk, gen, reference=REFERENCE)
    rows = _risk_rows(group, theories, labels, risks, paired)
    ctx.tables.add("risks", rows)
    metrics = {f"risk/{r['predictor']}{r['label']}": r["mean"] for r in rows}
    se = pool(risks[fit.main], group.members_of)[1]
    gap, gap_se = pool(paired[fit.main], group.members_of)[:2]
    for p, (point, lab, th) in enumerate(zip(group.points, labels, theories, strict=True)):
        main_mean = metrics[f"risk/{fit.main}{lab}"]
        ci = (se[p], float(gap[p]), gap_se[p])
        metrics.update(_point_metrics(fit, group.members_of[p], lab, th, main_mean, ci, w))
        ctx.tables.add("theory", [_theory_row(point, group.d, lab, th)])
    return metrics


def _curve_theory_rows(
    group: Group, th: PointTheory, panel: str, learned: Tensor | None, mem: list[int]
) -> list[dict[str, Any]]:
    """Theory along the prefix: the optimum R*_k, the fixed W*(n) at k and (lsa) the learned W at k."""
    rows = []
    for k in range(group.n + 1):
        rows.append({"panel": panel, "curve": "optimal R*_k", "position": k, "risk": th.optimum_at(k)})
        rows.append(
            {
                "panel": panel,
                "curve": f"W*(n={group.n}) at k",
                "position": k,
                "risk": th.risk_at(th.w_star, k),
            }
        )
        if learned is not None:
            risk = float(np.mean([th.risk_at(wi, k) for wi in learned[mem]]))
            rows.append({"panel": panel, "curve": "learned W at k", "position": k, "risk": risk})
    return rows


def curves(
    ctx: Context,
    group: Group,
    fit: Fitted,
    preds: dict[str, nn.Module],
    sampler: TaskSampler,
    theories: list[PointTheory],
    labels: list[str],
    learned: Tensor | None,
) -> None:
    """Risk against the number of in-context examples, for the first i.i.d. points (where theory has a curve)."""
    cfg = ctx.job.train
    iid_points = [p for p, th in enumerate(theories) if th.iid][: cfg.figure_panels]
    if not iid_points:
        return
    panels = {p: labels[p] or f"d={group.d}, n={group.n}" for p in iid_points}
    curve_preds = {k: preds[k] for k in (fit.main, *CURVE_PREDICTORS)}
    gen = generator(ctx.job.seed, "curves", group.index)
    risks, _ = evaluate(curve_preds, sampler, cfg.curve_tasks, cfg.eval_chunk, gen, prefix=True)
    rows = []
    for name, risk in risks.items():
        mean, se, _ = pool(risk, group.members_of)
        for p in iid_points:
            for k in range(group.n + 1):
                lo, hi = normal_interval(float(mean[p, k]), float(se[p, k]))
                rows.append(
                    {
                        "panel": panels[p],
                        "predictor": name,
                        "position": k,
                        "mean": float(mean[p, k]),
                        "lo": lo,
                        "hi": hi,
                    }
                )
    lsa_w = learned if ctx.job.model.name == "lsa" else None
    trows = [
        row
        for p in iid_points
        for row in _curve_theory_rows(group, theories[p], panels[p], lsa_w, group.members_of[p])
    ]
    ctx.tables.add("curves", rows)
    ctx.tables.add("curve_theory", trows)
