"""lora: as gd, but training a fresh peft LoRA adapter (r, alpha, dropout, target_modules), removed afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, DictConfig

from icl_gd.errors import ConfigError
from icl_gd.methods import finetune
from icl_gd.methods.gd import GDConfig
from icl_gd.methods.registry import register
from icl_gd.methods.training import Adapted, FineTuneMethod


@dataclass
class LoRAConfig(GDConfig):
    """gd's keys plus the adapter's; conf/method/lora.yaml holds the values."""

    r: int = MISSING
    alpha: float = MISSING
    dropout: float = MISSING
    target_modules: list[str] = MISSING


@register
class LoRA(FineTuneMethod):
    name = "lora"
    schema = LoRAConfig

    @classmethod
    def check(cls, cfg: DictConfig, method: DictConfig) -> None:
        super().check(cfg, method)
        if int(method.r) < 1:
            raise ConfigError(f"method.r={method.r} must be >= 1 (the LoRA rank).")
        if not method.target_modules:
            raise ConfigError(
                "method.target_modules is empty: name the modules LoRA adapts, e.g. [q_proj, v_proj]."
            )

    @contextlib.contextmanager
    def adapted(self, lm: Any, method: DictConfig) -> Iterator[Adapted]:
        with finetune.lora_adapter(lm.model, method) as (peft_model, params):
            yield peft_model, params, None
