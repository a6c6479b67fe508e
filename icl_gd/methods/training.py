"""What gd and lora share: train on the demonstrations, answer zero-shot, restore the model; optional analyses.

`FineTuneMethod.answer` runs, in order: hooked zero-shot and ICL passes (analysis.dai), the learning-rate search
(method.lr_grid), training inside `adapted` (which decides what is trained and how it is undone), the update's
analyses, the zero-shot predictions of the trained model, and its hooked pass (analysis.dai).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from icl_gd.config import is_int, positive, require_choice
from icl_gd.errors import ConfigError
from icl_gd.methods import finetune
from icl_gd.methods.base import Method, MethodInputs, MethodOutput
from icl_gd.methods.collapse import CollapsedError, collapse_reason
from icl_gd.methods.lr_search import select_lr

OPTIMIZERS = ("sgd", "adam", "adamw")

Adapted = tuple[
    Any, dict, dict | None
]  # (model to train and query, trained parameters, their originals or None)


class FineTuneMethod(Method):
    """A method that fine-tunes on the demonstrations; subclasses say what is trained (`adapted`)."""

    trains = True

    @classmethod
    def check(cls, cfg: DictConfig, method: DictConfig) -> None:
        if int(cfg.demos) == 0:
            raise ConfigError(
                f"method={method.name} with demos=0 has nothing to train on: set demos>=1 or method=zeroshot."
            )
        require_choice("method.optimizer", method.optimizer, OPTIMIZERS)
        require_choice("method.loss_on", method.get("loss_on", finetune.ANSWER), finetune.LOSS_ON)
        positive("method.lr", method.lr, "Try 1e-4 for adam or 1e-3 for sgd.")
        if int(method.epochs) < 1:
            raise ConfigError(f"method.epochs={method.epochs} must be >= 1.")
        if method.batch_size != "all" and (not is_int(method.batch_size) or method.batch_size < 1):
            raise ConfigError(
                f"method.batch_size={method.batch_size!r}: use a positive integer (1 = one demo a step) or all."
            )
        if method.grad_clip is not None:
            positive("method.grad_clip", method.grad_clip, "Use null for no clipping.")
        for lr in method.lr_grid:
            positive("method.lr_grid", lr, "Give positive learning rates, e.g. method.lr_grid=[1e-3,1e-4].")
        if method.lr_grid and int(method.heldout) < 1:
            raise ConfigError(
                f"method.lr_grid needs held-out demonstrations to choose from: method.heldout={method.heldout} "
                "must be >= 1."
            )

    @contextlib.contextmanager
    def adapted(self, lm: Any, method: DictConfig) -> Iterator[Adapted]:
        """Yield what to train; on exit the model is as it was before."""
        raise NotImplementedError
        yield  # pragma: no cover

    def inspect_update(
        self, params: dict, originals: dict | None, method: DictConfig, analysis: DictConfig
    ) -> tuple[dict | None, pd.DataFrame | None]:
        """(weight update to save, sparsity rows) of a trained model, before it is restored; none by default."""
        return None, None

    def answer(self, method: DictConfig, inputs: MethodInputs) -> MethodOutput:
        lm = inputs.lm
        if method.get("layer") == "middle":
            method = OmegaConf.merge(method, {"layer": len(finetune.decoder_layers(lm.model)) // 2})
        if method.get("layer_causal") and method.get("layer_causal_lr") is not None:
            method = OmegaConf.merge(method, {"lr": method.layer_causal_lr})  # layer-causal GD's own lr
        loss_on = method.get(
            "loss_on", finetune.ANSWER
        )  # answer | all (Dai et al.: every token of each demo)
        batch = finetune.with_loss_on(inputs.training_batch(inputs.demos), loss_on)
        before = (
            (_collect(inputs, lm.model, False), _collect(inputs, lm.model, True)) if _dai(inputs) else None
        )
        lr_search: list[dict[str, float]] = []
        if method.get("lr_grid"):
            heldout = finetune.with_loss_on(inputs.training_batch(inputs.heldout or []), loss_on)
            method, lr_search = select_lr(self.adapted, method, lm, batch, heldout, inputs.seed)
        unrelated = self._unrelated(lm, method, inputs, loss_on) if before is not None else None
        with self.adapted(lm, method) as (model, params, originals):
            with _recording(inputs, model) as recorder:  # analysis.dai: the training tokens' query vectors
                result = finetune.train(
                    model, lm.tokenizer, batch, params, method, inputs.seed, inputs.on_step
                )
            check_collapse(inputs, result)
            update, sparsity = self.inspect_update(params, originals, method, inputs.analysis)
            predictions = inputs.predict(model, [])
            dai = None
            if before is not None:
                from icl_gd.analysis import dai as dai_analysis  # noqa: PLC0415 -- hooks only for this analysis

                training = dai_analysis.training_keys(
                    recorder.per_demo([len(b[0]) for b in batch]),
                    [b[0] for b in batch],
                    lm.tokenizer.bos_token_id,
                )
                dai = dai_analysis.analyse(
                    *before,
                    _collect(inputs, model, False),
                    [q.id for q in inputs.queries],
                    inputs.seed,
                    training=training,
                    unrelated=unrelated,
                )
            return MethodOutput(predictions, result, update, dai, sparsity, lr_search)

    def _unrelated(self, lm: Any, method: DictConfig, inputs: MethodInputs, loss_on: str):
        """analysis.dai's unrelated-update control: the same training on other demonstrations (the held-out ones,
        as many as the demos), read zero-shot; None without held-out demonstrations (method.lr_grid gives them)."""
        other = (inputs.heldout or [])[: len(inputs.demos)]
        if not other:
            return None
        batch = finetune.with_loss_on(inputs.training_batch(other), loss_on)
        with self.adapted(lm, method) as (model, params, _):
            finetune.train(model, lm.tokenizer, batch, params, method, inputs.seed)
            return _collect(inputs, model, False)


def log_vocab(lm: Any) -> float:
    """ln of the model's vocabulary size: the entropy of a uniform answer, the loss of chance."""
    return math.log(int(lm.model.config.vocab_size))


def check_collapse(inputs: MethodInputs, result: finetune.TrainResult) -> None:
    """CollapsedError when training took the demo loss to chance or blew it up (collapse: in conf/config.yaml)."""
    if inputs.collapse is None:
        return
    reason = collapse_reason(
        inputs.collapse, log_vocab(inputs.lm), result.final_answer_loss, result.initial_answer_loss
    )
    if reason:
        raise CollapsedError(
            f"training collapsed the model: {reason}. Lower method.lr, or set method.grad_clip "
            "(thresholds: collapse.entropy_fraction, collapse.loss_rise).",
            {
                "train_answer_loss_initial": result.initial_answer_loss,
                "train_answer_loss_final": result.final_answer_loss,
            },
        )


def _dai(inputs: MethodInputs) -> bool:
    return bool(inputs.analysis.get("dai"))


@contextlib.contextmanager
def _recording(inputs: MethodInputs, model: Any) -> Iterator[Any]:
    """analysis.dai: record the query vectors of the training tokens during training (hooks.TrainingQueries)."""
    if not _dai(inputs):
        yield None
        return
    from icl_gd.analysis.hooks import TrainingQueries  # noqa: PLC0415 -- hooks only for this analysis

    with TrainingQueries(model) as recorder:
        yield recorder


def _collect(inputs: MethodInputs, model: Any, with_demos: bool):
    """Hooked pass for Dai et al.'s metrics: per-layer attention outputs and maps at each query, and the
    LMOps-style captures at the appended label token."""
    from icl_gd.analysis import dai  # noqa: PLC0415 -- hooks are only needed for this analysis

    return dai.collect(
        model,
        inputs.lm.tokenizer,
        inputs.template,
        inputs.separator,
        inputs.demos,
        inputs.queries,
        inputs.label_words,
        inputs.add_bos,
        int(inputs.eval.batch_size),
        with_demos,
        lmops=True,
    )
