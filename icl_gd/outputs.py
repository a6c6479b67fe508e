"""A language-model job's result files and metrics: predictions.parquet rows, metrics.json, training and analyses.

Pure functions of a method's output (no model calls); the runner writes what they return through `io`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig

from icl_gd import io
from icl_gd import metrics as M
from icl_gd.data import Example, Template
from icl_gd.methods import MethodOutput
from icl_gd.models import LoadedModel
from icl_gd.tracking import Tracker


def demo_rows(demos: list[Example], template: Template) -> list[dict[str, Any]]:
    """demos.jsonl: the demonstrations in the order they were used: the raw fields under `fields` (a field may be
    called anything, `text` included) and the text as the prompt shows it under `demo`."""
    return [
        {
            "id": d.id,
            "label": d.label,
            "answer": d.answer,
            "fields": dict(d.fields),
            "demo": template.demo(d.fields, d.answer),
        }
        for d in demos
    ]


def training_outputs(result: MethodOutput, out: Path) -> dict[str, float]:
    """Write the training curve (and the weight update, when kept) of a training job; return its metrics."""
    metrics: dict[str, float] = {}
    if result.train is None:
        return metrics
    curve = pd.DataFrame(result.train.curve)
    io.write_csv(out / io.TRAIN_CURVE, curve)
    metrics.update(
        train_loss_initial=result.train.initial_loss,
        train_loss_final=result.train.final_loss,
        train_steps=len(curve),
        n_trainable=result.train.n_trainable,
        train_answer_loss_initial=result.train.initial_answer_loss,
        train_answer_loss_final=result.train.final_answer_loss,
    )
    for layer, loss in enumerate(result.train.final_layer_losses):  # layer-causal GD: each layer's own loss
        metrics[f"train_layer_loss_final/{layer}"] = loss
    if result.weight_update:
        io.write_safetensors(out / io.WEIGHT_UPDATE, result.weight_update)
    return metrics


def analysis_outputs(result: MethodOutput, out: Path, tracker: Tracker) -> dict[str, float]:
    """Write the optional analyses of a training job (Dai metrics, sparsity, lr search); return their metrics."""
    metrics: dict[str, float] = {}
    if result.dai is not None:
        layers, per_query, dai_metrics = result.dai
        io.write_parquet(out / io.DAI_LAYERS, layers)
        io.write_parquet(out / io.DAI_QUERIES, per_query)
        metrics.update(dai_metrics)
        tracker.log_table("dai_layers", layers.groupby("layer", as_index=False).mean(numeric_only=True))
    if result.sparsity is not None:
        io.write_parquet(out / io.SPARSITY, result.sparsity)
        for t, g in result.sparsity.groupby("threshold"):
            metrics[f"sparsity@{t:.0e}"] = float((g.fraction * g.n_entries).sum() / g.n_entries.sum())
    if result.search is not None:
        io.write_parquet(out / io.SEARCH, result.search)
        table = result.search
        best = table[table.chosen.str.contains("best")].iloc[0]
        metrics.update(
            search_points=float(len(table)),
            search_collapsed=float(table.collapsed.sum()),
            best_lr=float(best.lr),
            best_step=float(best.step),
            best_momentum=float(best.momentum),
            best_select_score=float(best.select_score),
            icl_select_accuracy=float(best.icl_select_accuracy),
        )
    if result.lr_search:
        io.write_csv(out / io.LR_SEARCH, pd.DataFrame(result.lr_search))
        metrics["lr_selected"] = min(result.lr_search, key=lambda r: r["heldout_loss"])["lr"]
    return metrics


def _gold_label_index(queries: list[Example], label_words: list[str]) -> torch.Tensor:
    return torch.tensor([label_words.index(q.answer) for q in queries])


def job_metrics(
    result: MethodOutput,
    queries: list[Example],
    label_words: list[str] | None,
    stats: DictConfig,
    first_token_shared: bool = False,
) -> dict[str, float]:
    """metrics.json: means over the job's queries (one demo set) with their intervals, and the label scoring used.

    0/1 metrics get Wilson intervals; other means a bootstrap over queries (`stats.n_boot`, `stats.seed`), so
    every interval stays inside the metric's range. They cover query sampling only: across demo sets, see compare.
    `first_token_shared`: label words share a first token, so first-token `accuracy` is NaN (it cannot see them).
    """
    p = result.predictions
    level = float(stats.level)

    def binary(name: str, values: torch.Tensor) -> dict[str, float]:
        return M.summarize_binary(name, values, level)

    def mean(name: str, values: torch.Tensor) -> dict[str, float]:
        return M.summarize_mean(name, values, int(stats.n_boot), level, int(stats.seed))

    acc = M.accuracy(p.topk_ids[:, 0], p.gold_token)
    out: dict[str, float] = {**binary("accuracy", acc)}
    if first_token_shared:
        out = {k: float("nan") for k in out}
    out["first_token_shared"] = float(first_token_shared)
    if label_words:
        gold_idx = _gold_label_index(queries, label_words)
        out.update(binary("label_accuracy", (p.label_probs.argmax(1) == gold_idx).double()))
        out.update(mean("gold_label_prob", p.label_probs.gather(1, gold_idx[:, None])[:, 0]))
        out["label_scoring_sequence"] = 1.0  # a label's probability is that of its whole token sequence
    else:
        out.update(binary("label_accuracy", acc))  # open vocabulary: the label is the first answer token
        out["label_scoring_sequence"] = 0.0
    out.update(mean("gold_prob", p.gold_prob))
    out.update(mean("entropy", p.entropy))
    return out


def predictions_frame(
    result: MethodOutput,
    queries: list[Example],
    label_words: list[str] | None,
    lm: LoadedModel,
    ds: DictConfig,
    first_token_shared: bool = False,
) -> pd.DataFrame:
    """predictions.parquet: one row per query, top-K tokens and probabilities, label-word probabilities.

    `correct` (top-1 token == the gold answer's first token) is null where label words share a first token.
    """
    p = result.predictions
    tok = lm.tokenizer
    rows = []
    for i, q in enumerate(queries):
        ids = p.topk_ids[i].tolist()
        row: dict[str, Any] = {
            "query_id": q.id,
            "query": " | ".join(q.fields[f] for f in ds.text_fields),
            "gold": q.answer,
            "gold_label": q.label,
            "gold_token": int(p.gold_token[i]),
            "gold_prob": float(p.gold_prob[i]),
            "top1_token": ids[0],
            "top1_text": tok.decode([ids[0]]),
            "correct": None if first_token_shared else bool(ids[0] == int(p.gold_token[i])),
            "entropy": float(p.entropy[i]),
            "topk_ids": ids,
            "topk_tokens": [tok.decode([t]) for t in ids],
            "topk_probs": p.topk_probs[i].tolist(),
        }
        if label_words:
            probs = p.label_probs[i].tolist()
            row["label_probs"] = probs
            row["pred_label"] = label_words[max(range(len(probs)), key=probs.__getitem__)]
            row.update({f"p_label/{w}": v for w, v in zip(label_words, probs, strict=True)})
        if p.full_dist is not None:
            row["full_dist"] = p.full_dist[i].numpy().tobytes()  # float16 over the vocabulary
        rows.append(row)
    return pd.DataFrame(rows)
