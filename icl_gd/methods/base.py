"""The method contract: what every method receives (`MethodInputs`), returns (`MethodOutput`) and declares (`Method`).

A method answers the queries of one job given its demonstrations and leaves the model's weights as it found
them. Each method is one module in methods/ with one subclass of `Method` (registered by name in
methods/registry.py) and one YAML file in conf/method/; nothing else changes when one is added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from icl_gd.data import Example, Template
from icl_gd.data.prompts import build_prompt
from icl_gd.methods import finetune
from icl_gd.methods.predict import Predictions, predict
from icl_gd.models.loading import LoadedModel


@dataclass
class MethodInputs:
    """Everything a method sees for one job; the same for every method of a (dataset, demos, seed, order_seed)."""

    lm: LoadedModel
    template: Template
    separator: str
    demos: list[Example]  # in the order they are used (empty for a method that uses none)
    queries: list[Example]
    label_words: list[str] | None
    eval: DictConfig  # top_k, batch_size, save_full_dist, prefix_cache
    seed: int
    add_bos: bool | None
    analysis: DictConfig = field(default_factory=lambda: OmegaConf.create({}))  # analysis.dai / sparsity
    heldout: list[Example] | None = None  # demonstrations outside `demos`, for method.lr_grid
    on_step: Callable[[dict[str, float]], None] | None = None  # called with each training step's losses
    select: list[Example] = field(
        default_factory=list
    )  # selection queries (eval.n_select), never the test ones
    collapse: DictConfig | None = None  # conf/config.yaml `collapse:`: when a fine-tuned model has collapsed
    stats_primary: str = "auto"  # stats.primary: the agreement metric a search scores with

    def predict(
        self,
        model: Any,
        context: list[Example],
        prefix_cache: bool = False,
        queries: list[Example] | None = None,
        save_full_dist: bool | None = None,
    ) -> Predictions:
        """The answer-position distributions of `model` for every test query (or `queries`), after `context`."""
        queries = self.queries if queries is None else queries
        queries_fmt = [self.template.query(q.fields, q.answer) for q in queries]
        shown = [self.template.demo(d.fields, d.answer) for d in context]
        prompts = [build_prompt(shown, p, self.separator) for p, _ in queries_fmt]
        label_conts = (
            [self.template.query(queries[0].fields, w)[1] for w in self.label_words]
            if self.label_words
            else None
        )
        return predict(
            model,
            self.lm.tokenizer,
            prompts,
            [a for _, a in queries_fmt],
            label_conts,
            self.eval.top_k,
            self.eval.batch_size,
            self.eval.save_full_dist if save_full_dist is None else save_full_dist,
            self.add_bos,
            prefix_cache=prefix_cache,
        )

    def training_batch(self, examples: list[Example]) -> list[tuple[list[int], list[int]]]:
        """(input ids, labels) per example, each formatted alone as a query with its answer."""
        fmt = [self.template.query(d.fields, d.answer) for d in examples]
        return finetune.build_batch(self.lm.tokenizer, [p for p, _ in fmt], [a for _, a in fmt], self.add_bos)


@dataclass
class MethodOutput:
    """What a method returns; every method returns the same Predictions, so metrics never branch on the method."""

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
    search: pd.DataFrame | None = None  # method=gd_search: one row per (setting, step), see gd_search.py
    # further jobs this one's work answers (see Companion)
    companions: list[Companion] = field(default_factory=list)


@dataclass
class Companion:
    """A second job answered by the same work: the runner writes it as a job folder of its own, `companions/<name>`
    inside this job's folder, whose config is this job's with `method_overrides` applied, so the sweep pairs and
    labels it like any job (gd_search's accuracy-matched point: `icl_vs_gd_acc_matched`, from the same search)."""

    name: str
    method_overrides: dict[str, Any]
    output: MethodOutput


class Method:
    """A way to answer queries given demonstrations. Subclasses set the class attributes and `answer`.

    name: the `method.name` it is registered under. schema: the dataclass its `method` config is merged onto
    (unknown keys and wrong types fail naming the key); the YAML file in conf/method/ holds the values.
    uses_demos: False for a method that never sees the demonstrations (its demos.jsonl is empty).
    trains: fine-tunes on the demonstrations (analysis.dai compares such a model with ICL).
    updates_weights: changes the model's own weights (analysis.sparsity measures that update).
    """

    name: ClassVar[str]
    schema: ClassVar[type]
    uses_demos: ClassVar[bool] = True
    trains: ClassVar[bool] = False
    updates_weights: ClassVar[bool] = False

    @classmethod
    def check(cls, cfg: DictConfig, method: DictConfig) -> None:
        """Method-specific checks of the job config (`method` already merged onto `schema`); raise ConfigError."""

    def answer(self, method: DictConfig, inputs: MethodInputs) -> MethodOutput:
        """Answer every query; the model's weights are the same before and after."""
        raise NotImplementedError
