"""method.lr_grid: choose the learning rate by the loss on held-out demonstrations (never on the test queries)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from icl_gd.errors import ConfigError, DivergedError
from icl_gd.methods import finetune


def select_lr(
    adapted: Callable[[Any, DictConfig], Any],
    method: DictConfig,
    lm: Any,
    batch: list,
    heldout: list,
    seed: int,
) -> tuple[DictConfig, list[dict[str, float]]]:
    """Train once per lr of `method.lr_grid` (weights restored after each) and keep the lowest held-out loss.

    adapted(lm, method): the method's context manager yielding (model, params, originals) and undoing training on
    exit. A diverged lr scores +inf. Returns the method with `lr` set to the winner and one row per lr tried.
    """
    if not heldout:
        raise ConfigError("method.lr_grid needs held-out demonstrations (method.heldout >= 1).")
    pad = lm.tokenizer.pad_token_id
    rows = []
    for lr in method.lr_grid:
        trial = OmegaConf.merge(method, {"lr": float(lr), "lr_grid": []})
        with adapted(lm, trial) as (model, params, _):  # undone on exit: each lr starts from the same model
            try:
                finetune.train(model, lm.tokenizer, batch, params, trial, seed)
                loss = finetune.mean_demo_loss(model, heldout, pad)
            except DivergedError:
                loss = math.inf
        rows.append({"lr": float(lr), "heldout_loss": loss})
    best = min(rows, key=lambda r: r["heldout_loss"])
    if not math.isfinite(best["heldout_loss"]):
        raise DivergedError(f"every lr of method.lr_grid={list(method.lr_grid)} diverged: try smaller ones.")
    return OmegaConf.merge(method, {"lr": best["lr"]}), rows
