"""Run a method outside the runner, as the runner does: one MethodInputs, the registered class."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from icl_gd.data import Example, Template
from icl_gd.methods import MethodInputs, MethodOutput, method_class


def run_method(
    method: DictConfig,
    lm: Any,
    template: Template,
    demos: list[Example],
    queries: list[Example],
    eval_cfg: DictConfig,
    label_words: list[str] | None = None,
    separator: str = "\n\n",
    seed: int = 0,
    add_bos: bool | None = None,
    **extra: Any,
) -> MethodOutput:
    """method_class(method)().answer(method, inputs); `extra` sets MethodInputs fields (analysis, heldout, ...)."""
    inputs = MethodInputs(
        lm=lm,
        template=template,
        separator=separator,
        demos=demos,
        queries=queries,
        label_words=label_words,
        eval=eval_cfg,
        seed=seed,
        add_bos=add_bos,
        **{"analysis": OmegaConf.create({}), **extra},
    )
    return method_class(method)().answer(method, inputs)
