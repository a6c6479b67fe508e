"""Compare the jobs of a sweep: ICL against GD (or any other method), beside the ICL-vs-ICL order noise floor.

Pairs come from `icl_gd.sweep.jobs.find_pairs`. Per query (joined on query id) it computes the DESIGN.md metrics
from the stored top-K and distributions; `comparison.parquet` holds one row per (pair, metric) with mean and 95%
t-interval, `comparison_queries.parquet` the per-query values, `order_sensitivity.parquet` the std across demo
orders, `gd_search.parquet` every method=gd_search job's search points (`icl_gd.sweep.search.search_rows`), and
`comparison.md` the table aggregated over seeds.

    python -m icl_gd.sweep compare outputs/adhoc/2026-11-25_12-00-00
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from icl_gd import io
from icl_gd import metrics as M
from icl_gd.sweep import stats
from icl_gd.sweep.comparison_md import (
    NO_PAIRS,
    TABLE_METRICS,
    console_markdown,
    left_out_md,
    order_markdown,
    to_markdown,
    verdict_markdown,
)
from icl_gd.sweep.jobs import Job, SweepScan, UnreadableJobFile, finished_jobs, jobs_logger, sweep_search_path
from icl_gd.sweep.logger import job_runs, log_run, pick_logger
from icl_gd.sweep.order import order_sensitivity, order_table
from icl_gd.sweep.pairs import find_pairs
from icl_gd.sweep.search import search_rows
from icl_gd.sweep.stats import wide_ci, with_half_widths
from icl_gd.sweep.summary import PAIR_KEYS, summarize, with_zero_shot_distances
from icl_gd.sweep.verdicts import CELL_KEYS
from icl_gd.tracking import PREDICTIONS_ARTIFACT

if TYPE_CHECKING:
    from icl_gd.tracking import Tracker

log = logging.getLogger(__name__)

TABLE_KEYS = ["model", "dataset", "demos", "eval", "pair_type"]
EVAL_KEYS = ("top_k", "n_queries", "save_full_dist")


def _stack(col: pd.Series, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A column of equal-length arrays as one (rows, length) tensor."""
    return torch.as_tensor(np.stack(col.to_numpy()), dtype=dtype)


def _dists(col: pd.Series) -> torch.Tensor:
    """A column of float16 byte strings (full next-token distributions) as one float32 (rows, vocab) tensor."""
    return torch.from_numpy(np.stack([np.frombuffer(b, dtype=np.float16) for b in col]).astype(np.float32))


def _label_metrics(j: pd.DataFrame) -> dict[str, np.ndarray]:
    """Agreement and divergences over the label words, each job's label probabilities renormalised."""
    la = M.renormalize(_stack(j.label_probs_a, torch.float64))
    lb = M.renormalize(_stack(j.label_probs_b, torch.float64))
    return {
        "label_agreement": M.argmax_agreement(la, lb).numpy(),
        "label_tv": M.total_variation(la, lb).numpy(),
        "label_js": M.js_divergence(la, lb).numpy(),
        "label_kl": M.kl_divergence(la, lb).numpy(),
    }


def _full_metrics(j: pd.DataFrame) -> dict[str, np.ndarray]:
    """Divergences over the full vocabulary (float16 storage: sums drift slightly from 1, so renormalised)."""
    fa = M.renormalize(_dists(j.full_dist_a).double())
    fb = M.renormalize(_dists(j.full_dist_b).double())
    return {
        "tv": M.total_variation(fa, fb).numpy(),
        "js": M.js_divergence(fa, fb).numpy(),
        "kl": M.kl_divergence(fa, fb).numpy(),
    }


def _label_correct(j: pd.DataFrame, suffix: str) -> np.ndarray:
    """Label accuracy of one side of a joined frame: predicted label word == gold where the set has label
    words, else top-1 token == gold (as `icl_gd.sweep.loading.label_correct`)."""
    if f"pred_label{suffix}" in j and f"gold{suffix}" in j:
        return (j[f"pred_label{suffix}"] == j[f"gold{suffix}"]).astype(float).to_numpy()
    return j[f"correct{suffix}"].astype(float).to_numpy()


def pair_metrics(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per-query comparison metrics of two prediction frames joined on query id."""
    j = a.merge(b, on="query_id", suffixes=("_a", "_b"))
    if len(j) == 0:
        raise ValueError("the two jobs share no query ids: they were not run on the same queries")
    ids_a, ids_b = _stack(j.topk_ids_a, torch.long), _stack(j.topk_ids_b, torch.long)
    pa, pb = _stack(j.topk_probs_a, torch.float64), _stack(j.topk_probs_b, torch.float64)
    out = {
        "query_id": j.query_id,
        "overlap@k": M.topk_overlap(ids_a, ids_b).numpy(),
        "ocs": M.overlap_cosine(ids_a, pa, ids_b, pb).numpy(),
        # the number of tokens OCS is computed over
        "ocs_n_common": (M.topk_overlap(ids_a, ids_b) * ids_a.shape[1]).numpy(),
        "top1_agreement": (ids_a[:, 0] == ids_b[:, 0]).double().numpy(),
        "accuracy_a": j.correct_a.astype(float).to_numpy(),
        "accuracy_b": j.correct_b.astype(float).to_numpy(),
        # what the accuracy figure and the headline table show (loading.label_correct, per query)
        "label_accuracy_a": _label_correct(j, "_a"),
        "label_accuracy_b": _label_correct(j, "_b"),
    }
    if "label_probs_a" in j and "label_probs_b" in j:
        out.update(_label_metrics(j))
    if "full_dist_a" in j and "full_dist_b" in j:
        out.update(_full_metrics(j))
    return pd.DataFrame(out)


def _describe(job_a: Job, job_b: Job, pair_type: str) -> dict[str, Any]:
    """The columns that name a pair in both comparison files."""
    c = job_a.config
    return {
        "pair_type": pair_type,
        "method_a": job_a.method_label,
        "method_b": job_b.method_label,
        "model": job_a.model_label,
        "revision": c["model"].get("revision"),
        "random_init": bool(c["model"].get("random_init")),
        "dataset": c["dataset"]["name"],
        "demos": c["demos"],
        "seed": c["seed"],
        "order_seed_a": c.get("order_seed"),
        "order_seed_b": job_b.config.get("order_seed"),
        "eval": eval_signature(c),
        "job_a": str(job_a.folder),
        "job_b": str(job_b.folder),
    }


def eval_signature(config: dict[str, Any]) -> str:
    """The evaluation settings a pair's numbers depend on: pairs pool only within one signature."""
    ev = config.get("eval") or {}
    return (
        ",".join(f"{k}={ev.get(k)}" for k in EVAL_KEYS) + f",split_seed={config['dataset'].get('split_seed')}"
    )


def compare_jobs(jobs: list[Job]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary rows, per-query rows) for every pair among `jobs`; see `summarize` for the summary.

    A job whose predictions do not read back is left out of every pair, with one error naming it and the fix."""
    cache: dict[Path, pd.DataFrame | None] = {}

    def preds(job: Job) -> pd.DataFrame | None:
        if job.folder not in cache:
            try:
                cache[job.folder] = job.predictions()
            except UnreadableJobFile as e:
                log.error("%s", e)
                cache[job.folder] = None
        return cache[job.folder]

    per_query = []
    for pair_type, a, b in find_pairs(jobs):
        pa, pb = preds(a), preds(b)
        if pa is not None and pb is not None:
            per_query.append(pair_metrics(pa, pb).assign(**_describe(a, b, pair_type)))
    if not per_query:
        return pd.DataFrame(), pd.DataFrame()
    queries = with_zero_shot_distances(pd.concat(per_query, ignore_index=True))
    return summarize(queries), queries


def aggregate(per_query: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% half-width (`metric_ci`) of each metric per TABLE_KEYS, pooling queries and seeds."""
    metrics = [c for c in per_query.columns if c in TABLE_METRICS or c.startswith("accuracy")]
    return with_half_widths(wide_ci(per_query, TABLE_KEYS, metrics), metrics)


def with_run_ids(summary: pd.DataFrame, runs: dict[Path, dict[str, Any]]) -> pd.DataFrame:
    """comparison.parquet's rows with the W&B run ids of both jobs (`run_id_a`, `run_id_b`): a demo-set row's
    two jobs; a pooled row (no job) the ids of every job of its cell and pair, comma-separated."""
    ids = {str(f): r["run_id"] or "" for f, r in runs.items()}
    out = summary.copy()
    keys = [k for k in (*CELL_KEYS, *PAIR_KEYS) if k in out.columns]
    for side in ("a", "b"):
        job = out[f"job_{side}"] if f"job_{side}" in out else pd.Series(None, index=out.index, dtype=object)
        own = job.map(lambda f: ids.get(str(f), "") if isinstance(f, str) else None)
        joined = (
            own.groupby([out[k].astype(str) for k in keys]).transform(
                lambda v: ",".join(sorted(set(v.dropna()) - {""}))
            )
            if keys
            else own
        )
        out[f"run_id_{side}"] = own.where(own.notna(), joined)
    return out


def _send(
    summary: pd.DataFrame, table: pd.DataFrame, per_query: pd.DataFrame, jobs: list[Job], sweep_dir: Path
):
    """What the W&B `compare` run logs: the comparison as Tables (one row per cell, pair and metric, with both
    jobs' run ids; the pooled table; the per-query values), the jobs' predictions artifacts as its inputs."""
    runs = job_runs([j.folder for j in jobs], sweep_dir, jobs_logger(jobs))

    def send(tracker: Tracker) -> None:
        for r in runs.values():
            tracker.use_artifact(r["artifact"], type=PREDICTIONS_ARTIFACT)
        tracker.log_table("comparison", with_run_ids(summary, runs))
        tracker.log_table("comparison_cells", table)
        tracker.log_table("comparison_queries", per_query)
        tracker.summary(
            {"n_jobs": len(jobs), "n_pairs": int(summary["job_a"].nunique()) if "job_a" in summary else 0}
        )

    return send, {"input_artifacts": [r["artifact"] for r in runs.values()]}


def _drop_stale(path: Path) -> None:
    """Remove a file an earlier comparison wrote that this one has no rows for: the report must not read it."""
    if path.exists():
        path.unlink()
        log.info("removed %s: written by an earlier comparison, it has no rows now", path)


def _write_orders(sweep_dir: Path, jobs: list[Job]) -> str:
    """Write order_sensitivity.parquet when the sweep has order groups; returns its markdown section (or "")."""
    orders = order_sensitivity(jobs)
    if orders.empty:
        _drop_stale(sweep_dir / io.ORDER_SENSITIVITY)
        return ""
    io.write_parquet(sweep_dir / io.ORDER_SENSITIVITY, orders)
    return "\n## Order sensitivity\n\n" + order_markdown(order_table(orders))


def _write_search(sweep_dir: Path, jobs: list[Job]) -> str:
    """Write the sweep's gd_search.parquet when gd_search jobs wrote search points; returns a line for comparison.md."""
    path = sweep_search_path(sweep_dir)
    if path is None:  # the folder is a job folder: its search.parquet is the job's own
        return ""
    rows = search_rows(jobs)
    if rows.empty:
        _drop_stale(path)
        return ""
    io.write_parquet(path, rows)
    return (
        f"\n_GD search: {len(rows)} points ({int(rows['collapsed'].sum())} collapsed) of {rows['job'].nunique()} "
        f'gd_search jobs in {io.SWEEP_SEARCH}; the report\'s section "GD given its best chance" shows them._\n'
    )


def compare_sweep(
    sweep_dir: str | Path, logger_cfg: Any = None, scan: SweepScan | None = None
) -> pd.DataFrame:
    """Compare every pair of a sweep folder, write the files, print the table, log a W&B `compare` run.

    logger_cfg: a `logger` node ({name: none} / {name: wandb, ...}); None = the jobs' own logger.
    EmptySweepError when the folder holds no finished language-model job (NoFinishedJobsError, naming the
    failed jobs' errors, when it has jobs but none finished); a done job whose files do not read back is
    skipped, with an error naming the job, the file and the fix. scan: the folder's `scan_jobs`, when taken.
    """
    sweep_dir = Path(sweep_dir)
    jobs, scan = finished_jobs(sweep_dir, scan)
    stats.use(stats.settings_of(j.config for j in jobs))
    summary, per_query = compare_jobs(jobs)
    order_md = _write_orders(sweep_dir, jobs) + _write_search(sweep_dir, jobs)
    title = f"# Comparison of {len(jobs)} jobs in {sweep_dir}\n" + left_out_md(scan)
    io.write_parquet(sweep_dir / io.COMPARISON, summary)
    if summary.empty:
        log.warning("no comparable pairs among the %d finished jobs in %s", len(jobs), sweep_dir)
        _drop_stale(sweep_dir / io.COMPARISON_QUERIES)
        io.write_text(sweep_dir / io.COMPARISON_MD, title + NO_PAIRS + order_md)
        return summary
    table = aggregate(per_query)
    io.write_parquet(sweep_dir / io.COMPARISON_QUERIES, per_query)
    md = title + "\n" + to_markdown(table) + verdict_markdown(summary) + order_md
    io.write_text(sweep_dir / io.COMPARISON_MD, md)
    # the answer, where the user ran the command: short (all of it is in comparison.md)
    print(console_markdown(title, table, summary, str(sweep_dir / io.COMPARISON_MD)), flush=True)

    send, config = _send(summary, table, per_query, jobs, sweep_dir)
    log_run(sweep_dir, "compare", pick_logger(logger_cfg or None, jobs_logger(jobs)), send, config)
    return summary
