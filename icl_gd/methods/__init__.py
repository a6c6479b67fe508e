"""Methods: how a model answers the queries given the demonstrations.

zeroshot: the query alone. icl: the demos in the prompt. gd: fine-tune on the demos, then the query alone.
lora: as gd with a LoRA adapter. Each returns the same Predictions, so metrics and comparisons never branch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig

from icl_gd.data import Example, Template
from icl_gd.data.prompts import build_prompt
from icl_gd.methods import finetune
from icl_gd.methods.predict import Predictions, predict
from icl_gd.models.loading import LoadedModel


@dataclass
class MethodOutput:
    predictions: Predictions
    train: finetune.TrainResult | None = None
    weight_update: dict | None = None  # name -> tensor (trained - original), when method.save_update


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
) -> MethodOutput:
    """Run one method on the queries; the model's weights are the same before and after.

    prefix_cache: run the demonstrations shared by every ICL prompt once and reuse their key/value cache
    (methods/predict.py); None = `eval.prefix_cache` when the config has it, else True. Other methods' prompts
    share too little for it to pay, so they always take the plain path.
    """
    if prefix_cache is None:
        prefix_cache = bool(eval_cfg.get("prefix_cache", True))
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

    demo_fmt = [template.query(d.fields, d.answer) for d in demos]
    batch = finetune.build_batch(lm.tokenizer, [p for p, _ in demo_fmt], [a for _, a in demo_fmt], add_bos)
    if method.name == "lora":
        with finetune.lora_adapter(lm.model, method) as (peft_model, params):
            result = finetune.train(peft_model, lm.tokenizer, batch, params, method, seed, on_step)
            return MethodOutput(run(peft_model), result)
    params = finetune.select_parameters(lm.model, method)
    with finetune.restoring(params) as originals:
        result = finetune.train(lm.model, lm.tokenizer, batch, params, method, seed, on_step)
        update = (
            {n: (p.detach() - originals[n]).cpu() for n, p in params.items()} if method.save_update else None
        )
        return MethodOutput(run(lm.model), result, update)
