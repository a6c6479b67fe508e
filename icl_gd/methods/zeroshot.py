"""zeroshot: the query alone, no demonstrations: the floor that ICL and GD both start from."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from icl_gd.methods.base import Method, MethodInputs, MethodOutput
from icl_gd.methods.registry import register


@dataclass
class PromptMethodConfig:
    """The keys of a method that only builds prompts (zeroshot, icl)."""

    name: str = MISSING
    tag: str | None = None  # a display name for this variant in comparisons and the report


@register
class ZeroShot(Method):
    name = "zeroshot"
    schema = PromptMethodConfig
    uses_demos = False

    def answer(self, method: DictConfig, inputs: MethodInputs) -> MethodOutput:
        return MethodOutput(inputs.predict(inputs.lm.model, []))
