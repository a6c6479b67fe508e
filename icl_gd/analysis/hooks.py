"""Forward hooks that capture each layer's attention output and attention map at a sequence's last real token.

Used by the Dai et al. analysis (analysis/dai.py), which compares the attention block's output (after the
output projection, before the residual add) and its attention weights across zero-shot, ICL and fine-tuned
models. Sequences are padded on the right and each is read at its own last real token, as in
methods/predict.py, so a padded batch gives the same numbers as one sequence at a time.

Attention weights exist only under eager attention (sdpa and flash attention return None in their place), so
`capture` switches the model to eager for its duration and restores the previous implementation afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from icl_gd.models.anatomy import attention_implementation, attention_module, decoder_layers
from icl_gd.models.forward import logits_at

EAGER = "eager"  # the only attention implementation that returns its weights


@dataclass
class Capture:
    """Per-layer captures at each sequence's last real token; B sequences, T_max the longest, V vocabulary."""

    attn_out: list[Tensor]  # per layer (B, hidden) float32: attention block output, before the residual add
    attn_map: (
        list[Tensor] | None
    )  # per layer (B, heads, T_max) float32: last token's weights, zero on padding
    logits_last: Tensor  # (B, V) float32


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """model.eval() for the block, restoring training mode on exit."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class _Recorder:
    """A forward hook on one attention module that keeps its output (and weights) at given positions."""

    def __init__(self, maps: bool) -> None:
        self.maps = maps
        self.last: Tensor | None = None  # (B,) last real position of each sequence of the current batch
        self.out: list[Tensor] = []  # per batch (B, hidden)
        self.weights: list[Tensor] = []  # per batch (B, heads, T_batch)

    def __call__(self, module: nn.Module, args, output) -> None:
        hidden, weights = (output[0], output[1]) if isinstance(output, tuple) else (output, None)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = self.last.to(hidden.device)
        self.out.append(hidden[rows, last].float().cpu())
        if self.maps:
            if weights is None:
                raise RuntimeError(
                    f"{type(module).__name__} returned no attention weights although the model runs "
                    f"{attn_implementation_of(module)!r} attention."
                )
            self.weights.append(weights[rows, :, last].float().cpu())  # (B, heads, T_batch)


def attn_implementation_of(module: nn.Module) -> str | None:
    config = getattr(module, "config", None)
    return getattr(config, "_attn_implementation", None)


def _pad_right(chunks: list[Tensor], width: int) -> Tensor:
    """Concatenate (B_i, heads, T_i) chunks along the batch, zero-padding the last dim to `width`."""
    return torch.cat([nn.functional.pad(c, (0, width - c.shape[-1])) for c in chunks])


@torch.no_grad()
def capture(model, seqs: list[list[int]], pad_id: int, batch_size: int, maps: bool = True) -> Capture:
    """Attention outputs (and maps) of every layer and the logits, at each sequence's last real token.

    seqs are token ids with any special tokens already in place; they are right-padded in batches of
    `batch_size` with an attention mask. maps=False skips the attention weights (and keeps the model's own,
    faster attention implementation).
    """
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("capture: every sequence needs at least one token.")
    recorders = [_Recorder(maps) for _ in decoder_layers(model)]
    modules = [attention_module(layer) for layer in decoder_layers(model)]
    handles = []
    logits = []
    implementation = attention_implementation(model, EAGER) if maps else contextlib.nullcontext()
    try:
        for module, rec in zip(modules, recorders, strict=True):
            handles.append(module.register_forward_hook(rec))
        with implementation, eval_mode(model):
            for start in range(0, len(seqs), batch_size):
                batch = seqs[start : start + batch_size]
                last = torch.tensor([len(s) - 1 for s in batch])
                for rec in recorders:
                    rec.last = last
                logits.append(logits_at(model, batch, last[:, None], pad_id)[:, 0].cpu())
    finally:
        for handle in handles:
            handle.remove()
    width = max(len(s) for s in seqs)
    return Capture(
        attn_out=[torch.cat(rec.out) for rec in recorders],
        attn_map=[_pad_right(rec.weights, width) for rec in recorders] if maps else None,
        logits_last=torch.cat(logits).float(),
    )
