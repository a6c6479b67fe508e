"""Model anatomy: the one place that knows where architectures keep their parts.

Decoder layers, a layer's attention module, the final norm, the attention implementation, linear module names,
the key/value projections, and what a parameter name says (layer index, matrix type). Llama-family, GPT-2 and
GPT-NeoX layouts, and peft models wrapping one. Lookups that fail raise ValueError naming what was expected;
callers add the fix that fits their knob.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from torch import nn

KV_PROJECTIONS = (".k_proj.", ".v_proj.")  # key/value projection parameters (Llama-family names)
VALUE_PROJECTION = "v_proj."
NO_LAYER = -1  # layer index of parameters outside the decoder layers (embeddings, final norm, lm_head)

_LAYER = re.compile(r"(?:layer)?(\d+)")  # "12" in model.layers.12 / transformer.h.12, or "layer3" (layer_v)
_SUFFIXES = ("weight", "bias")


def unwrap(model) -> nn.Module:
    """The transformers model inside a peft PeftModel (itself otherwise)."""
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    inner = getattr(getattr(model, "base_model", None), "model", None)
    return inner if isinstance(inner, nn.Module) and type(model).__name__.startswith("Peft") else model


# (attribute path to the decoder layers, attribute of a layer holding its attention module), per family
_LAYER_PATHS = (("model", "layers"), ("transformer", "h"), ("gpt_neox", "layers"))
_ATTENTION_NAMES = ("self_attn", "attn", "attention")


def decoder_layers(model) -> nn.ModuleList:
    """The decoder layers of a Llama-family, GPT-2 or GPT-NeoX model, or of a peft model wrapping one."""
    base = unwrap(model)
    for outer, inner in _LAYER_PATHS:
        layers = getattr(getattr(base, outer, None), inner, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(
        f"cannot find the decoder layers of {type(base).__name__}: expected model.layers (Llama), "
        "transformer.h (GPT-2) or gpt_neox.layers (GPT-NeoX)."
    )


def attention_module(layer: nn.Module) -> nn.Module:
    """The self-attention module of one decoder layer."""
    for name in _ATTENTION_NAMES:
        module = getattr(layer, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(
        f"cannot find the attention module of {type(layer).__name__}: expected one of {_ATTENTION_NAMES}."
    )


def attn_implementation(model) -> str | None:
    return unwrap(model).config._attn_implementation


def _set_attn_implementation(model, name: str | None) -> None:
    base = unwrap(model)
    if hasattr(base, "set_attn_implementation"):
        base.set_attn_implementation(name)
    else:
        base.config._attn_implementation = name


@contextlib.contextmanager
def attention_implementation(model, name: str) -> Iterator[None]:
    """Run the model with attention implementation `name`, restoring the previous one on exit."""
    previous = attn_implementation(model)
    if previous == name:
        yield
        return
    _set_attn_implementation(model, name)
    try:
        yield
    finally:
        _set_attn_implementation(model, previous)


FINAL_NORMS = ("norm", "ln_f", "final_layer_norm")  # the decoder's final norm: Llama/Mistral, GPT-2, GPT-NeoX


def final_norm(model) -> nn.Module:
    """The norm the decoder applies to the last layer's output before the unembedding."""
    decoder = model.get_decoder()
    for name in FINAL_NORMS:
        norm = getattr(decoder, name, None)
        if isinstance(norm, nn.Module):
            return norm
    raise ValueError(
        f"cannot find the final norm of {type(model).__name__} (looked for {list(FINAL_NORMS)})."
    )


def linear_module_names(model) -> list[str]:
    """Leaf names of the linear layers a LoRA adapter can target (q_proj, v_proj, ...)."""
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    return sorted(names)


def parse_param(name: str) -> tuple[int, str]:
    """(layer index, matrix type) of a parameter name; NO_LAYER for parameters outside the decoder layers.

    model.layers.12.self_attn.v_proj.weight -> (12, "v_proj"); layer3.self_attn.v_proj.weight -> (3, "v_proj");
    transformer.h.4.attn.c_attn.weight -> (4, "c_attn"); peft's base_model.model.model.layers.0.self_attn.q_proj.
    lora_A.default.weight -> (0, "q_proj.lora_A"); lm_head.weight -> (-1, "lm_head"); a bias adds ".bias".
    """
    parts = name.split(".")
    suffix = parts.pop() if len(parts) > 1 and parts[-1] in _SUFFIXES else None
    lora = next((i for i, p in enumerate(parts) if p.startswith("lora_")), None)
    adapter = parts[lora] if lora is not None else None
    if lora is not None:
        parts = parts[:lora]  # drop the adapter name that follows lora_A / lora_B
    layer = next((int(m.group(1)) for p in parts if (m := _LAYER.fullmatch(p))), NO_LAYER)
    matrix = parts[-1] if parts else name
    if adapter:
        matrix += f".{adapter}"
    if suffix == "bias":
        matrix += ".bias"
    return layer, matrix


_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(model) -> int | None:
    """The most tokens one sequence may hold (the model config's position limit), or None when it names none."""
    config = getattr(unwrap(model), "config", None)
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
