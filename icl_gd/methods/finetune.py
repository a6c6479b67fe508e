"""Fine-tune on the demonstrations ("ICL-hat"): each demo formatted alone, loss on its answer tokens only.

The model is shared by every job of a process, so training happens in place and the trained parameters are
restored from an in-memory copy afterwards (`restoring`); LoRA adapters are removed with peft's `unload`.
A NaN or exploding loss raises DivergedError after the weights are restored.

This module is GD's public face: the batch and the losses live in demo_loss.py, the loop's shared parts (optimizer,
master weights, schedule, divergence check) in steps.py, the fast step in fast_step.py; their public names are
re-exported here, where callers and tests reach them as finetune.<name>.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from icl_gd.errors import ConfigError, DivergedError
from icl_gd.methods import fast_step
from icl_gd.methods.demo_loss import (
    ALL_TOKENS,
    ANSWER,
    IGNORE,
    LAYER_CAUSAL,
    LOSS_ON,
    Batch,
    answer_loss,
    build_batch,
    decoder_layers,
    evaluate,
    layer_causal_loss,
    mean_demo_layer_losses,
    mean_demo_loss,
    per_layer_losses,
    with_loss_on,
)
from icl_gd.methods.steps import (
    LossRows,
    MasterWeights,
    TrainResult,
    batch_size,
    make_optimizer,
    schedule,
    trainable_only,
)
from icl_gd.models import anatomy

__all__ = [
    "ALL_TOKENS",
    "ANSWER",
    "IGNORE",
    "LAYER_CAUSAL",
    "LOSS_ON",
    "MasterWeights",
    "TrainResult",
    "answer_loss",
    "build_batch",
    "decoder_layers",
    "layer_causal_loss",
    "lora_adapter",
    "make_optimizer",
    "mean_demo_layer_losses",
    "mean_demo_loss",
    "per_layer_losses",
    "restoring",
    "select_parameters",
    "train",
    "with_loss_on",
]


def select_parameters(model, cfg: DictConfig) -> dict[str, nn.Parameter]:
    """The parameters gd trains: all, the key/value projections of every layer, or one layer's value projection."""
    named = dict(model.named_parameters())
    if cfg.params == "all":
        return named
    if cfg.params == "attn_kv":
        chosen = {n: p for n, p in named.items() if any(k in n for k in anatomy.KV_PROJECTIONS)}
    else:  # layer_v
        layers = decoder_layers(model)
        if not -len(layers) <= cfg.layer < len(layers):
            raise ConfigError(
                f"method.layer={cfg.layer} is out of range for a {len(layers)}-layer model: use 0..{len(layers) - 1}."
            )
        idx = cfg.layer % len(layers)
        chosen = {
            f"layer{idx}.{n}": p for n, p in layers[idx].named_parameters() if anatomy.VALUE_PROJECTION in n
        }
    if not chosen:
        raise ConfigError(
            f"method.params={cfg.params} found no k_proj/v_proj parameters in {type(model).__name__} "
            "(it may fuse them, e.g. GPT-2's c_attn): use method.params=all."
        )
    return chosen


@contextlib.contextmanager
def restoring(params: dict[str, nn.Parameter]) -> Iterator[dict[str, torch.Tensor]]:
    """Copy `params` now (yielded) and write the copy back on exit, whatever happens (bit-identical restore)."""
    saved = {n: p.detach().clone() for n, p in params.items()}
    try:
        yield saved
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])
                p.grad = None


@dataclass
class _Stepper:
    """One optimizer step of `train`: the plain loop's (a host read of each loss) or the fast step's (the losses
    kept on the device, read by `rows` in batches). Same numbers to float tolerance."""

    model: nn.Module
    params: dict[str, nn.Parameter]
    cfg: DictConfig
    objective: Callable
    fast_loss: fast_step.AnswerLoss | None
    fast: bool
    master: MasterWeights
    opt: torch.optim.Optimizer
    rows: LossRows

    def _zero_grads(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        for p in self.params.values():
            p.grad = None

    def take(self, chunk: Batch, pad_id: int, step: int, epoch: int) -> None:
        """Forward, backward, clip and step on `chunk`; the loss checked for divergence and recorded in `rows`."""
        if self.fast:
            self._zero_grads()
            if self.fast_loss is not None:
                self.fast_loss.begin_step()  # after the zeroing: the sink's buffers become the .grad
        loss = self.objective(self.model, chunk, pad_id)
        if self.fast:
            self.rows.defer(step, epoch, loss)
        else:
            value = loss.item()
            self.rows.check(step, epoch, value)
            self._zero_grads()
        loss.backward()
        self.master.pull_grads()
        self._clip_and_step()
        self.master.push()
        if not self.fast:
            self.rows.add(step, epoch, value)

    def _clip_and_step(self) -> None:
        clip, clipped = self.cfg.grad_clip, False
        if clip is not None and self.fast:
            grads = [m.grad for m in self.master.trained if m.grad is not None]
            clipped = fast_step.clip_into(self.opt, grads, float(clip))
        if clip is not None and not clipped:
            torch.nn.utils.clip_grad_norm_(self.master.trained, clip, foreach=True if self.fast else None)
        self.opt.step()
        if clipped:
            fast_step.unclip(self.opt)


def _objective(
    model, params: dict[str, nn.Parameter], layer_causal: bool, fast: bool
) -> tuple[Callable, fast_step.AnswerLoss | None]:
    """(the loss `train` steps on, with answer_loss's signature; the fast step's AnswerLoss or None)."""
    if layer_causal:
        return layer_causal_loss, None
    if not fast:
        return answer_loss, None
    fast_loss = fast_step.AnswerLoss.build(model, list(params.values()))
    if fast_loss is None:
        return answer_loss, None
    return (lambda m, b, pad_id: fast_loss(b, pad_id)), fast_loss


def _drop_sink_grads(model, fast_loss: fast_step.AnswerLoss) -> None:
    """The fast step's gradient buffers are not the model's to keep."""
    for p in model.parameters():
        if p is fast_loss.sink.head or p is fast_loss.sink.embed:
            p.grad = None


def train(
    model,
    tokenizer,
    batch: Batch,
    params: dict[str, nn.Parameter],
    cfg: DictConfig,
    seed: int,
    on_step: Callable[[dict[str, float]], None] | None = None,
    steps: int | None = None,
    on_eval: Callable[[int], None] | None = None,
    eval_at: Collection[int] = (),
    fast: bool | None = None,
) -> TrainResult:
    """Train `params` in place on the demos (in their given order when batch_size < n). Caller restores them.

    cfg.layer_causal (default false): train on `layer_causal_loss` instead of `answer_loss`; initial_loss,
    final_loss and the curve are then that summed objective, and the *_answer_loss fields the ordinary answer loss.
    steps: train exactly that many optimizer steps (cycling through the demos) instead of cfg.epochs epochs.
    on_eval(s): called, in eval mode, after s optimizer steps for each s in eval_at (s = 0: before the first), so
    one training gives the model at every step of a trajectory.
    fast (default cfg.fast_step, else true): the step of methods/fast_step.py (answer-position logits, in-place
    embedding gradients, a fused optimizer, batched host reads); false: the plain loop. Same numbers to float
    tolerance.
    """
    from icl_gd.progress import step_progress  # noqa: PLC0415 -- a bar over the steps, loss in it

    layer_causal = bool(cfg.get("layer_causal", False))
    fast = bool(cfg.get("fast_step", True)) if fast is None else fast
    torch.manual_seed(seed)
    pad_id = tokenizer.pad_token_id
    result = TrainResult(
        n_trainable=sum(p.numel() for p in params.values()),
        loss_kind=LAYER_CAUSAL if layer_causal else ANSWER,
    )
    with contextlib.ExitStack() as stack:  # unwinds: freed memory, eval mode, sink grads, requires_grad flags
        stack.enter_context(trainable_only(model, params))
        master = MasterWeights(params)
        opt = make_optimizer(master.trained, cfg, fused=fast)
        objective, fast_loss = _objective(model, params, layer_causal, fast)
        if fast_loss is not None:
            stack.callback(_drop_sink_grads, model, fast_loss)
        stack.callback(model.eval)
        if fast:
            stack.enter_context(fast_step.keep_freed_memory(next(iter(params.values())).device))
        rows = LossRows(result, cfg, on_step)
        stepper = _Stepper(model, params, cfg, objective, fast_loss, fast, master, opt, rows)
        eval_loss = objective if fast_loss is not None else None
        result.initial_loss, result.initial_answer_loss, result.initial_layer_losses = evaluate(
            model, batch, pad_id, layer_causal, eval_loss
        )
        wanted = set(eval_at)
        if 0 in wanted and on_eval:
            on_eval(0)
        model.train()
        bs = batch_size(cfg, len(batch))
        epochs = int(cfg.epochs) if steps is None else 0
        rows.on_step = step_progress(rows.on_step, steps or epochs * math.ceil(len(batch) / bs))
        for step, epoch, start in schedule(len(batch), bs, epochs, steps):
            stepper.take(batch[start : start + bs], pad_id, step, epoch)
            if fast and (len(rows.pending) >= fast_step.SYNC_EVERY or step + 1 in wanted):
                rows.flush()
            if step + 1 in wanted and on_eval:
                model.eval()
                on_eval(step + 1)
                model.train()
        rows.flush()
        model.eval()
        result.final_loss, result.final_answer_loss, result.final_layer_losses = evaluate(
            model, batch, pad_id, layer_causal, eval_loss
        )
        if not math.isfinite(result.final_loss):
            raise DivergedError(
                f"training ended with a non-finite loss ({result.final_loss}): lower method.lr={cfg.lr}."
            )
    return result


@contextlib.contextmanager
def lora_adapter(model, cfg: DictConfig) -> Iterator[tuple[object, dict[str, nn.Parameter]]]:
    """Wrap `model` with a fresh LoRA adapter; yields (peft model, adapter params); removes the adapter on exit."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    available = anatomy.linear_module_names(model)
    missing = [t for t in cfg.target_modules if t not in available]
    if missing:
        raise ConfigError(
            f"method.target_modules {missing} are not modules of this model; choose from {available}."
        )
    config = LoraConfig(
        r=int(cfg.r),
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
    )
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}  # peft freezes the base weights
    peft_model = get_peft_model(model, config)
    try:
        params = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
        yield peft_model, params
    finally:
        peft_model.unload()  # removes the LoRA layers without merging: the base weights were never changed
        for n, p in model.named_parameters():  # ... and leaves them frozen: the model is shared by later jobs
            p.requires_grad_(trainable.get(n, p.requires_grad))
