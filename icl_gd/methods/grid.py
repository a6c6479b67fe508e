"""Many GD settings in one pass: a grid of settings (learning rates, optimizers) of one small parameter set, trained
together on stacked copies of the trained weights, one batch for all of them.

The settings share what is trained (linear-layer weights: params=attn_kv or layer_v), the demos, the steps and the
batching; each has its own optimizer (optimizer, lr, momentum, weight decay of its config). The G settings' batches
are stacked (G x B sequences) and every trained linear layer multiplies setting g's rows by setting g's copy of its
weight (one batched matmul), so one forward and one backward serve the whole grid: the frozen weights are read
once for all settings instead of once per setting, and the per-op overhead is paid once. The loss is the sum of
the settings' own losses (each the mean over its own answer tokens), so each copy gets exactly its own setting's
gradient; clipping, the optimizer step and the divergence check are per setting. A setting that diverges stops
(its copy is no longer stepped) and is reported, the others go on: what `finetune.train` one by one gives, to
float rounding (tests/integration/test_finetune_speed.py).

Where it pays: small parameter sets, where a step's cost is the frozen model's forward and backward. For
params=all the copies would be G models: `train_grid` refuses it (train the settings one by one).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from icl_gd.errors import ConfigError, DivergedError
from icl_gd.methods import fast_step, finetune
from icl_gd.methods.steps import batch_size, diverged, diverged_error, schedule, trainable_only
from icl_gd.models.forward import pad

SHARED_KEYS = ("params", "layer", "batch_size", "epochs", "grad_clip")  # equal in every setting


@dataclass
class GridResult:
    """Per setting, in the order given: its TrainResult, its trained weights (name -> tensor), whether it diverged."""

    results: list[finetune.TrainResult] = field(default_factory=list)
    trained: list[dict[str, Tensor]] = field(default_factory=list)
    diverged: list[str | None] = field(default_factory=list)  # the DivergedError's message, or None


class _Stacked:
    """The trained linear layers' G weight copies, and the batched forward that uses them."""

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], n: int) -> None:
        by_id = {id(p): name for name, p in params.items()}
        self.modules: list[tuple[nn.Linear, str | None, str | None]] = []  # (module, weight name, bias name)
        found = set()
        for module in model.modules():
            if not isinstance(module, nn.Linear):
                continue
            w = by_id.get(id(module.weight))
            b = by_id.get(id(module.bias)) if module.bias is not None else None
            if w is None and b is None:
                continue
            self.modules.append((module, w, b))
            found.update(x for x in (w, b) if x is not None)
        missing = sorted(set(params) - found)
        if missing:
            raise ConfigError(
                f"a GD grid trains copies of linear-layer weights only; {missing[:3]} are not: train these "
                "settings one by one (method.params=attn_kv or layer_v can be trained as a grid)."
            )
        self.n = n
        self.copies: list[dict[str, Tensor]] = [
            {name: p.detach().clone().requires_grad_(True) for name, p in params.items()} for _ in range(n)
        ]
        self.active = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The batched forward on the trained linear layers (for the grid's own passes only)."""
        for module, w, b in self.modules:
            module.forward = self._forward(module, w, b)  # instance attribute: shadows the class's forward
        try:
            yield
        finally:
            for module, _, _ in self.modules:
                del module.forward

    def _forward(self, module: nn.Linear, w: str | None, b: str | None) -> Callable[[Tensor], Tensor]:
        def forward(x: Tensor) -> Tensor:
            weight = torch.stack([c[w] for c in self.copies]) if w else module.weight.expand(self.n, -1, -1)
            shape = x.shape
            xg = x.reshape(self.n, -1, shape[-1])  # (G, B*T, in): setting g's rows are the g-th block
            out = torch.bmm(xg, weight.transpose(1, 2))
            if b or module.bias is not None:
                bias = torch.stack([c[b] for c in self.copies]) if b else module.bias.expand(self.n, -1)
                out = out + bias[:, None, :]
            return out.reshape(*shape[:-1], out.shape[-1])

        return forward

    @torch.no_grad()
    def load(self, params: dict[str, nn.Parameter], g: int) -> None:
        """Setting g's weights into the model's own parameters (for an evaluation in the ordinary forward)."""
        for name, p in params.items():
            p.copy_(self.copies[g][name])


def _per_setting_losses(
    model, stacked: _Stacked, batch: list[tuple[list[int], list[int]]], pad_id: int, per_demo: bool
) -> Tensor:
    """(G,) each setting's mean answer-token loss on `batch`, or (G, B) each demo's own, in one batched pass."""
    n, b = stacked.n, len(batch)
    device = next(model.parameters()).device
    ids, mask = pad([x[0] for x in batch] * n, pad_id, device)
    labels, _ = pad([x[1] for x in batch] * n, finetune.IGNORE, device)
    targets = labels[:, 1:]
    keep = targets != finetune.IGNORE
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    h = hidden[:, :-1][keep]
    ce = nn.functional.cross_entropy(head(h).float(), targets[keep], reduction="none")  # (answer tokens,)
    seq = torch.arange(n * b, device=device)[:, None].expand_as(keep)[keep]  # the sequence of each token
    group = seq if per_demo else seq // b
    size = n * b if per_demo else n
    sums = torch.zeros(size, device=device).index_add_(0, group, ce)
    counts = torch.zeros(size, device=device).index_add_(0, group, torch.ones_like(ce))
    out = sums / counts
    return out.view(n, b) if per_demo else out


def _check_shared(cfgs: list[DictConfig]) -> None:
    """A ConfigError unless the settings agree on SHARED_KEYS and none is layer-causal."""
    for key in SHARED_KEYS:
        values = {str(c.get(key)) for c in cfgs}
        if len(values) > 1:
            raise ConfigError(f"a GD grid trains settings that share {key}; got {sorted(values)}.")
    if any(c.get("layer_causal") for c in cfgs):
        raise ConfigError("a GD grid does not train layer-causal GD: train these settings one by one.")


class _GridRun:
    """One grid training's state: the stacked copies and their optimizers, the losses not yet read on the host, and
    the result being filled in (a setting that diverges is marked and no longer stepped)."""

    def __init__(
        self,
        model,
        params: dict[str, nn.Parameter],
        cfgs: list[DictConfig],
        pad_id: int,
        on_eval: Callable[[int, int], None] | None,
    ) -> None:
        self.model, self.params, self.cfgs, self.pad_id, self.on_eval = model, params, cfgs, pad_id, on_eval
        self.n = len(cfgs)
        self.stacked = _Stacked(model, params, self.n)
        self.opts = [
            finetune.make_optimizer(list(self.stacked.copies[g].values()), c, fused=True)
            for g, c in enumerate(cfgs)
        ]
        n_trainable = sum(p.numel() for p in params.values())
        self.out = GridResult(
            results=[finetune.TrainResult(n_trainable=n_trainable) for _ in cfgs], diverged=[None] * self.n
        )
        self.pending: list[tuple[int, int, Tensor]] = []
        self.initial = math.nan

    def begin(self, batch: list[tuple[list[int], list[int]]]) -> None:
        """The untrained model's mean per-demo loss: every setting's initial loss and divergence reference."""
        self.initial = finetune.mean_demo_loss(self.model, batch, self.pad_id)
        for r in self.out.results:
            r.initial_loss = r.initial_answer_loss = self.initial

    def active(self) -> list[int]:
        return [g for g in range(self.n) if self.out.diverged[g] is None]

    def flush(self) -> None:
        """The pending losses read in one host sync: each live setting's divergence check and curve rows."""
        if not self.pending:
            return
        values = torch.stack([x[2] for x in self.pending]).tolist()  # one host read: (steps, G)
        for (step, epoch, _), row in zip(self.pending, values, strict=True):
            for g in self.active():
                if diverged(row[g], self.initial, self.cfgs[g]):
                    self.out.diverged[g] = str(diverged_error(step, row[g], self.initial, self.cfgs[g]))
                    continue
                self.out.results[g].curve.append({"step": step, "epoch": epoch, "train_loss": row[g]})
        self.pending.clear()

    def evaluate(self, step: int) -> None:
        """on_eval(step, g) for each live setting, its weights loaded, in eval mode."""
        self.flush()
        if not self.on_eval:
            return
        self.model.eval()
        for g in self.active():
            self.stacked.load(self.params, g)
            self.on_eval(step, g)

    def take(self, chunk: list[tuple[list[int], list[int]]], step: int, epoch: int) -> None:
        """One optimizer step of every live setting on `chunk`: one batched forward and backward."""
        self.model.train()
        for o in self.opts:
            o.zero_grad(set_to_none=True)
        with self.stacked.installed():
            losses = _per_setting_losses(self.model, self.stacked, chunk, self.pad_id, False)
        live = self.active()
        mask = torch.zeros(self.n, device=losses.device)
        mask[live] = 1.0
        (losses * mask).sum().backward()  # each copy: its own setting's gradient
        self.pending.append((step, epoch, losses.detach()))
        clip = self.cfgs[0].grad_clip
        for g in live:
            copies = list(self.stacked.copies[g].values())
            grads = [p.grad for p in copies if p.grad is not None]
            clipped = clip is not None and fast_step.clip_into(self.opts[g], grads, float(clip))
            if clip is not None and not clipped:  # clip_grad_norm_ takes the tensors
                torch.nn.utils.clip_grad_norm_(copies, clip, foreach=True)
            self.opts[g].step()
            fast_step.unclip(self.opts[g])

    def finish(self, batch: list[tuple[list[int], list[int]]]) -> GridResult:
        """Each setting's final mean per-demo loss (NaN where it diverged) and its trained weights."""
        self.flush()
        self.model.eval()
        with torch.no_grad(), self.stacked.installed():
            final = _per_setting_losses(self.model, self.stacked, batch, self.pad_id, True).double().mean(1)
        for g, (r, value) in enumerate(zip(self.out.results, final.tolist(), strict=True)):
            r.final_loss = r.final_answer_loss = value if self.out.diverged[g] is None else math.nan
            if self.out.diverged[g] is None and not math.isfinite(value):
                self.out.diverged[g] = str(
                    DivergedError(
                        f"training ended with a non-finite loss ({value}): lower method.lr={self.cfgs[g].lr}."
                    )
                )
        self.out.trained = [{k: v.detach() for k, v in c.items()} for c in self.stacked.copies]
        return self.out


def train_grid(
    model,
    tokenizer,
    batch: list[tuple[list[int], list[int]]],
    params: dict[str, nn.Parameter],
    cfgs: list[DictConfig],
    seed: int,
    steps: int | None = None,
    on_eval: Callable[[int, int], None] | None = None,
    eval_at: Collection[int] = (),
) -> GridResult:
    """Train every setting of `cfgs` on the demos, together; the model's own parameters are left as they were
    except where on_eval(step, g) (called in eval mode, setting g's weights loaded) needs them: the caller restores
    them (`finetune.restoring`) as for `finetune.train`. Settings must agree on SHARED_KEYS."""
    _check_shared(cfgs)
    torch.manual_seed(seed)
    bs = batch_size(cfgs[0], len(batch))
    wanted = set(eval_at)
    with trainable_only(model, {}):  # only the copies are trained
        try:
            run = _GridRun(model, params, cfgs, tokenizer.pad_token_id, on_eval)
            run.begin(batch)
            with fast_step.keep_freed_memory(device=next(iter(params.values())).device):
                if 0 in wanted:
                    run.evaluate(0)
                epochs = int(cfgs[0].epochs) if steps is None else 0
                for step, epoch, start in schedule(len(batch), bs, epochs, steps):
                    if not run.active():
                        break
                    run.take(batch[start : start + bs], step, epoch)
                    if len(run.pending) >= fast_step.SYNC_EVERY or step + 1 in wanted:
                        run.flush()
                    if step + 1 in wanted:
                        run.evaluate(step + 1)
                return run.finish(batch)
        finally:
            model.eval()
