"""gd ("ICL-hat"): fine-tune the model's own weights on the N demonstrations, then ask each query zero-shot.

Each demo is formatted alone with the loss on its answer tokens only; `params` picks what is trained (all, the
key/value projections, one layer's value projection). The weights are restored from memory afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
from omegaconf import MISSING, DictConfig

from icl_gd.config import is_int, require_choice
from icl_gd.errors import ConfigError
from icl_gd.methods import finetune
from icl_gd.methods.registry import register
from icl_gd.methods.training import Adapted, FineTuneMethod

PARAM_SETS = ("all", "attn_kv", "layer_v")


@dataclass
class GDConfig:
    """The keys of a fine-tuning method; conf/method/gd.yaml holds their values and says what each does."""

    name: str = MISSING
    optimizer: str = MISSING
    lr: float = MISSING
    epochs: int = MISSING
    batch_size: Any = MISSING  # 1 or "all"
    params: str = MISSING
    layer: Any = MISSING  # int (negative counts from the end), "middle", or None
    layer_causal: bool = MISSING
    layer_causal_lr: float | None = None  # the lr of layer-causal GD (None: lr); absent in older configs
    loss_on: str = "answer"  # answer | all (Dai et al.); absent in older configs
    lr_grid: list[float] = MISSING
    heldout: int = MISSING
    tag: str | None = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    grad_clip: float | None = MISSING
    explode_factor: float = MISSING
    save_update: bool = MISSING
    fast_step: bool = True  # methods/fast_step.py; false: the plain loop; absent in old configs


@register
class GD(FineTuneMethod):
    name = "gd"
    schema = GDConfig
    updates_weights = True

    @classmethod
    def check(cls, cfg: DictConfig, method: DictConfig) -> None:
        super().check(cfg, method)
        require_choice("method.params", method.params, PARAM_SETS)
        if method.params == "layer_v" and method.layer is None:
            raise ConfigError(
                "method.params=layer_v needs method.layer=<layer index> (negative counts from the end) "
                "or method.layer=middle."
            )
        if method.layer is not None and not (is_int(method.layer) or method.layer == "middle"):
            raise ConfigError(
                f"method.layer={method.layer!r}: use an integer (negative counts from the end) or middle."
            )

    @contextlib.contextmanager
    def adapted(self, lm: Any, method: DictConfig) -> Iterator[Adapted]:
        params = finetune.select_parameters(lm.model, method)
        with finetune.restoring(params) as originals:
            yield lm.model, params, originals

    def inspect_update(
        self, params: dict, originals: dict | None, method: DictConfig, analysis: DictConfig
    ) -> tuple[dict | None, pd.DataFrame | None]:
        assert originals is not None  # gd always keeps the originals (adapted)
        update = (
            {n: (p.detach() - originals[n]).cpu() for n, p in params.items()} if method.save_update else None
        )
        sparsity = _update_sparsity(params, originals, analysis) if analysis.get("sparsity") else None
        return update, sparsity


def _update_sparsity(params: dict, originals: dict, analysis: DictConfig) -> pd.DataFrame:
    """Sparsity of (trained - original), one parameter at a time so no second copy of the model is held."""
    from icl_gd.analysis.sparsity import update_sparsity  # noqa: PLC0415

    thresholds = list(analysis.sparsity_thresholds)
    relative = bool(analysis.get("sparsity_relative", False))
    frames = [  # with the originals: the update and the weights under the same relative definitions too
        update_sparsity({n: (p.detach() - originals[n]).cpu()}, thresholds, relative, {n: originals[n].cpu()})
        for n, p in params.items()
    ]
    return pd.concat(frames, ignore_index=True)
