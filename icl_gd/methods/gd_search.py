"""gd_search: give GD its best chance. A grid of GD settings, each trained once and scored along its trajectory.

For every setting (optimizer x learning rate x trained parameters; `search:` in conf/config.yaml) the model is
trained once to the last step of `eval_at`, and at each step of `eval_at` it answers the SELECTION queries
(eval.n_select, disjoint from the test queries); each (setting, step) is scored by its agreement with ICL on those
queries (ICL's own selection answers are computed here, on the same demos). Collapsed points are excluded. The
best point (or, with `select: accuracy`, the one whose selection accuracy is closest to ICL's) is retrained to its
step and answers the TEST queries: that is the job's predictions.parquet, compared with ICL as `icl_vs_gd_best`.
With `select: agreement` the accuracy-matched point of the same search is retrained too and written as a job of its
own (`acc_matched_tag`, a Companion: the folder companions/<tag>, compared with ICL as `icl_vs_gd_acc_matched`).
search.parquet holds every point: its setting, step, selection score and accuracy, demo loss, and whether it
collapsed or was chosen. Test queries are never seen before the choice is made.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from icl_gd import metrics as M
from icl_gd.config import positive, require_choice
from icl_gd.errors import ConfigError, DivergedError
from icl_gd.methods import finetune
from icl_gd.methods.base import Companion, Method, MethodInputs, MethodOutput
from icl_gd.methods.collapse import CollapsedError, collapse_reason
from icl_gd.methods.gd import PARAM_SETS
from icl_gd.methods.predict import Predictions
from icl_gd.methods.registry import register
from icl_gd.methods.training import log_vocab
from icl_gd.metrics.agreement import FULL_DIST_METRICS, METRICS, agreement, closer_sign, default_metric

SEARCH_OPTIMIZERS = {
    "sgd": ("sgd", False),
    "sgdm": ("sgd", True),
    "adam": ("adam", False),
    "adamw": ("adamw", False),
}
SELECTS = ("agreement", "accuracy")
BEST, ACC_MATCHED = "best", "acc_matched"


@dataclass
class GDSearchConfig:
    """The keys of gd_search; conf/method/gd_search.yaml holds their values (the grid comes from `search:`)."""

    name: str = MISSING
    optimizers: list[str] = MISSING
    lrs: list[float] = MISSING
    params: list[str] = MISSING
    eval_at: list[int] = MISSING
    momentum: float = MISSING
    batch_size: Any = MISSING  # 1 or "all"
    weight_decay: float = MISSING
    grad_clip: float | None = MISSING
    explode_factor: float = MISSING
    select: str = MISSING
    metric: str = MISSING
    tag: str | None = MISSING
    acc_matched_tag: str | None = MISSING


@dataclass(frozen=True)
class Setting:
    """One point of the grid before its steps: what one training run uses."""

    optimizer: str  # as search.optimizer names it: sgd, sgdm, adam, adamw
    lr: float
    params: str

    def node(self, method: DictConfig) -> DictConfig:
        """The gd-style config finetune.train and select_parameters read."""
        torch_opt, with_momentum = SEARCH_OPTIMIZERS[self.optimizer]
        return OmegaConf.create(
            {
                "optimizer": torch_opt,
                "momentum": float(method.momentum) if with_momentum else 0.0,
                "lr": float(self.lr),
                "params": self.params,
                "layer": None,
                "epochs": 1,
                "batch_size": method.batch_size,
                "weight_decay": float(method.weight_decay),
                "grad_clip": method.grad_clip,
                "explode_factor": float(method.explode_factor),
                "layer_causal": False,
            }
        )


def selection_accuracy(p: Predictions, queries: list, label_words: list[str] | None) -> float:
    """Label accuracy on the selection queries (first-token accuracy without label words)."""
    if label_words:
        gold = torch.tensor([label_words.index(q.answer) for q in queries])
        return float((p.label_probs.argmax(1) == gold).double().mean())
    return float(M.accuracy(p.topk_ids[:, 0], p.gold_token).mean())


@register
class GDSearch(Method):
    name = "gd_search"
    schema = GDSearchConfig
    trains = True
    updates_weights = True

    @classmethod
    def check(cls, cfg: DictConfig, method: DictConfig) -> None:
        if int(cfg.demos) == 0:
            raise ConfigError("method=gd_search with demos=0 has nothing to train on: set demos>=1.")
        if int(cfg.eval.n_select) < 1:
            raise ConfigError(
                "method=gd_search chooses on selection queries: set eval.n_select>=1 (e.g. eval.n_select=50; "
                "they are disjoint from the eval.n_queries test queries)."
            )
        for key in ("optimizers", "lrs", "params", "eval_at"):
            if not list(method[key]):
                raise ConfigError(
                    f"method.{key} (search.{key.rstrip('s')}) is empty: give at least one value."
                )
        for opt in method.optimizers:
            require_choice("search.optimizer", opt, tuple(SEARCH_OPTIMIZERS))
        for lr in method.lrs:
            positive("search.lr", lr, "Give positive learning rates, e.g. search.lr=[1e-5,1e-4,1e-3].")
        for params in method.params:
            require_choice("search.params", params, PARAM_SETS[:2])
        for step in method.eval_at:
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise ConfigError(f"search.eval_at has {step!r}: give optimizer steps, integers >= 0.")
        require_choice("method.select", method.select, SELECTS)
        if method.acc_matched_tag is not None and method.acc_matched_tag == method.tag:
            raise ConfigError(
                f"method.acc_matched_tag={method.acc_matched_tag!r} is method.tag too: the accuracy-matched job "
                "needs a name of its own (e.g. gd_acc_matched), or null to leave it out."
            )
        if method.metric != "auto":
            require_choice("method.metric", method.metric, METRICS)
        if method.metric in FULL_DIST_METRICS and not cfg.eval.save_full_dist:
            raise ConfigError(f"method.metric={method.metric} needs eval.save_full_dist=true.")
        if method.batch_size != "all" and not (isinstance(method.batch_size, int) and method.batch_size >= 1):
            raise ConfigError(f"method.batch_size={method.batch_size!r}: use a positive integer or all.")

    def answer(self, method: DictConfig, inputs: MethodInputs) -> MethodOutput:
        lm = inputs.lm
        metric = str(method.metric)
        if metric == "auto":
            primary = inputs.stats_primary
            metric = primary if primary in METRICS else default_metric(bool(inputs.label_words))
        full = metric in FULL_DIST_METRICS

        def on_select(context: list) -> Predictions:
            return inputs.predict(lm.model, context, queries=inputs.select, save_full_dist=full)

        icl = on_select(inputs.demos)
        zero = on_select([])
        icl_acc = selection_accuracy(icl, inputs.select, inputs.label_words)
        batch = inputs.training_batch(inputs.demos)
        pad = lm.tokenizer.pad_token_id
        initial_loss = finetune.mean_demo_loss(lm.model, batch, pad)
        initial_entropy = float(zero.entropy.mean())
        steps = sorted(set(int(s) for s in method.eval_at))
        rows: list[dict[str, Any]] = []
        for opt, lr, params in itertools.product(method.optimizers, method.lrs, method.params):
            setting = Setting(str(opt), float(lr), str(params))
            rows += self._trajectory(
                setting, method, inputs, batch, steps, metric, icl, icl_acc, initial_loss, initial_entropy
            )
        table = pd.DataFrame(rows)
        ok = table[~table.collapsed]
        if ok.empty:
            raise CollapsedError(
                f"every point of the GD search collapsed ({len(table)} points: {table.reason.iloc[0]}; ...): "
                "widen search.lr towards smaller rates.",
                {"n_points": float(len(table)), "n_collapsed": float(len(table))},
            )
        best = ok.loc[ok.select_score.idxmax()]  # the first of equal scores, in grid order
        matched = ok.loc[(ok.select_accuracy - icl_acc).abs().idxmin()]
        table["chosen"] = ""
        table.loc[matched.name, "chosen"] = ACC_MATCHED
        table.loc[best.name, "chosen"] = BEST if best.name != matched.name else f"{BEST},{ACC_MATCHED}"
        chosen = best if method.select == "agreement" else matched
        predictions, result = self._final(chosen, method, inputs, batch)
        return MethodOutput(
            predictions,
            train=result,
            search=table.drop(columns=["reason"]).assign(collapse_reason=table.reason.fillna("")),
            companions=self._acc_matched(
                method, inputs, batch, best, matched, MethodOutput(predictions, result)
            ),
        )

    def _acc_matched(
        self,
        method: DictConfig,
        inputs: MethodInputs,
        batch: list,
        best: pd.Series,
        matched: pd.Series,
        best_output: MethodOutput,
    ) -> list[Companion]:
        """The accuracy-matched point answering the test queries, as a job of its own (none when not asked for,
        or when this job is itself the accuracy-matched one). Training is deterministic given the setting, step
        and seed, so a matched point that is the best one reuses its answers instead of training again."""
        if method.select != "agreement" or method.acc_matched_tag is None:
            return []
        if matched.name == best.name:
            output = best_output
        else:
            quiet = dataclasses.replace(inputs, on_step=None)  # the job's training curve is the best point's
            output = MethodOutput(*self._final(matched, method, quiet, batch))
        overrides = {"select": "accuracy", "tag": str(method.acc_matched_tag), "acc_matched_tag": None}
        return [Companion(str(method.acc_matched_tag), overrides, output)]

    def _trajectory(
        self,
        setting: Setting,
        method: DictConfig,
        inputs: MethodInputs,
        batch: list,
        steps: list[int],
        metric: str,
        icl: Predictions,
        icl_acc: float,
        initial_loss: float,
        initial_entropy: float,
    ) -> list[dict[str, Any]]:
        """One training of `setting` to the last step, scored on the selection queries at each step."""
        lm = inputs.lm
        node = setting.node(method)
        sign = closer_sign(metric)
        rows: list[dict[str, Any]] = []

        def on_eval(step: int) -> None:
            p = inputs.predict(
                lm.model, [], queries=inputs.select, save_full_dist=metric in FULL_DIST_METRICS
            )
            loss = finetune.mean_demo_loss(lm.model, batch, lm.tokenizer.pad_token_id)
            value = float(agreement(metric, p, icl).mean())
            entropy = float(p.entropy.mean())
            reason = (
                collapse_reason(inputs.collapse, log_vocab(lm), loss, initial_loss, entropy, initial_entropy)
                if inputs.collapse is not None
                else None
            )
            rows.append(
                self._row(setting, node, step, metric, value, sign, p, inputs, icl_acc, loss, entropy, reason)
            )

        params = finetune.select_parameters(lm.model, node)
        with finetune.restoring(params):
            try:
                finetune.train(
                    lm.model,
                    lm.tokenizer,
                    batch,
                    params,
                    node,
                    inputs.seed,
                    steps=max(steps),
                    on_eval=on_eval,
                    eval_at=steps,
                )
            except DivergedError as e:  # the steps not reached are collapsed points
                done = {r["step"] for r in rows}
                for step in (s for s in steps if s not in done):
                    rows.append(
                        self._row(
                            setting,
                            node,
                            step,
                            metric,
                            math.nan,
                            sign,
                            None,
                            inputs,
                            icl_acc,
                            math.nan,
                            math.nan,
                            f"diverged: {e}",
                        )
                    )
        return rows

    @staticmethod
    def _row(
        setting, node, step, metric, value, sign, p, inputs, icl_acc, loss, entropy, reason
    ) -> dict[str, Any]:
        acc = selection_accuracy(p, inputs.select, inputs.label_words) if p is not None else math.nan
        return {
            "search_optimizer": setting.optimizer,
            "optimizer": str(node.optimizer),
            "momentum": float(node.momentum),
            "lr": setting.lr,
            "params": setting.params,
            "step": int(step),
            "select_metric": metric,
            "select_value": value,
            "select_score": sign * value,
            "select_accuracy": acc,
            "icl_select_accuracy": icl_acc,
            "train_loss": loss,
            "select_entropy": entropy,
            "collapsed": reason is not None,
            "reason": reason,
        }

    def _final(self, chosen: pd.Series, method: DictConfig, inputs: MethodInputs, batch: list):
        """Retrain the chosen setting to its step (the same run as in the search) and answer the test queries."""
        lm = inputs.lm
        node = Setting(str(chosen.search_optimizer), float(chosen.lr), str(chosen.params)).node(method)
        params = finetune.select_parameters(lm.model, node)
        with finetune.restoring(params):
            result = finetune.train(
                lm.model,
                lm.tokenizer,
                batch,
                params,
                node,
                inputs.seed,
                steps=int(chosen.step),
                on_step=inputs.on_step,
            )
            predictions = inputs.predict(lm.model, [])
        return predictions, result
