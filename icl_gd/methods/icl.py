"""icl: the N demonstrations in the prompt, joined by dataset.separator, then the query.

Every prompt starts with the same demonstrations, so by default (`eval.prefix_cache`) their key/value cache is
computed once and reused (methods/predict.py); the outputs equal the plain forward to float rounding.
"""

from __future__ import annotations

from omegaconf import DictConfig

from icl_gd.methods.base import Method, MethodInputs, MethodOutput
from icl_gd.methods.registry import register
from icl_gd.methods.zeroshot import PromptMethodConfig


@register
class ICL(Method):
    name = "icl"
    schema = PromptMethodConfig

    def answer(self, method: DictConfig, inputs: MethodInputs) -> MethodOutput:
        prefix_cache = bool(inputs.eval.get("prefix_cache", True))
        return MethodOutput(inputs.predict(inputs.lm.model, inputs.demos, prefix_cache=prefix_cache))
