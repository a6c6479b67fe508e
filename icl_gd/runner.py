"""One job: validate -> data -> model -> method -> predictions -> metrics -> files and W&B.

`run(cfg)` is what run.py calls and what tests call directly. It never reads HydraConfig: the job's folder is
`cfg.output_dir`. Every job ends with a status.json (`done` or `failed` with the error) and `tracker.finish()`;
a failure is recorded, not raised, unless `raise_on_failure` (a single run that should exit non-zero).
"""

from __future__ import annotations

import logging
import platform
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from icl_gd import io
from icl_gd import metrics as M
from icl_gd.config import config_hash, resolve_data_dir, resolved, validate
from icl_gd.data import (
    Example,
    Template,
    load_splits,
    order_demos,
    sample_demos,
    sample_heldout,
    sample_queries,
)
from icl_gd.errors import ConfigError, DivergedError
from icl_gd.methods import MethodOutput, answer_queries
from icl_gd.methods.predict import continuation_ids
from icl_gd.models import LoadedModel, load_model, resolve_source
from icl_gd.tracking import NullTracker, Tracker, make_tracker

log = logging.getLogger(__name__)

VERSIONED = ("torch", "transformers", "peft", "hydra-core", "wandb", "gguf", "icl_gd")


def versions() -> dict[str, str]:
    """Library versions logged with each run, for reproducibility."""
    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run(cfg: DictConfig, group: str | None = None, raise_on_failure: bool = False) -> dict[str, Any]:
    """Run one job into cfg.output_dir and return its metrics (empty when it failed)."""
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # no status.json can be written there: raise, whatever raise_on_failure says
        raise ConfigError(
            f"output_dir={out} cannot be created ({type(e).__name__}: {e.strerror}): point hydra.sweep.dir "
            "(or hydra.run.dir, or output_dir) at a writable folder."
        ) from None
    h = config_hash(cfg)
    if not cfg.get("rerun", False) and io.is_done(out, h):
        log.info("skip %s: done with the same config (rerun=true to run it again)", out)
        return io.read_json(out / io.METRICS)
    io.write_yaml(out / io.CONFIG, resolved(cfg))
    io.write_status(out, "running", config_hash=h)
    tracker: Tracker = NullTracker()
    metrics: dict[str, Any] = {}
    started = time.time()
    try:
        validate(cfg)  # before anything heavy: a bad value fails here with the key and the fix
        tracker = make_tracker(
            cfg.logger,
            output_dir=out,
            config={**resolved(cfg), "versions": versions()},
            group=group,
            job_type=cfg.method.name,
            name=out.name,
        )
        metrics = _job(cfg, out, tracker)
        io.write_json(out / io.METRICS, metrics)
        tracker.summary({f"{cfg.method.name}/{k}": v for k, v in metrics.items()})
        io.write_status(
            out, "done", config_hash=h, wall_s=round(time.time() - started, 3), versions=versions()
        )
        log.info("done %s: %s", out, {k: metrics[k] for k in ("accuracy", "label_accuracy") if k in metrics})
        return metrics
    except Exception as e:  # recorded, so the other jobs of a sweep go on
        diverged = isinstance(e, DivergedError)
        io.write_status(
            out,
            "failed",
            config_hash=h,
            error_type=type(e).__name__,
            error=str(e),
            traceback=traceback.format_exc(),
            versions=versions(),
        )
        if diverged:
            io.write_json(out / io.METRICS, {"diverged": 1.0, **getattr(e, "metrics", {})})
        tracker.summary({"status": "failed", "error": str(e), "diverged": float(diverged)})
        log.error("job %s failed: %s: %s", out, type(e).__name__, e)
        if raise_on_failure:
            raise
        return {}
    finally:
        tracker.finish()


def _job(cfg: DictConfig, out: Path, tracker: Tracker) -> dict[str, Any]:
    if cfg.dataset.name == "linreg":
        from icl_gd.linreg.lab import run_job  # noqa: PLC0415 -- the regression lab needs no language model

        return run_job(cfg, out, tracker)
    return lm_job(cfg, out, tracker)


def lm_job(cfg: DictConfig, out: Path, tracker: Tracker) -> dict[str, Any]:
    """The language-model job: same demos and queries for every method of a (dataset, demos, seed, order_seed)."""
    ds = cfg.dataset
    template = Template(ds.template, list(ds.text_fields))
    splits = load_splits(ds, resolve_data_dir(cfg))
    queries = sample_queries(splits.test, int(cfg.eval.n_queries), int(cfg.seed), ds.name)
    demos = order_demos(
        sample_demos(splits.pool, int(cfg.demos), int(cfg.seed), ds.name, cfg.demo_sampling), cfg.order_seed
    )
    used = demos if cfg.method.name != "zeroshot" else []
    io.write_jsonl(
        out / io.DEMOS,
        [
            {
                "id": d.id,
                "label": d.label,
                "answer": d.answer,
                **d.fields,
                "text": template.demo(d.fields, d.answer),
            }
            for d in used
        ],
    )
    resolve_source(cfg.model)  # fail fast, with where we looked, before the slow load
    lm = load_model(cfg.model)
    vocab = getattr(lm.model.config, "vocab_size", None)
    if vocab and int(cfg.eval.top_k) > vocab:
        raise ConfigError(
            f"eval.top_k={cfg.eval.top_k} exceeds the vocabulary of model={lm.name} ({vocab} tokens): lower eval.top_k."
        )
    label_words = list(OmegaConf.to_container(ds.label_words).values()) if ds.label_words else None
    _check_label_words(lm, template, queries[0], label_words)

    def on_step(row: dict[str, float]) -> None:
        tracker.log(
            {f"{cfg.method.name}/train_loss": row["train_loss"], "epoch": row["epoch"]}, step=int(row["step"])
        )

    # torch's global RNG (LoRA's adapter init draws from it) depends on the seed alone, not on the jobs this
    # process ran before: the same job gives the same files in any sweep order, launcher or resumed run
    heldout = (
        sample_heldout(splits.pool, demos, int(cfg.method.heldout), int(cfg.seed), ds.name)
        if cfg.method.get("lr_grid")
        else None
    )
    torch.manual_seed(int(cfg.seed))
    result = answer_queries(
        cfg.method,
        lm,
        template,
        ds.separator,
        used,
        queries,
        label_words,
        cfg.eval,
        int(cfg.seed),
        cfg.model.add_bos,
        on_step,
        analysis=cfg.get("analysis"),
        heldout=heldout,
    )
    df = predictions_frame(result, queries, label_words, lm, ds)
    io.write_parquet(out / io.PREDICTIONS, df)
    metrics = job_metrics(result, queries, label_words)
    metrics.update(n_queries=len(queries), n_demos=len(used))
    if result.train is not None:
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
        for layer, loss in enumerate(
            result.train.final_layer_losses
        ):  # layer-causal GD: each layer's own loss
            metrics[f"train_layer_loss_final/{layer}"] = loss
    metrics.update(analysis_outputs(result, out, tracker))
    if result.weight_update:
        from safetensors.torch import save_file  # noqa: PLC0415

        save_file(
            {k: v.contiguous() for k, v in result.weight_update.items()},
            str(out / "weight_update.safetensors"),
        )
    tracker.log_table("predictions", df.drop(columns=["full_dist"], errors="ignore"))
    tracker.log_histogram("gold_prob_hist", df["gold_prob"].tolist())
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
    if result.lr_search:
        io.write_csv(out / io.LR_SEARCH, pd.DataFrame(result.lr_search))
        metrics["lr_selected"] = min(result.lr_search, key=lambda r: r["heldout_loss"])["lr"]
    return metrics


def _check_label_words(
    lm: LoadedModel, template: Template, query: Example, label_words: list[str] | None
) -> None:
    """Every label word must encode to ordinary tokens (no unknown or special token), or its probability is moot."""
    special = set(lm.tokenizer.all_special_ids) - {None}
    for w in label_words or []:
        ids = continuation_ids(lm.tokenizer, template.query(query.fields, w)[1])
        bad = [i for i in ids if i in special or i == lm.tokenizer.unk_token_id]
        if bad:
            raise ConfigError(
                f"label word {w!r} cannot be encoded by the tokenizer of model={lm.name}: it maps to "
                f"unknown/special token(s) {lm.tokenizer.convert_ids_to_tokens(bad)}. "
                "Change dataset.label_words to plain words."
            )


def _gold_label_index(queries: list[Example], label_words: list[str]) -> torch.Tensor:
    return torch.tensor([label_words.index(q.answer) for q in queries])


def job_metrics(
    result: MethodOutput, queries: list[Example], label_words: list[str] | None
) -> dict[str, float]:
    """metrics.json: means with 95% t-intervals over queries, plus which label scoring was used."""
    p = result.predictions
    acc = M.accuracy(p.topk_ids[:, 0], p.gold_token)
    out: dict[str, float] = {}
    out.update(M.summarize("accuracy", acc))
    if label_words:
        gold_idx = _gold_label_index(queries, label_words)
        out.update(M.summarize("label_accuracy", (p.label_probs.argmax(1) == gold_idx).double()))
        out.update(M.summarize("gold_label_prob", p.label_probs.gather(1, gold_idx[:, None])[:, 0]))
        out["label_scoring_sequence"] = 1.0  # a label's probability is that of its whole token sequence
    else:
        out.update(M.summarize("label_accuracy", acc))  # open vocabulary: the label is the first answer token
        out["label_scoring_sequence"] = 0.0
    out.update(M.summarize("gold_prob", p.gold_prob))
    out.update(M.summarize("entropy", p.entropy))
    return out


def predictions_frame(
    result: MethodOutput,
    queries: list[Example],
    label_words: list[str] | None,
    lm: LoadedModel,
    ds: DictConfig,
) -> pd.DataFrame:
    """predictions.parquet: one row per query, top-K tokens and probabilities, label-word probabilities."""
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
            "correct": bool(ids[0] == int(p.gold_token[i])),
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
