"""The GD step without its overheads, same numbers as the plain loop (forward, backward, Adam, `.item()` a step).

What the plain step pays for and this one does not:

- **Full-vocabulary logits at every position.** The loss reads only the answer tokens, so the unembedding is
  applied to the answer positions alone (`AnswerLoss`), as `predict` does: (answer tokens, V) logits instead of
  (B, T, V), in the forward and in the backward.
- **A dense embedding gradient.** The input embedding's backward allocates a (V, H) zero tensor, scatters the few
  rows of the demos' tokens into it and adds it to the unembedding's gradient (the same tensor when they are tied,
  as in SmolLM2): ~0.25 s of a 0.32 s backward on SmolLM2. Here the rows are added in place into a gradient
  buffer kept for the whole training (`GradSink`), and the unembedding's gradient is written into that buffer by
  `torch.mm(out=)`, so no (V, H) tensor is allocated (and page-faulted in) per step.
- **The for-loop optimizer.** `fused=True` Adam/AdamW/SGD: one kernel over all parameters instead of a handful of
  ops per tensor (0.33 s -> 0.08 s per Adam step on SmolLM2 here).
- **A separate clipping pass** (on a GPU). With a fused optimizer the clipping factor goes into the optimizer's
  kernel as the gradient's divisor (`grad_scale`, as torch's GradScaler passes its scale), so the gradients are
  not rewritten first: g / (1 / c) instead of g * c, the same to a rounding. On the CPU that kernel path measured
  slower than the clipping pass, which is kept there.
- **Page faults.** glibc gives freed blocks above its trim threshold back to the system, so the ~0.5 GB of
  gradients freed after each step are faulted in again at the next; during a CPU training `keep_freed_memory`
  raises the trim threshold (and gives the memory back when the training ends).
- **A host sync a step.** Losses stay on the device and are read every `SYNC_EVERY` steps (and before each
  evaluation point): the divergence check and the `on_step` rows then run for the steps read, in order; a
  diverged step raises the same DivergedError, a few steps later, with the trained weights thrown away (restored)
  as before. On CPU the sync is cheap; on a GPU it is what keeps the device busy.

Rows of an untied embedding that no demo touches get a zero gradient at every step; their optimizer state stays
zero and their update is exactly zero (Adam: 0 / (0 + eps); SGD: 0) as long as weight_decay is 0, so the plain
optimizer would leave them untouched too: the fused kernels still stream them (see GD in benchmarks/README.md).

Equal to the plain loop within float tolerance (tests/integration/test_finetune_speed.py): the sums are the same
terms in another order (the unembedding on fewer rows, the embedding rows added into the buffer directly).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from icl_gd.models.forward import pad

IGNORE = -100  # label id cross-entropy skips (finetune.IGNORE)
SYNC_EVERY = 16  # optimizer steps between reads of the losses on the host (divergence check, on_step rows)
# config fields that change the logits after the unembedding: a model with any of them set takes the plain loss
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
FUSED_DEVICES = ("cpu", "cuda")  # device types with fused optimizer kernels
CLIP_INTO_DEVICES = (
    "cuda",
)  # on the CPU the fused kernel's grad_scale path was slower here than a clipping pass
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s: coefficient = max_norm / (total_norm + eps)
# glibc mallopt parameters (malloc.h) and the values used while training on the CPU
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's own ceiling of its dynamic mmap threshold (64-bit)
TRAINING_TRIM_BYTES = 2**31 - 1  # keep freed memory for reuse (mallopt takes an int)
RESTING_TRIM_BYTES = 2 * MMAP_THRESHOLD_BYTES  # glibc's dynamic trim threshold at that mmap threshold


def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextlib.contextmanager
def keep_freed_memory(device: torch.device) -> Iterator[None]:
    """On a CPU with glibc: freed memory stays in the process while training (no page faults for the gradients of
    the next step) and is given back after; elsewhere nothing. glibc's thresholds are fixed from then on (at the
    values its dynamic adjustment reaches for large tensors), which every later job of the process shares."""
    libc = _libc() if device.type == "cpu" else None
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    libc.mallopt(M_TRIM_THRESHOLD, TRAINING_TRIM_BYTES)
    try:
        yield
    finally:
        libc.mallopt(M_TRIM_THRESHOLD, RESTING_TRIM_BYTES)
        libc.malloc_trim(0)


def clip_into(opt: torch.optim.Optimizer, grads: list[Tensor], max_norm: float) -> bool:
    """Clip by the total norm through a fused optimizer's `grad_scale` (no pass over the gradients); False when the
    optimizer is not fused (clip as usual then). Call `opt.step()` next, then `unclip(opt)`."""
    if (
        not grads
        or grads[0].device.type not in CLIP_INTO_DEVICES
        or not all(g.get("fused") for g in opt.param_groups)
    ):
        return False
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    coef = torch.clamp(max_norm / (norm + CLIP_EPS), max=1.0)
    opt.grad_scale = (1.0 / coef).to(torch.float32)
    return True


def unclip(opt: torch.optim.Optimizer) -> None:
    opt.__dict__.pop("grad_scale", None)


def fused_ok(params: list[Tensor]) -> bool:
    """Whether torch's fused optimizer kernels take these tensors (floating point, on a CPU or CUDA device)."""
    return all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)


class GradSink:
    """Gradient buffers of the trained embedding and unembedding weights, kept for the whole training.

    `begin_step` hands the buffers to the weights as their `.grad`; the unembedding's backward overwrites its
    buffer (`torch.mm(out=)`), the embedding's backward adds the token rows into its own (zeroed first unless it is
    the unembedding's, tied, which is written first: the unembedding's backward runs before the embedding's).
    """

    def __init__(self, embed: Tensor | None, head: Tensor | None) -> None:
        self.embed, self.head = embed, head
        self.tied = embed is not None and embed is head
        self.head_buf = torch.empty_like(head) if head is not None else None
        self.embed_buf = (
            self.head_buf if self.tied else (torch.empty_like(embed) if embed is not None else None)
        )

    def begin_step(self) -> None:
        if self.head is not None:
            self.head.grad = self.head_buf
        if self.embed is not None and not self.tied:
            self.embed_buf.zero_()
            self.embed.grad = self.embed_buf


class _Unembed(torch.autograd.Function):
    """logits = hidden @ weight.T; the weight's gradient goes into the sink's buffer (autograd gets None)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, sink: GradSink) -> Tensor:
        ctx.save_for_backward(hidden, weight)
        ctx.sink = sink
        return hidden @ weight.t()

    @staticmethod
    def backward(ctx, grad: Tensor):
        hidden, weight = ctx.saved_tensors
        torch.mm(grad.t(), hidden, out=ctx.sink.head_buf)
        return grad @ weight, None, None


class _EmbedRows(torch.autograd.Function):
    """The embedding lookup; its backward adds each token's gradient row into the sink's buffer in place."""

    @staticmethod
    def forward(ctx, ids: Tensor, weight: Tensor, sink: GradSink, padding_idx: int | None) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.sink, ctx.padding_idx = sink, padding_idx
        return nn.functional.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (ids,) = ctx.saved_tensors
        flat, rows = ids.reshape(-1), grad.reshape(-1, grad.shape[-1])
        if ctx.padding_idx is not None:  # nn.Embedding never trains its padding row
            keep = flat != ctx.padding_idx
            flat, rows = flat[keep], rows[keep]
        buf = ctx.sink.embed_buf
        buf.index_add_(0, flat, rows.to(buf.dtype))
        return None, None, None, None


def _decoder(model) -> nn.Module | None:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    return decoder if decoder is not None and decoder is not model else None


class AnswerLoss:
    """`finetune.answer_loss` with the unembedding at the answer positions only and, for a trained embedding or
    unembedding, their gradients in a `GradSink`. `build` returns None where the model's layout is not the plain
    one (no separate decoder, an unembedding with a bias or a logit transform, an embedding with max_norm...):
    the caller then keeps the plain loss."""

    def __init__(self, decoder: nn.Module, embed: nn.Embedding, head: nn.Linear, sink: GradSink) -> None:
        self.decoder, self.embed, self.head, self.sink = decoder, embed, head, sink

    @classmethod
    def build(cls, model, trained: list[Tensor]) -> AnswerLoss | None:
        decoder = _decoder(model)
        embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        config = getattr(model, "config", None)
        plain_layout = (
            decoder is not None
            and type(embed) is nn.Embedding
            and type(head) is nn.Linear
            and head.bias is None
            and embed.max_norm is None
            and not embed.scale_grad_by_freq
            and not embed.sparse
            and not any(getattr(config, k, None) for k in _LOGIT_TRANSFORMS)
        )
        if not plain_layout:
            return None
        ids = {id(t) for t in trained}
        sink = GradSink(
            embed.weight if id(embed.weight) in ids else None, head.weight if id(head.weight) in ids else None
        )
        return cls(decoder, embed, head, sink)

    def begin_step(self) -> None:
        self.sink.begin_step()

    def __call__(self, batch: list[tuple[list[int], list[int]]], pad_id: int) -> Tensor:
        """Mean cross-entropy over the answer tokens of a batch of demos (the plain loss's value)."""
        device = self.embed.weight.device
        ids, mask = pad([b[0] for b in batch], pad_id, device)
        labels, _ = pad([b[1] for b in batch], IGNORE, device)
        targets = labels[:, 1:]
        keep = targets != IGNORE  # (B, T-1): positions whose next token is an answer token
        if self.sink.embed is not None:
            x = _EmbedRows.apply(ids, self.embed.weight, self.sink, self.embed.padding_idx)
        else:
            x = self.embed(ids)
        hidden = self.decoder(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
        h = hidden[:, :-1][keep.to(hidden.device)].to(self.head.weight.device)  # (answer tokens, H)
        if self.sink.head is not None:
            logits = _Unembed.apply(h, self.head.weight, self.sink)
        else:
            logits = self.head(h)
        return nn.functional.cross_entropy(logits.float(), targets[keep].to(logits.device))
