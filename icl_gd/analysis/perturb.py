"""Parameter sensitivity (Shen et al.): relative Gaussian noise on the weights, W <- W + eps * std(W) * Z per matrix.

Shen et al. argue that the weights built so that a transformer performs GD (constructions) are fragile while trained
models are not. `perturbed` adds the noise in place for a block and restores the weights bit for bit on exit
(eps = 0 adds nothing). Two users:

- the language model (`method=param_sensitivity`, experiment=param_sensitivity): ICL accuracy and the agreement of
  the perturbed model's ICL answers with the unperturbed model's, against eps, with the noise on every weight
  matrix (`all`) or on the attention projections only (`attention`), over several noise seeds;
- the regression lab (linreg/sensitivity.py, experiment=linreg_sensitivity): the constructed one-step-GD LSA
  against the trained LSA and H3, their risk against eps.

std(W) is the standard deviation of all entries of one matrix (of one ensemble member's slice, with
`member_axis`: the lab's batched models carry their members on axis 0).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import MISSING, DictConfig
from torch import Tensor, nn

from icl_gd.config import positive
from icl_gd.errors import ConfigError
from icl_gd.methods.base import Method, MethodInputs, MethodOutput

log = logging.getLogger(__name__)

SCOPES = ("all", "attention")  # every weight matrix | the attention projections (q, k, v, o) only
ATTENTION_PARTS = (
    ".self_attn.",
    ".attn.",
    ".attention.",
)  # attention modules in Llama, GPT-2, GPT-NeoX names
MATRIX_DIMS = 2  # "weight matrices": parameters with at least this many dimensions (no norms, no biases)
TABLE = "param_sensitivity.csv"
FIGURE = "param_sensitivity.png"


def select(model: nn.Module, scope: str) -> dict[str, nn.Parameter]:
    """The weight matrices of `scope`: all of them, or the attention projections only (tied weights once)."""
    if scope not in SCOPES:
        raise ConfigError(f"scope={scope!r} is not allowed; choose one of: {', '.join(SCOPES)}.")
    chosen = {n: p for n, p in model.named_parameters() if p.dim() >= MATRIX_DIMS}
    if scope == "attention":
        chosen = {n: p for n, p in chosen.items() if any(part in f".{n}" for part in ATTENTION_PARTS)}
    if not chosen:
        raise ConfigError(f"{type(model).__name__} has no weight matrices in scope {scope!r}.")
    return chosen


def relative_noise(w: Tensor, eps: float, generator: torch.Generator, member_axis: bool = False) -> Tensor:
    """eps * std(w) * Z, Z standard normal of w's shape (drawn on the CPU from `generator`, in float64)."""
    z = torch.randn(w.shape, generator=generator, dtype=torch.float64)
    x = w.detach().to(device="cpu", dtype=torch.float64)
    std = x.flatten(1).std(dim=1).reshape(-1, *([1] * (x.dim() - 1))) if member_axis else x.std()
    return eps * std * z


@contextlib.contextmanager
def perturbed(
    params: dict[str, Tensor], eps: float, seed: int, member_axis: bool = False
) -> Iterator[dict[str, Tensor]]:
    """Add eps * std(W) * Z to every tensor of `params` in place for the block (noise seeded by `seed`, drawn in
    name order); the originals are written back on exit, whatever happens. Yields the noise added (empty for
    eps = 0, which changes nothing)."""
    saved = {n: p.detach().clone() for n, p in params.items()}
    generator = torch.Generator().manual_seed(int(seed))
    noise: dict[str, Tensor] = {}
    try:
        with torch.no_grad():
            if eps != 0:
                for name in sorted(params):
                    p = params[name]
                    noise[name] = relative_noise(p, eps, generator, member_axis).to(
                        device=p.device, dtype=p.dtype
                    )
                    p.add_(noise[name])
        yield noise
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])


# ---------------------------------------------------------------------------------------------------------
# The language-model experiment


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


def summary(table: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Per (scope[, model], eps): the mean, min and max over noise seeds of each column (the figure's bands)."""
    keys = [k for k in ("model", "scope") if k in table] + ["eps"]
    agg = table.groupby(keys, sort=True)[list(columns)].agg(["mean", "min", "max"])
    agg.columns = [f"{c}_{s}" for c, s in agg.columns]
    return agg.reset_index()


def draw(
    table: pd.DataFrame, columns: dict[str, str], line: str, path: Path, title: str, log_y: bool = False
) -> Path:
    """One panel per column: the mean over noise seeds against eps (symlog x: eps = 0 on the axis), one line per
    value of `line`, a band from the smallest to the largest seed's value."""
    from icl_gd import style  # noqa: PLC0415 -- matplotlib only for the figure

    stats = summary(table, tuple(columns))
    fig, axes = style.figure(1, len(columns), title)
    for ax, (col, label) in zip(axes[0], columns.items(), strict=True):
        for name, df in stats.groupby(line, sort=True):
            c = style.color(str(name))
            ax.plot(df["eps"], df[f"{col}_mean"], marker="o", color=c, label=str(name))
            ax.fill_between(df["eps"], df[f"{col}_min"], df[f"{col}_max"], color=c, alpha=0.2)
        positive_eps = table["eps"][table["eps"] > 0]
        ax.set_xscale("symlog", linthresh=float(positive_eps.min()) if len(positive_eps) else 1.0)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("eps (noise: eps * std(W) * Z per matrix)")
        ax.set_ylabel(label)
        ax.legend()
    return style.save(fig, path)


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
