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


# ---------------------------------------------------------------------------------------------------------
# LMOps-style captures (microsoft/LMOps understand_icl): pre-softmax scores and query vectors

# transformers looks the eager attention up by this name in ALL_ATTENTION_FUNCTIONS and, finding none, calls the
# modelling file's own `eager_attention_forward`; `_scores_recorded` puts a recording wrapper under the name for
# the duration of a capture and takes it out afterwards.
EAGER_FUNCTION = "eager_attention_forward"


@dataclass
class ScoreCapture:
    """Per-layer captures at each sequence's last real token, as LMOps's fairseq fork records them.

    scores are the scaled q·kᵀ before the mask and the softmax (fairseq's `record_attn_map`); query is the scaled
    query vector of every head, concatenated (fairseq's `q`, recorded after `q *= scaling`): the q_proj output
    (before any rotary embedding, as fairseq's GPT, whose positions are in the hidden state), where the attention
    module has a q_proj, else None.
    """

    attn_out: list[Tensor]  # per layer (B, hidden) float32
    scores: list[Tensor]  # per layer (B, heads, T_max) float32: zero on padding
    query: list[Tensor] | None  # per layer (B, heads * head_dim) float32
    logits_last: Tensor  # (B, V) float32


def _scaling(module: nn.Module) -> float:
    """The attention's score scaling (1/sqrt(head_dim) unless the module says otherwise)."""
    scaling = getattr(module, "scaling", None)
    if scaling is None:
        head_dim = getattr(module, "head_dim", None) or getattr(module, "head_size", None)
        if head_dim is None:
            raise ValueError(f"{type(module).__name__} has neither `scaling` nor `head_dim`.")
        scaling = float(head_dim) ** -0.5
    return float(scaling)


class _ScoreRecorder:
    """The scaled pre-softmax scores of one attention module at each sequence's last real position."""

    def __init__(self) -> None:
        self.last: Tensor | None = None
        self.scores: list[Tensor] = []  # per batch (B, heads, T_batch)

    def record(self, query: Tensor, key: Tensor, scaling: float) -> None:
        """query (B, heads, T, d) and key (B, kv_heads, T, d) as the attention function receives them."""
        rows = torch.arange(query.shape[0], device=query.device)
        last = self.last.to(query.device)
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)  # grouped-query attention
        q = query[rows, :, last]  # (B, heads, d)
        s = torch.einsum("bhd,bhtd->bht", q.float(), key.float()) * scaling
        positions = torch.arange(s.shape[-1], device=s.device)
        s = s.masked_fill(positions[None, None, :] > last[:, None, None], 0.0)  # padding (and the future)
        self.scores.append(s.cpu())


class _QueryRecorder:
    """A forward hook on a q_proj: the scaled query vectors at each sequence's last real position."""

    def __init__(self, scaling: float) -> None:
        self.scaling = scaling
        self.last: Tensor | None = None
        self.out: list[Tensor] = []  # per batch (B, q_dim)

    def __call__(self, module: nn.Module, args, output: Tensor) -> None:
        rows = torch.arange(output.shape[0], device=output.device)
        self.out.append((output[rows, self.last.to(output.device)].float() * self.scaling).cpu())


def q_projection(attention: nn.Module) -> nn.Module | None:
    """The attention module's query projection (Llama-family `q_proj`), or None where q, k, v are fused."""
    proj = getattr(attention, "q_proj", None)
    return proj if isinstance(proj, nn.Module) else None


@contextlib.contextmanager
def _scores_recorded(recorders: dict[int, _ScoreRecorder]) -> Iterator[None]:
    """Eager attention of the modules in `recorders` (by id) records its scores; other modules run as usual."""
    import sys  # noqa: PLC0415

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # noqa: PLC0415

    def eager(
        module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask, scaling=None, **kw
    ):
        own = getattr(sys.modules[type(module).__module__], EAGER_FUNCTION)
        rec = recorders.get(id(module))
        if rec is not None:
            rec.record(query, key, _scaling(module) if scaling is None else float(scaling))
        if scaling is not None:  # passed on only where the model passed it (GPT-2's eager takes none)
            kw["scaling"] = scaling
        return own(module, query, key, value, attention_mask, **kw)

    had = EAGER in ALL_ATTENTION_FUNCTIONS._local_mapping
    previous = ALL_ATTENTION_FUNCTIONS._local_mapping.get(EAGER)
    ALL_ATTENTION_FUNCTIONS[EAGER] = eager
    try:
        yield
    finally:
        if had:
            ALL_ATTENTION_FUNCTIONS[EAGER] = previous
        else:
            del ALL_ATTENTION_FUNCTIONS[EAGER]


@torch.no_grad()
def capture_scores(model, seqs: list[list[int]], pad_id: int, batch_size: int) -> ScoreCapture:
    """Attention outputs, pre-softmax scores and query vectors of every layer, and the logits, at each sequence's
    last real token (LMOps reads them at the label token appended to the prompt: put it last in each sequence).

    Runs eager attention (the only one whose scores can be read) and restores the model's implementation.
    """
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("capture_scores: every sequence needs at least one token.")
    modules = [attention_module(layer) for layer in decoder_layers(model)]
    outs = [_Recorder(maps=False) for _ in modules]
    scores = {id(m): _ScoreRecorder() for m in modules}
    projections = [q_projection(m) for m in modules]
    queries = (
        [_QueryRecorder(_scaling(m)) for m in modules] if all(p is not None for p in projections) else None
    )
    handles = []
    logits = []
    try:
        for i, module in enumerate(modules):
            handles.append(module.register_forward_hook(outs[i]))
            if queries is not None:
                handles.append(projections[i].register_forward_hook(queries[i]))
        with attention_implementation(model, EAGER), _scores_recorded(scores), eval_mode(model):
            for start in range(0, len(seqs), batch_size):
                batch = seqs[start : start + batch_size]
                last = torch.tensor([len(s) - 1 for s in batch])
                for rec in [*outs, *scores.values(), *(queries or [])]:
                    rec.last = last
                logits.append(logits_at(model, batch, last[:, None], pad_id)[:, 0].cpu())
    finally:
        for handle in handles:
            handle.remove()
    width = max(len(s) for s in seqs)
    if any(len(scores[id(m)].scores) != len(logits) for m in modules):
        raise RuntimeError(
            f"{type(modules[0]).__name__} did not call transformers' eager attention function: its pre-softmax "
            "scores cannot be read."
        )
    return ScoreCapture(
        attn_out=[torch.cat(rec.out) for rec in outs],
        scores=[_pad_right(scores[id(m)].scores, width) for m in modules],
        query=[torch.cat(rec.out) for rec in queries] if queries is not None else None,
        logits_last=torch.cat(logits).float(),
    )


class TrainingQueries:
    """Records, during fine-tuning, the scaled query vectors of every token of every training forward pass, per
    layer (LMOps's `fs_ft` criterion records `attn_q` of each training example as the model sees it at its step).

    Only forward passes in training mode with gradients on are kept (the loss evaluations before and after
    training run in eval mode without gradients). Use as a context manager around the training; `per_demo`
    then splits the records into the demos of the first epoch, in the order they were trained on.
    """

    def __init__(self, model) -> None:
        modules = [attention_module(layer) for layer in decoder_layers(model)]
        projections = [q_projection(m) for m in modules]
        self.available = all(p is not None for p in projections)
        self._targets = (
            list(zip(projections, [_scaling(m) for m in modules], strict=True)) if self.available else []
        )
        self.calls: list[list[Tensor]] = [[] for _ in self._targets]  # per layer, per forward (B, T, q_dim)
        self._handles: list = []

    def _hook(self, layer: int, scaling: float):
        def hook(module: nn.Module, args, output: Tensor) -> None:
            if module.training and torch.is_grad_enabled():
                self.calls[layer].append((output.detach().float() * scaling).cpu())

        return hook

    def __enter__(self) -> TrainingQueries:
        for layer, (proj, scaling) in enumerate(self._targets):
            self._handles.append(proj.register_forward_hook(self._hook(layer, scaling)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def per_demo(self, lengths: list[int]) -> list[list[Tensor]] | None:
        """Per demo (in training order), per layer, its (length, q_dim) query vectors; None when not recorded.

        lengths: each demo's token count, in training order; the rows of each recorded (B, T, q_dim) batch are
        taken as the next B demos (right-padded to T).
        """
        if not self.available or not self.calls or not self.calls[0]:
            return None
        demos: list[list[Tensor]] = []
        per_layer_rows = [[row for call in calls for row in call] for calls in self.calls]
        if len(per_layer_rows[0]) < len(lengths):
            return None
        for i, n in enumerate(lengths):
            demos.append([rows[i][:n] for rows in per_layer_rows])
        return demos
