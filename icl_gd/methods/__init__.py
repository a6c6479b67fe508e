"""Methods: how a model answers the queries given the demonstrations.

zeroshot: the query alone. icl: the demos in the prompt. gd: fine-tune on the demos, then the query alone.
lora: as gd with a LoRA adapter. Each returns the same Predictions, so metrics and comparisons never branch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from icl_gd.data import Example, Template
from icl_gd.data.prompts import build_prompt
from icl_gd.errors import ConfigError, DivergedError
from icl_gd.methods import finetune
from icl_gd.methods.predict import Predictions, predict
from icl_gd.models.loading import LoadedModel


@dataclass
class MethodOutput:
    predictions: Predictions
    train: finetune.TrainResult | None = None
    weight_update: dict | None = None  # name -> tensor (trained - original), when method.save_update
    dai: tuple[pd.DataFrame, pd.DataFrame, dict[str, float]] | None = (
        None  # analysis.dai: layers, queries, metrics
    )
    sparsity: pd.DataFrame | None = None  # analysis.sparsity: one row per (layer, matrix, threshold)
    lr_search: list[dict[str, float]] = field(
        default_factory=list
    )  # method.lr_grid: held-out loss of each lr


def answer_queries(
    method: DictConfig,
    lm: LoadedModel,
    template: Template,
    separator: str,
    demos: list[Example],
    queries: list[Example],
    label_words: list[str] | None,
    eval_cfg: DictConfig,
    seed: int,
    add_bos: bool | None,
    on_step: Callable[[dict[str, float]], None] | None = None,
    prefix_cache: bool | None = None,
    analysis: DictConfig | None = None,
    heldout: list[Example] | None = None,
) -> MethodOutput:
    """Run one method on the queries; the model's weights are the same before and after.

    prefix_cache: run the demonstrations shared by every ICL prompt once and reuse their key/value cache
    (methods/predict.py); None = `eval.prefix_cache` when the config has it, else True. Other methods' prompts
    share too little for it to pay, so they always take the plain path.
    analysis: `analysis.dai` adds hooked zero-shot and ICL passes before training and a GD pass after it (Dai et
    al.'s metrics); `analysis.sparsity` measures the weight update before the weights are restored.
    heldout: demonstrations outside `demos` on which `method.lr_grid` is scored.
    """
    if prefix_cache is None:
        prefix_cache = bool(eval_cfg.get("prefix_cache", True))
    analysis = analysis if analysis is not None else OmegaConf.create({})
    queries_fmt = [template.query(q.fields, q.answer) for q in queries]
    answers = [a for _, a in queries_fmt]
    context = [template.demo(d.fields, d.answer) for d in demos] if method.name == "icl" else []
    prompts = [build_prompt(context, p, separator) for p, _ in queries_fmt]
    label_conts = [template.query(queries[0].fields, w)[1] for w in label_words] if label_words else None

    def run(model) -> Predictions:
        return predict(
            model,
            lm.tokenizer,
            prompts,
            answers,
            label_conts,
            eval_cfg.top_k,
            eval_cfg.batch_size,
            eval_cfg.save_full_dist,
            add_bos,
            prefix_cache=prefix_cache and method.name == "icl",
        )

    if method.name in ("zeroshot", "icl"):
        return MethodOutput(run(lm.model))

    def collect(model, with_demos: bool):
        from icl_gd.analysis import dai  # noqa: PLC0415 -- hooks are only needed for this analysis

        return dai.collect(
            model,
            lm.tokenizer,
            template,
            separator,
            demos,
            queries,
            label_words,
            add_bos,
            int(eval_cfg.batch_size),
            with_demos,
        )

    def to_batch(examples: list[Example]):
        fmt = [template.query(d.fields, d.answer) for d in examples]
        return finetune.build_batch(lm.tokenizer, [p for p, _ in fmt], [a for _, a in fmt], add_bos)

    if method.get("layer") == "middle":
        method = OmegaConf.merge(method, {"layer": len(finetune.decoder_layers(lm.model)) // 2})
    batch = to_batch(demos)
    before = (collect(lm.model, False), collect(lm.model, True)) if analysis.get("dai") else None
    lr_search: list[dict[str, float]] = []
    if method.get("lr_grid"):
        method, lr_search = select_lr(method, lm, batch, to_batch(heldout or []), seed)

    def dai_result(model):
        if before is None:
            return None
        from icl_gd.analysis import dai  # noqa: PLC0415

        return dai.analyse(*before, collect(model, False), [q.id for q in queries], seed)

    if method.name == "lora":
        with finetune.lora_adapter(lm.model, method) as (peft_model, params):
            result = finetune.train(peft_model, lm.tokenizer, batch, params, method, seed, on_step)
            return MethodOutput(run(peft_model), result, dai=dai_result(peft_model), lr_search=lr_search)
    params = finetune.select_parameters(lm.model, method)
    with finetune.restoring(params) as originals:
        result = finetune.train(lm.model, lm.tokenizer, batch, params, method, seed, on_step)
        update = (
            {n: (p.detach() - originals[n]).cpu() for n, p in params.items()} if method.save_update else None
        )
        sparsity = _update_sparsity(params, originals, analysis) if analysis.get("sparsity") else None
        return MethodOutput(run(lm.model), result, update, dai_result(lm.model), sparsity, lr_search)


def _update_sparsity(params: dict, originals: dict, analysis: DictConfig) -> pd.DataFrame:
    """Sparsity of (trained - original), one parameter at a time so no second copy of the model is held."""
    from icl_gd.analysis.sparsity import update_sparsity  # noqa: PLC0415

    thresholds = list(analysis.sparsity_thresholds)
    relative = bool(analysis.get("sparsity_relative", False))
    frames = [
        update_sparsity({n: (p.detach() - originals[n]).cpu()}, thresholds, relative)
        for n, p in params.items()
    ]
    return pd.concat(frames, ignore_index=True)


def select_lr(
    method: DictConfig, lm: LoadedModel, batch: list, heldout: list, seed: int
) -> tuple[DictConfig, list[dict[str, float]]]:
    """Train once per lr of `method.lr_grid` (weights restored after each) and keep the lowest held-out loss.

    A diverged lr scores +inf. Returns the method with `lr` set to the winner and one row per lr tried.
    """
    if not heldout:
        raise ConfigError("method.lr_grid needs held-out demonstrations (method.heldout >= 1).")
    pad = lm.tokenizer.pad_token_id
    rows = []
    for lr in method.lr_grid:
        trial = OmegaConf.merge(method, {"lr": float(lr), "lr_grid": []})
        ctx = contextlib.nullcontext((lm.model, None))
        if method.name == "lora":
            ctx = finetune.lora_adapter(lm.model, trial)
        with ctx as (model, lora_params):
            params = lora_params if method.name == "lora" else finetune.select_parameters(lm.model, trial)
            with finetune.restoring(params):
                try:
                    finetune.train(model, lm.tokenizer, batch, params, trial, seed)
                    loss = finetune.mean_demo_loss(model, heldout, pad)
                except DivergedError:
                    loss = math.inf
        rows.append({"lr": float(lr), "heldout_loss": loss})
    best = min(rows, key=lambda r: r["heldout_loss"])
    if not math.isfinite(best["heldout_loss"]):
        raise DivergedError(f"every lr of method.lr_grid={list(method.lr_grid)} diverged: try smaller ones.")
    return OmegaConf.merge(method, {"lr": best["lr"]}), rows
