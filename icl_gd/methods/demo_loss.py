"""The demonstrations as a training batch, and the losses GD trains and reports on them.

Each demo is formatted alone; its labels are IGNORE on the prompt and the answer's ids on the answer (or every token,
method.loss_on=all). `answer_loss` is ordinary GD's objective; `layer_causal_loss` is layer-causal GD's (Deutch et
al.): every decoder layer's input detached and every layer's output read out through the final norm and the
unembedding, so layer l is trained only on its own answer loss, as in ICL, where a layer's state depends only on
the layers below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from icl_gd.errors import ConfigError
from icl_gd.models import anatomy
from icl_gd.models.forward import continuation_ids, encode, pad

IGNORE = -100  # label id that cross-entropy skips: prompt and padding tokens carry no loss
ANSWER = "answer"  # TrainResult.loss_kind of ordinary GD: the answer-token loss at the model's output
LAYER_CAUSAL = "layer_causal_sum"  # layer-causal GD: the sum over layers of each layer's own answer loss

Batch = list[tuple[list[int], list[int]]]  # (input ids, labels) per demo


def build_batch(tokenizer, prompts: list[str], answers: list[str], add_bos: bool | None) -> Batch:
    """(input ids, labels) per demo: labels are IGNORE on the prompt and the answer's ids on the answer."""
    out = []
    for ids, answer in zip(
        encode(tokenizer, prompts, True if add_bos is None else add_bos), answers, strict=True
    ):
        ans = continuation_ids(tokenizer, answer)
        out.append((ids + ans, [IGNORE] * len(ids) + ans))
    return out


ALL_TOKENS = "all"  # method.loss_on=all: Dai et al.'s fine-tune, the loss on every token of each demo
LOSS_ON = (ANSWER, ALL_TOKENS)  # method.loss_on: the answer tokens only (default) | every token


def with_loss_on(batch: Batch, loss_on: str) -> Batch:
    """The batch with its labels for `loss_on`: unchanged for answer; for all, every token is a target (the first
    token has no prediction before it, so it carries no loss either way)."""
    if loss_on == ANSWER:
        return batch
    if loss_on != ALL_TOKENS:
        raise ConfigError(f"method.loss_on={loss_on!r} is not allowed; choose one of: {', '.join(LOSS_ON)}.")
    return [(ids, list(ids)) for ids, _ in batch]


def answer_loss(model, batch: Batch, pad_id: int) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens of a batch of demos."""
    device = next(model.parameters()).device
    ids, mask = pad([b[0] for b in batch], pad_id, device)
    labels, _ = pad([b[1] for b in batch], IGNORE, device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE
    )


def _final_norm(model) -> nn.Module:
    """The decoder's final norm, or a ConfigError with the fix for layer-causal GD."""
    try:
        return anatomy.final_norm(model)
    except ValueError as e:
        raise ConfigError(f"layer-causal GD: {e} Then set method.layer_causal=false.") from None


def _detach_input(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: the layer sees its input hidden states detached (positional, as HF passes them, or keyword)."""
    if args:
        return (args[0].detach(), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": kwargs["hidden_states"].detach()}


def per_layer_losses(model, batch: Batch, pad_id: int, detach_inputs: bool = True) -> list[torch.Tensor]:
    """Each decoder layer's answer loss: its output hidden states through the final norm and the unembedding.

    With detach_inputs every layer's input is detached, so layer l's loss reaches only layer l's weights (and the
    shared norm and unembedding; the input embeddings only where tied to the unembedding). The last layer's loss
    is `answer_loss`. Only the answer positions are read out, so no (layers, B, T, V) logits are ever held.
    """
    device = next(model.parameters()).device
    ids, mask = pad([b[0] for b in batch], pad_id, device)
    labels, _ = pad([b[1] for b in batch], IGNORE, device)
    targets = labels[:, 1:]
    keep = targets != IGNORE  # (B, T-1): positions whose next token is an answer token
    norm, unembed = _final_norm(model), model.get_output_embeddings()
    outputs: list[torch.Tensor] = []

    def collect(module: nn.Module, args: tuple, output) -> None:
        outputs.append(output[0] if isinstance(output, tuple) else output)

    layers = decoder_layers(model)
    handles = [layer.register_forward_hook(collect) for layer in layers]
    if detach_inputs:
        handles += [layer.register_forward_pre_hook(_detach_input, with_kwargs=True) for layer in layers]
    try:
        model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    head_device = unembed.weight.device  # layers may sit on other devices under device_map="auto"
    answers = targets[keep].to(head_device)
    losses = []
    for hidden in outputs:
        h = hidden[:, :-1][keep.to(hidden.device)].to(head_device)  # (answer tokens, hidden)
        losses.append(nn.functional.cross_entropy(unembed(norm(h)).float(), answers))
    return losses


def layer_causal_loss(model, batch: Batch, pad_id: int) -> torch.Tensor:
    """The layer-causal GD objective: the sum over decoder layers of each layer's own answer loss."""
    return torch.stack(per_layer_losses(model, batch, pad_id)).sum()


def decoder_layers(model) -> nn.ModuleList:
    """The decoder layers (Llama, GPT-2, GPT-NeoX, or a peft model around one), or a ConfigError saying what to use."""
    try:
        return anatomy.decoder_layers(model)
    except ValueError as e:
        raise ConfigError(f"{e} Use method.params=all.") from None


@torch.no_grad()
def mean_demo_loss(model, batch: Batch, pad_id: int, loss: Callable | None = None) -> float:
    """Mean per-demo answer loss (each demo weighted equally), in eval mode; `loss` (default `answer_loss`) may be
    the fast step's (the same value, unembedding the answer positions only)."""
    loss = loss or answer_loss
    return float(
        sum(torch.stack([loss(model, [b], pad_id) for b in batch]).tolist()) / len(batch)
    )  # one sync


@torch.no_grad()
def mean_demo_layer_losses(model, batch: Batch, pad_id: int) -> list[float]:
    """Mean per-demo loss of each decoder layer (each demo weighted equally), in eval mode."""
    per_demo = torch.tensor([[x.item() for x in per_layer_losses(model, [b], pad_id)] for b in batch])
    return per_demo.double().mean(0).tolist()


def evaluate(
    model, batch, pad_id: int, layer_causal: bool, loss: Callable | None = None
) -> tuple[float, float, list[float]]:
    """(training objective, answer loss, per-layer losses or []) of the model on the demos, each a per-demo mean."""
    answer = mean_demo_loss(model, batch, pad_id, loss if not layer_causal else None)
    if not layer_causal:
        return answer, answer, []
    layers = mean_demo_layer_losses(model, batch, pad_id)
    return math.fsum(layers), answer, layers
