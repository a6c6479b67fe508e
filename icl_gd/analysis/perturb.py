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
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from icl_gd.errors import ConfigError

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
            ax.plot(df["eps"], df[f"{col}_mean"], color=c, label=str(name), **style.MAIN_STYLE)
            ax.fill_between(df["eps"], df[f"{col}_min"], df[f"{col}_max"], color=c, alpha=style.BAND_ALPHA)
        positive_eps = table["eps"][table["eps"] > 0]
        ax.set_xscale("symlog", linthresh=float(positive_eps.min()) if len(positive_eps) else 1.0)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("eps (noise: eps * std(W) * Z per matrix)")
        ax.set_ylabel(label)
    style.outside_legend(fig, axes.flat)  # never over the data
    return style.save(fig, path)
