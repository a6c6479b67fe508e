"""method=param_sensitivity (Shen et al.): ICL answers under relative Gaussian noise on the weights.

The unperturbed model's ICL answers are the job's predictions; under every (scope, eps, noise seed) perturbation
(analysis/perturb.py `perturbed`: W <- W + eps * std(W) * Z per matrix, restored bit for bit) ICL answers again,
and `run_lm_job` writes param_sensitivity.csv, its figure and the means per (scope, eps) into metrics.json.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import MISSING, DictConfig
from torch import Tensor

from icl_gd.analysis.perturb import FIGURE, SCOPES, TABLE, draw, perturbed, select, summary
from icl_gd.config import positive
from icl_gd.errors import ConfigError
from icl_gd.methods.base import Method, MethodInputs, MethodOutput

log = logging.getLogger(__name__)


@dataclass
class ParamSensitivityConfig:
    """conf/method/param_sensitivity.yaml holds the values and says what each does."""

    name: str = MISSING
    eps: list[float] = MISSING
    noise_seeds: int = MISSING
    scopes: list[str] = field(default_factory=lambda: list(SCOPES))
    tag: str | None = None


class ParamSensitivity(Method):
    """ICL on the unperturbed model (its predictions are the job's), then ICL under every (scope, eps, noise seed)
    perturbation: `sensitivity_rows` gives the table the job writes (analysis/perturb.py `run_lm_job`)."""

    name = "param_sensitivity"
    schema = ParamSensitivityConfig

    @classmethod
    def check(cls, cfg: DictConfig, method: DictConfig) -> None:
        if int(cfg.demos) == 0:
            raise ConfigError("method=param_sensitivity measures ICL: set demos>=1.")
        if not method.eps:
            raise ConfigError("method.eps is empty: give the noise scales, e.g. method.eps=[0,0.01,0.1].")
        for eps in method.eps:
            if eps < 0:
                raise ConfigError(f"method.eps has {eps}: noise scales must be >= 0.")
        positive("method.noise_seeds", method.noise_seeds, "Use e.g. 3 noise draws per eps.")
        for scope in method.scopes:
            if scope not in SCOPES:
                raise ConfigError(f"method.scopes has {scope!r}; choose from: {', '.join(SCOPES)}.")

    # the rows of the last `answer` of this process, for run_lm_job to write beside the job's own files
    last_rows: list[dict[str, Any]] | None = None

    def answer(self, method: DictConfig, inputs: MethodInputs) -> MethodOutput:
        base = self._icl(inputs)
        ParamSensitivity.last_rows = self.sensitivity_rows(method, inputs, base)
        return MethodOutput(base)

    @staticmethod
    def _icl(inputs: MethodInputs):
        return inputs.predict(
            inputs.lm.model, inputs.demos, prefix_cache=bool(inputs.eval.get("prefix_cache", True))
        )

    def sensitivity_rows(self, method: DictConfig, inputs: MethodInputs, base) -> list[dict[str, Any]]:
        """One row per (scope, eps, noise seed): ICL accuracy, agreement with the unperturbed ICL's answers and
        the mean total-variation distance of the label distributions to the unperturbed ones."""
        gold = _gold(inputs)
        base_pred = _predicted(base, inputs)
        rows = []
        for scope in method.scopes:
            params = select(inputs.lm.model, scope)
            for eps in method.eps:
                for noise_seed in range(int(method.noise_seeds) if eps else 1):
                    with perturbed(params, float(eps), noise_seed):
                        p = self._icl(inputs)
                    pred = _predicted(p, inputs)
                    rows.append(
                        {
                            "scope": scope,
                            "eps": float(eps),
                            "noise_seed": noise_seed,
                            "accuracy": float((pred == gold).double().mean()),
                            "agreement": float((pred == base_pred).double().mean()),
                            "label_tv": _label_tv(p, base, inputs),
                            "n_queries": len(inputs.queries),
                            "n_params": sum(x.numel() for x in params.values()),
                        }
                    )
                    log.info("param sensitivity %s eps=%g seed=%d: %s", scope, eps, noise_seed, rows[-1])
        return rows


def _gold(inputs: MethodInputs) -> Tensor:
    if inputs.label_words:
        return torch.tensor([inputs.label_words.index(q.answer) for q in inputs.queries])
    raise ConfigError("method=param_sensitivity needs a classification dataset (dataset.label_words).")


def _predicted(p, inputs: MethodInputs) -> Tensor:
    """(Q,) the label each query is answered with: the most probable label word (whole token sequence)."""
    return p.label_probs.argmax(1)


def _label_tv(p, base, inputs: MethodInputs) -> float:
    """Mean over queries of the total-variation distance between the (renormalised) label distributions."""
    a = p.label_probs / p.label_probs.sum(1, keepdim=True)
    b = base.label_probs / base.label_probs.sum(1, keepdim=True)
    return float(0.5 * (a - b).abs().sum(1).mean())


def run_lm_job(cfg: DictConfig, out: Path, tracker: Any) -> dict[str, Any]:
    """The language-model job of method=param_sensitivity: the ordinary ICL job's files and metrics (its
    predictions are the unperturbed ICL's), plus param_sensitivity.csv, figures/param_sensitivity.png and, per
    (scope, eps), the mean accuracy and agreement over noise seeds in metrics.json."""
    from icl_gd import io, runner  # noqa: PLC0415 -- the runner calls this module, not the other way round

    ParamSensitivity.last_rows = None
    metrics = runner.lm_job(cfg, out, tracker)
    if ParamSensitivity.last_rows is None:
        raise ConfigError("run_lm_job: the job's method is not param_sensitivity (no sensitivity rows).")
    table = pd.DataFrame(ParamSensitivity.last_rows)
    io.write_csv(out / TABLE, table)
    draw(
        table,
        {"accuracy": "ICL accuracy", "agreement": "agreement with unperturbed ICL"},
        "scope",
        out / io.FIGURES / FIGURE,
        "Parameter sensitivity of ICL (band: noise seeds' range)",
    )
    for row in summary(table, ("accuracy", "agreement", "label_tv")).itertuples(index=False):
        for col in ("accuracy", "agreement", "label_tv"):
            metrics[f"sensitivity/{row.scope}/eps={row.eps:g}/{col}"] = float(getattr(row, f"{col}_mean"))
    tracker.log_table("param_sensitivity", table)
    return metrics
