"""One job: validate -> data -> model -> method -> predictions -> metrics -> files and W&B.

`run(cfg)` is what run.py calls and what tests call directly. It never reads HydraConfig: the job's folder is
`cfg.output_dir`. Every job ends with a status.json (`done` or `failed` with the error) and `tracker.finish()`;
a failure is recorded, not raised, unless `raise_on_failure` (a single run that should exit non-zero).
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from icl_gd import io, outputs
from icl_gd.config import config_hash, normalize, resolved
from icl_gd.context_window import PromptShape, fit_demos
from icl_gd.data import (
    Example,
    Template,
    load_splits,
    order_demos,
    resolve_data_dir,
    sample_demos,
    sample_heldout,
    sample_queries,
    sample_selection,
    shuffle_labels,
)
from icl_gd.data.loading import Splits
from icl_gd.data.prompts import unescape
from icl_gd.data.source import condition_words, demo_source_name, source_dataset
from icl_gd.errors import ConfigError, DivergedError
from icl_gd.methods import MethodInputs, MethodOutput, method_class
from icl_gd.methods.base import Companion
from icl_gd.models import LoadedModel, load_model, resolve_source
from icl_gd.models.anatomy import context_length
from icl_gd.models.forward import continuation_ids
from icl_gd.tracking import (
    PREDICTIONS_ARTIFACT,
    PROB_RANGE,
    NullTracker,
    Tracker,
    job_run,
    make_tracker,
    predictions_artifact,
)
from icl_gd.validation import validate

log = logging.getLogger(__name__)

COMPANIONS = "companions"  # a job's folder for the further jobs its work answers (methods/base.py Companion)
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


def run(
    cfg: DictConfig, group: str | None = None, raise_on_failure: bool = False, experiment: str | None = None
) -> dict[str, Any]:
    """Run one job into cfg.output_dir and return its metrics (empty when it failed).

    group: the W&B group (`tracking.sweep_group`); experiment: the experiment=... preset (None: adhoc)."""
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # no status.json can be written there: raise, whatever raise_on_failure says
        raise ConfigError(
            f"output_dir={out} cannot be created ({type(e).__name__}: {e.strerror}): point hydra.sweep.dir "
            "(or hydra.run.dir, or output_dir) at a writable folder."
        ) from None
    tracker: Tracker = NullTracker()
    metrics: dict[str, Any] = {}
    exit_code = 0  # the W&B run's: non-zero for a failed job
    started = time.time()
    h = None
    try:  # everything, the config's own resolution included, fails into status.json and the log
        normalize(cfg)  # label_words keys as the raw labels' text, before the job's identity is taken
        h = config_hash(cfg)
        finished = _finished(out, h) if not cfg.get("rerun", False) else None
        if finished is not None:
            return finished
        io.write_yaml(out / io.CONFIG, resolved(cfg))
        io.write_status(out, "running", config_hash=h)
        validate(cfg)  # before anything heavy: a bad value fails here with the key and the fix
        tracker = make_tracker(
            cfg.logger,
            output_dir=out,
            **job_run(
                resolved(cfg),
                cfg.logger,
                experiment=experiment,
                group=group,
                job=out.name,
                extra={"versions": versions()},
            ),
        )
        metrics = _job(cfg, out, tracker)
        io.write_json(out / io.METRICS, metrics)
        tracker.summary({"status": "done", **metrics})  # one namespace: the same keys for every method
        files = [p for p in (out / io.PREDICTIONS, out / io.DEMOS) if p.exists()]
        if files:
            tracker.log_artifact(files, name=predictions_artifact(group, out.name), type=PREDICTIONS_ARTIFACT)
        # torch_threads: timings compare only at equal threads (icl_gd/threads.py)
        took = {"wall_s": round(time.time() - started, 3), "torch_threads": torch.get_num_threads()}
        io.write_status(out, "done", config_hash=h, **took, versions=versions())
        log.debug("done %s: %s", out, {k: metrics[k] for k in ("accuracy", "label_accuracy") if k in metrics})
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
        tracker.summary(
            {"status": "failed", "error": str(e), "error_type": type(e).__name__, "diverged": float(diverged)}
        )
        exit_code = 1
        if raise_on_failure:  # the caller says it (run.py / icl-gd: once, without a traceback)
            raise
        log.error(
            "job %s failed: %s: %s", out.name, type(e).__name__, e
        )  # in a sweep: relative to its folder
        return {}
    finally:
        tracker.finish(exit_code=exit_code)


def _finished(out: Path, config_hash: str) -> dict[str, Any] | None:
    """The metrics of a job already done with the same config, or None: run it (again, if its files are unreadable)."""
    if not io.is_done(out, config_hash):
        return None
    try:
        metrics = io.read_json(out / io.METRICS)
    except (OSError, ValueError) as e:
        log.warning("redo %s: it says done but %s does not read back (%s)", out, io.METRICS, e)
        return None
    log.info("skip %s: done with the same config (rerun=true to run it again)", out.name)
    return metrics


def _job(cfg: DictConfig, out: Path, tracker: Tracker) -> dict[str, Any]:
    if cfg.dataset.name == "linreg":
        from icl_gd.linreg.lab import run_job  # noqa: PLC0415 -- the regression lab needs no language model

        return run_job(cfg, out, tracker)
    if cfg.method.get("name") == "param_sensitivity":  # ICL under weight noise (methods/param_sensitivity.py)
        from icl_gd.methods.param_sensitivity import run_lm_job  # noqa: PLC0415

        return run_lm_job(cfg, out, tracker)
    return lm_job(cfg, out, tracker)


def lm_job(cfg: DictConfig, out: Path, tracker: Tracker) -> dict[str, Any]:
    """The language-model job: same demos and queries for every method of a (dataset, demos, seed, order_seed)."""
    ds = cfg.dataset
    shutil.rmtree(out / COMPANIONS, ignore_errors=True)  # a companion is this run's, never an earlier one's
    template = Template(ds.template, list(ds.text_fields))
    splits = load_splits(ds, resolve_data_dir(cfg))
    queries = sample_queries(splits.test, int(cfg.eval.n_queries), int(cfg.seed), ds.name)
    select = sample_selection(
        splits.test, int(cfg.eval.n_select), int(cfg.eval.n_queries), int(cfg.seed), ds.name
    )
    io.write_json(out / io.QUERIES, {"select": [q.id for q in select], "test": [q.id for q in queries]})
    pool, demos = _demos(cfg, splits)
    method = method_class(cfg.method)()
    from icl_gd.memory_plan import check_job  # noqa: PLC0415 -- before the model loads: refuse what cannot fit

    check_job(cfg, template, demos, [*queries, *select], unescape(ds.separator))
    lm, label_words, shared_first = _load_model(cfg, template, queries[0])
    separator = unescape(ds.separator)
    used = demos if method.uses_demos else []
    in_prompt = used if (not method.trains or (cfg.get("analysis") or {}).get("dai")) else []
    shape = PromptShape(
        template,
        separator,
        [*queries, *select],
        [template.query(queries[0].fields, w)[1] for w in label_words or []],
        add_special=True if cfg.model.add_bos is None else bool(cfg.model.add_bos),
    )
    fitted = fit_demos(shape, lm.tokenizer, in_prompt, context_length(lm.model), cfg.eval.overflow)
    dropped = len(in_prompt) - len(fitted)
    used = used[dropped:]
    io.write_jsonl(out / io.DEMOS, outputs.demo_rows(used, template))
    seen = _queries_seen_as_demos(queries, used)

    def on_step(row: dict[str, float]) -> None:
        tracker.log(  # train/* is drawn against train/step (tracking's define_metric)
            {"train/loss": row["train_loss"], "train/epoch": row["epoch"], "train/step": int(row["step"])}
        )

    # torch's global RNG (LoRA's adapter init draws from it) depends on the seed alone, not on the jobs this
    # process ran before: the same job gives the same files in any sweep order, launcher or resumed run
    heldout = (
        sample_heldout(pool, demos, int(cfg.method.heldout), int(cfg.seed), ds.name)
        if cfg.method.get("lr_grid")
        else None
    )
    torch.manual_seed(int(cfg.seed))
    inputs = MethodInputs(
        lm=lm,
        template=template,
        separator=separator,
        demos=used,
        queries=queries,
        select=select,
        collapse=cfg.get("collapse"),
        stats_primary=str(cfg.stats.primary),
        label_words=label_words,
        eval=cfg.eval,
        seed=int(cfg.seed),
        add_bos=cfg.model.add_bos,
        analysis=cfg.get("analysis") or OmegaConf.create({}),
        heldout=heldout,
        on_step=on_step,
    )
    result = method.answer(cfg.method, inputs)
    if result.search is not None:  # which demo set the rows belong to, so tables of many jobs stack
        result.search = _tag_search(result.search, cfg)
    counts = {"n_queries": len(queries), "n_demos": len(used), "demos_dropped": dropped}
    counts["queries_seen_as_demos"] = seen
    answered = _Answered(queries, label_words, lm, ds, bool(shared_first), cfg.stats, counts)
    df = answered.write(result, out)
    metrics = {**answered.metrics(result), **outputs.training_outputs(result, out)}
    metrics.update(outputs.analysis_outputs(result, out, tracker))
    for companion in result.companions:
        _write_companion(cfg, out, companion, answered)
    tracker.log_table("predictions", df.drop(columns=["full_dist"], errors="ignore"))
    tracker.log_histogram("gold_prob_hist", df["gold_prob"].tolist(), bounds=PROB_RANGE)
    return metrics


def _demos(cfg: DictConfig, splits: Splits) -> tuple[list[Example], list[Example]]:
    """The pool the demos come from (this task's, or with demo_source another task's) and the job's demos, in
    their order, with their labels shuffled for the control demo_labels=shuffled."""
    ds = cfg.dataset
    source = source_dataset(cfg, list(ds.text_fields))
    pool = load_splits(source, resolve_data_dir(cfg)).pool if source is not None else splits.pool
    name = (
        source.name if source is not None else ds.name
    )  # the demos the source's own job draws for this seed
    demos = order_demos(
        sample_demos(pool, int(cfg.demos), int(cfg.seed), name, cfg.demo_sampling), cfg.order_seed
    )
    if cfg.get("demo_labels", "original") == "shuffled":
        demos = shuffle_labels(demos, int(cfg.seed), ds.name)
    return pool, demos


def _tag_search(search: Any, cfg: DictConfig) -> Any:
    """A search table's rows with the demo set they belong to (dataset, demos, seed, order, control)."""
    label = cfg.method.get("tag") or cfg.method.name
    labels = cfg.get("demo_labels", "original")
    source = demo_source_name(cfg)
    words = condition_words(labels, source)
    return search.assign(
        method_label=f"{label} ({words})" if words else label,
        dataset=cfg.dataset.name,
        demos=int(cfg.demos),
        seed=int(cfg.seed),
        order_seed=cfg.order_seed,
        demo_labels=labels,
        demo_source=source,
    )


@dataclass
class _Answered:
    """What turns a method's answers into a job's predictions.parquet and metrics.json: the queries, the label words,
    the model's tokenizer and the job's counts (n_queries, n_demos, ...)."""

    queries: list[Example]
    label_words: list[str] | None
    lm: LoadedModel
    dataset: DictConfig
    first_token_shared: bool
    stats: DictConfig
    counts: dict[str, int]

    def write(self, result: MethodOutput, out: Path) -> Any:
        """Write predictions.parquet into `out`; returns its frame."""
        df = outputs.predictions_frame(
            result, self.queries, self.label_words, self.lm, self.dataset, self.first_token_shared
        )
        io.write_parquet(out / io.PREDICTIONS, df)
        return df

    def metrics(self, result: MethodOutput) -> dict[str, Any]:
        """metrics.json's means and intervals over the queries, and the job's counts."""
        m = outputs.job_metrics(result, self.queries, self.label_words, self.stats, self.first_token_shared)
        return {**m, **self.counts}


def _write_companion(cfg: DictConfig, out: Path, companion: Companion, answered: _Answered) -> None:
    """A Companion's job folder (out/companions/<name>): its own config.yaml (this job's, with the companion's
    method overrides), the same queries.json and demos.jsonl, its predictions, metrics, curve and a done status."""
    child = out / COMPANIONS / companion.name
    child.mkdir(parents=True, exist_ok=True)
    ccfg = cfg.copy()
    with open_dict(ccfg):
        ccfg.method = OmegaConf.merge(
            OmegaConf.create(OmegaConf.to_container(cfg.method, resolve=True)), companion.method_overrides
        )
        ccfg.output_dir = str(child)
    io.write_yaml(child / io.CONFIG, resolved(ccfg))
    for name in (io.QUERIES, io.DEMOS):
        shutil.copyfile(out / name, child / name)
    answered.write(companion.output, child)
    metrics = {**answered.metrics(companion.output), **outputs.training_outputs(companion.output, child)}
    io.write_json(child / io.METRICS, metrics)
    io.write_status(child, "done", config_hash=config_hash(ccfg), companion_of=str(out), versions=versions())
    log.info("wrote %s beside %s: %s", companion.name, out.name, child)


def _queries_seen_as_demos(queries: list[Example], demos: list[Example]) -> int:
    """How many queries are, text and answer, one of the demonstrations shown with them (warned, and counted)."""
    shown = {(tuple(sorted(d.fields.items())), d.answer) for d in demos}
    seen = [q.id for q in queries if (tuple(sorted(q.fields.items())), q.answer) in shown]
    if seen:
        log.warning(
            "%d of %d queries are also demonstrations of this job (e.g. %s): their answer is in the prompt, so "
            "ICL can copy it. The test file and the demonstration file overlap: deduplicate them "
            "(metrics.json: queries_seen_as_demos)",
            len(seen),
            len(queries),
            seen[0],
        )
    return len(seen)


def _check_label_words(
    lm: LoadedModel, template: Template, query: Example, label_words: list[str] | None
) -> list[str]:
    """Every label word must encode to ordinary tokens (no unknown or special token), or its probability is moot.

    Returns the label words that share their first token with another: first-token `accuracy` cannot tell them
    apart, so it is not reported for them (label_accuracy scores whole token sequences and is unaffected).
    """
    special = set(lm.tokenizer.all_special_ids) - {None}
    first: dict[int, list[str]] = {}
    for w in label_words or []:
        ids = continuation_ids(lm.tokenizer, template.query(query.fields, w)[1])
        bad = [i for i in ids if i in special or i == lm.tokenizer.unk_token_id]
        if bad:
            raise ConfigError(
                f"label word {w!r} cannot be encoded by the tokenizer of model={lm.name}: it maps to "
                f"unknown/special token(s) {lm.tokenizer.convert_ids_to_tokens(bad)}. "
                "Change dataset.label_words to plain words."
            )
        first.setdefault(ids[0], []).append(w)
    shared = [w for group in first.values() if len(group) > 1 for w in group]
    if shared:
        token = lm.tokenizer.convert_ids_to_tokens(next(i for i, g in first.items() if len(g) > 1))
        log.warning(
            "label words %s share their first token %r: first-token accuracy cannot tell them apart, so "
            "`accuracy` is not reported (NaN, and predictions.parquet's `correct` is null); label_accuracy "
            "scores each word's whole token sequence. Words with distinct first tokens give both.",
            shared,
            token,
        )
    return shared


def _load_model(
    cfg: DictConfig, template: Template, query: Example
) -> tuple[LoadedModel, list[str] | None, list[str]]:
    """Load the model (after checking where it lives) and check eval.top_k and the label words against it."""
    resolve_source(cfg.model)  # fail fast, with where we looked, before the slow load
    lm = load_model(cfg.model)
    vocab = getattr(lm.model.config, "vocab_size", None)
    if vocab and int(cfg.eval.top_k) > vocab:
        raise ConfigError(
            f"eval.top_k={cfg.eval.top_k} exceeds the vocabulary of model={lm.name} ({vocab} tokens): lower eval.top_k."
        )
    ds = cfg.dataset
    label_words = list(OmegaConf.to_container(ds.label_words).values()) if ds.label_words else None
    shared_first = _check_label_words(lm, template, query, label_words)
    return lm, label_words, shared_first
