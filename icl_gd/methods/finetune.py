"""Fine-tune on the demonstrations ("ICL-hat"): each demo formatted alone, loss on its answer tokens only.

The model is shared by every job of a process, so training happens in place and the trained parameters are
restored from an in-memory copy afterwards (`restoring`); LoRA adapters are removed with peft's `unload`.
A NaN or exploding loss raises DivergedError after the weights are restored.

Layer-causal GD (Deutch et al., `method.layer_causal`): every decoder layer's input is detached and every layer's
output is read out through the final norm and the unembedding, so layer l is trained only on its own answer loss and
no gradient reaches a layer from the layers above it, as in ICL, where a layer's state depends only on layers below.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn

from icl_gd.errors import ConfigError, DivergedError
from icl_gd.methods import fast_step
from icl_gd.models import anatomy
from icl_gd.models.forward import continuation_ids, encode, pad

IGNORE = -100  # label id that cross-entropy skips: prompt and padding tokens carry no loss
ANSWER = "answer"  # TrainResult.loss_kind of ordinary GD: the answer-token loss at the model's output
LAYER_CAUSAL = "layer_causal_sum"  # layer-causal GD: the sum over layers of each layer's own answer loss


@dataclass
class TrainResult:
    curve: list[dict[str, float]] = field(default_factory=list)  # one row per optimizer step, in loss_kind
    initial_loss: float = math.nan  # mean per-demo training objective (loss_kind) before training
    final_loss: float = math.nan  # the same after training
    n_trainable: int = 0
    loss_kind: str = ANSWER  # what initial_loss, final_loss and the curve measure
    initial_answer_loss: float = math.nan  # mean per-demo answer loss before training, whatever loss_kind
    final_answer_loss: float = math.nan  # the same after training: comparable between GD and layer-causal GD
    initial_layer_losses: list[float] = field(default_factory=list)  # layer-causal: per-layer, per-demo mean
    final_layer_losses: list[float] = field(default_factory=list)


def build_batch(
    tokenizer, prompts: list[str], answers: list[str], add_bos: bool | None
) -> list[tuple[list[int], list[int]]]:
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


def with_loss_on(batch: list[tuple[list[int], list[int]]], loss_on: str) -> list[tuple[list[int], list[int]]]:
    """The batch with its labels for `loss_on`: unchanged for answer; for all, every token is a target (the first
    token has no prediction before it, so it carries no loss either way)."""
    if loss_on == ANSWER:
        return batch
    if loss_on != ALL_TOKENS:
        raise ConfigError(f"method.loss_on={loss_on!r} is not allowed; choose one of: {', '.join(LOSS_ON)}.")
    return [(ids, list(ids)) for ids, _ in batch]


def answer_loss(model, batch: list[tuple[list[int], list[int]]], pad_id: int) -> torch.Tensor:
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


def per_layer_losses(
    model, batch: list[tuple[list[int], list[int]]], pad_id: int, detach_inputs: bool = True
) -> list[torch.Tensor]:
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


def layer_causal_loss(model, batch: list[tuple[list[int], list[int]]], pad_id: int) -> torch.Tensor:
    """The layer-causal GD objective: the sum over decoder layers of each layer's own answer loss."""
    return torch.stack(per_layer_losses(model, batch, pad_id)).sum()


def decoder_layers(model) -> nn.ModuleList:
    """The decoder layers (Llama, GPT-2, GPT-NeoX, or a peft model around one), or a ConfigError saying what to use."""
    try:
        return anatomy.decoder_layers(model)
    except ValueError as e:
        raise ConfigError(f"{e} Use method.params=all.") from None


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


HALF = (torch.float16, torch.bfloat16)


class MasterWeights:
    """float32 master copies of half-precision trained parameters: the optimizer steps the masters, the model gets
    them rounded after each step. A bf16 weight moves only by >= half its ulp (2^-9 of its size), so an update of
    1e-3 of a weight is rounded away every step without them; the masters keep it, and the sum of small steps
    reaches the model. float32 parameters are stepped directly (`trained` is then the parameters themselves).
    """

    def __init__(self, params: dict[str, nn.Parameter]) -> None:
        self.params = list(params.values())
        self.masters = [
            p.detach().float().clone().requires_grad_(True) if p.dtype in HALF else p for p in self.params
        ]

    @property
    def trained(self) -> list[torch.Tensor]:
        """What the optimizer steps."""
        return self.masters

    def pull_grads(self) -> None:
        """The model's gradients onto the masters, in float32 (the model's own are cleared: no accumulation)."""
        for p, m in zip(self.params, self.masters, strict=True):
            if m is not p:
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None

    @torch.no_grad()
    def push(self) -> None:
        """The masters' values into the model's parameters (rounded to their dtype)."""
        for p, m in zip(self.params, self.masters, strict=True):
            if m is not p:
                p.copy_(m)


def make_optimizer(params: list[torch.Tensor], cfg: DictConfig, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer of cfg.optimizer; `fused`: torch's fused kernel (the same update, one pass over all tensors)."""
    kw = {"fused": True} if fused and fast_step.fused_ok(params) else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **kw)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)


@torch.no_grad()
def mean_demo_loss(
    model, batch: list[tuple[list[int], list[int]]], pad_id: int, loss: Callable | None = None
) -> float:
    """Mean per-demo answer loss (each demo weighted equally), in eval mode; `loss` (default `answer_loss`) may be
    the fast step's (the same value, unembedding the answer positions only)."""
    loss = loss or answer_loss
    return float(
        sum(torch.stack([loss(model, [b], pad_id) for b in batch]).tolist()) / len(batch)
    )  # one sync


@torch.no_grad()
def mean_demo_layer_losses(model, batch: list[tuple[list[int], list[int]]], pad_id: int) -> list[float]:
    """Mean per-demo loss of each decoder layer (each demo weighted equally), in eval mode."""
    per_demo = torch.tensor([[x.item() for x in per_layer_losses(model, [b], pad_id)] for b in batch])
    return per_demo.double().mean(0).tolist()


def _evaluate(
    model, batch, pad_id: int, layer_causal: bool, loss: Callable | None = None
) -> tuple[float, float, list[float]]:
    """(training objective, answer loss, per-layer losses or []) of the model on the demos, each a per-demo mean."""
    answer = mean_demo_loss(model, batch, pad_id, loss if not layer_causal else None)
    if not layer_causal:
        return answer, answer, []
    layers = mean_demo_layer_losses(model, batch, pad_id)
    return math.fsum(layers), answer, layers


def _diverged(value: float, initial: float, cfg: DictConfig) -> bool:
    return not math.isfinite(value) or value > cfg.explode_factor * max(initial, 1e-8)


def _diverged_error(step: int, value: float, initial: float, cfg: DictConfig) -> DivergedError:
    return DivergedError(
        f"training loss diverged at step {step} (loss={value}, first loss={initial:.4g}): "
        f"lower method.lr={cfg.lr} or set method.grad_clip."
    )


class _Rows:
    """The losses of the steps taken, read on the host in batches: the divergence check and the on_step rows.

    The plain step reads each loss at once (`.item()`, a host sync a step); the fast step keeps them on the device
    and `flush`es every fast_step.SYNC_EVERY steps and before each evaluation point, checking and reporting them
    in step order, so a diverged step raises the same error a few steps later (and no evaluation sees it).
    """

    def __init__(
        self, result: TrainResult, cfg: DictConfig, on_step: Callable[[dict[str, float]], None] | None
    ):
        self.result, self.cfg, self.on_step = result, cfg, on_step
        self.pending: list[tuple[int, int, torch.Tensor]] = []

    def check(self, step: int, epoch: int, value: float) -> None:
        if _diverged(value, self.result.initial_loss, self.cfg):
            raise _diverged_error(step, value, self.result.initial_loss, self.cfg)

    def add(self, step: int, epoch: int, value: float) -> None:
        row = {"step": step, "epoch": epoch, "train_loss": value}
        self.result.curve.append(row)
        if self.on_step:
            self.on_step(row)

    def defer(self, step: int, epoch: int, loss: torch.Tensor) -> None:
        self.pending.append((step, epoch, loss.detach()))

    def flush(self) -> None:
        if not self.pending:
            return
        values = torch.stack([x[2].float() for x in self.pending]).tolist()  # one host sync for them all
        pending, self.pending = self.pending, []
        for (step, epoch, _), value in zip(pending, values, strict=True):
            self.check(step, epoch, value)
            self.add(step, epoch, value)


def train(
    model,
    tokenizer,
    batch: list[tuple[list[int], list[int]]],
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
    layer_causal = bool(cfg.get("layer_causal", False))
    fast = bool(cfg.get("fast_step", True)) if fast is None else fast
    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id
    all_params = list(model.parameters())
    frozen = [p.requires_grad for p in all_params]
    for p in all_params:
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    result = TrainResult(
        n_trainable=sum(p.numel() for p in params.values()),
        loss_kind=LAYER_CAUSAL if layer_causal else ANSWER,
    )
    master = MasterWeights(params)
    opt = make_optimizer(master.trained, cfg, fused=fast)
    fast_loss = (
        fast_step.AnswerLoss.build(model, list(params.values())) if fast and not layer_causal else None
    )
    if layer_causal:
        objective = layer_causal_loss
    elif fast_loss is not None:
        objective = lambda m, b, pad_id: fast_loss(b, pad_id)  # noqa: E731 -- the same signature as answer_loss
    else:
        objective = answer_loss
    bs = len(batch) if cfg.batch_size == "all" else int(cfg.batch_size)
    rows = _Rows(result, cfg, on_step)
    memory = contextlib.ExitStack()
    if fast:
        memory.enter_context(fast_step.keep_freed_memory(next(iter(params.values())).device))
    try:
        result.initial_loss, result.initial_answer_loss, result.initial_layer_losses = _evaluate(
            model, batch, pad, layer_causal, objective if fast_loss is not None else None
        )
        wanted = set(eval_at)
        if 0 in wanted and on_eval:
            on_eval(0)
        model.train()
        step = 0
        per_epoch = math.ceil(len(batch) / bs)
        epochs = int(cfg.epochs) if steps is None else math.ceil(steps / per_epoch)
        from icl_gd.progress import step_progress  # noqa: PLC0415 -- a bar over the steps, loss in it

        rows.on_step = step_progress(rows.on_step, steps if steps is not None else epochs * per_epoch)
        for epoch in range(epochs):
            for start in range(0, len(batch), bs):
                if steps is not None and step >= steps:
                    break
                if fast:
                    opt.zero_grad(set_to_none=True)
                    for p in params.values():
                        p.grad = None
                    if fast_loss is not None:
                        fast_loss.begin_step()  # after the zeroing: the sink's buffers become the .grad
                loss = objective(model, batch[start : start + bs], pad)
                if fast:
                    rows.defer(step, epoch, loss)
                else:
                    value = loss.item()
                    rows.check(step, epoch, value)
                    opt.zero_grad(set_to_none=True)
                    for p in params.values():
                        p.grad = None
                loss.backward()
                master.pull_grads()
                clipped = False
                if cfg.grad_clip is not None and fast:
                    grads = [m.grad for m in master.trained if m.grad is not None]
                    clipped = fast_step.clip_into(opt, grads, float(cfg.grad_clip))
                if cfg.grad_clip is not None and not clipped:
                    torch.nn.utils.clip_grad_norm_(
                        master.trained, cfg.grad_clip, foreach=True if fast else None
                    )
                opt.step()
                if clipped:
                    fast_step.unclip(opt)
                master.push()
                if not fast:
                    rows.add(step, epoch, value)
                step += 1
                if fast and (len(rows.pending) >= fast_step.SYNC_EVERY or step in wanted):
                    rows.flush()
                if step in wanted and on_eval:
                    model.eval()
                    on_eval(step)
                    model.train()
        rows.flush()
        model.eval()
        result.final_loss, result.final_answer_loss, result.final_layer_losses = _evaluate(
            model, batch, pad, layer_causal, objective if fast_loss is not None else None
        )
        if not math.isfinite(result.final_loss):
            raise DivergedError(
                f"training ended with a non-finite loss ({result.final_loss}): lower method.lr={cfg.lr}."
            )
    finally:
        memory.close()
        model.eval()
        for p, f in zip(all_params, frozen, strict=True):
            p.requires_grad_(f)
            if fast_loss is not None and (p is fast_loss.sink.head or p is fast_loss.sink.embed):
                p.grad = None  # the sink's buffers are not the model's to keep
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
