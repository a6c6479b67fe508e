"""A sweep folder's files as frames: what the report reads, each frame empty when its files are absent.

It reads what the jobs and the compare step wrote (comparison_queries.parquet, order_sensitivity.parquet,
search.parquet of the method=gd_search jobs, each job's predictions and, where analysis.dai / analysis.sparsity
were on, dai_*.parquet and sparsity.parquet). A job on shuffled labels (the null control) is shown as
"<method> (shuffled labels)", so that it never pools with the same method on the original labels.
A job file that does not read back skips that job's rows, with an error naming the job, the file and the fix; a
sweep file that does not read back raises SweepFileError (rerun the compare step, which rewrites it).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from icl_gd import io
from icl_gd.sweep.jobs import (
    ORDER_KEY,
    READ_ERRORS,
    Job,
    SweepScan,
    UnreadableJobFile,
    finished_jobs,
    jobs_logger,
    read_job_file,
    sweep_search_path,
)
from icl_gd.sweep.pair_types import base_label
from icl_gd.sweep.stats import settings_of

log = logging.getLogger(__name__)

META = ("model", "model_base", "revision", "random_init", "dataset", "method", "demos", "seed")
PREDICTION_COLUMNS = ["query_id", "gold", "correct", "pred_label"]  # what the accuracy tables read


class SweepFileError(ValueError):
    """A file the compare step wrote into the sweep folder does not read back: the message says to rerun it."""


@dataclass
class Sweep:
    """Everything the report reads; each frame is empty when its files are absent."""

    folder: Path
    status: Counter  # status.json state -> number of jobs (every job, finished or not)
    jobs: pd.DataFrame  # one row per finished language-model job (`job_frame`)
    queries: pd.DataFrame  # comparison_queries.parquet
    orders: pd.DataFrame  # order_sensitivity.parquet
    accuracy: pd.DataFrame  # per (reference-order job, query): META + query_id, correct
    dai_layers: pd.DataFrame  # META + dai_layers.parquet rows
    dai_queries: pd.DataFrame  # META + dai_queries.parquet rows
    sparsity: pd.DataFrame  # META + sparsity.parquet rows
    top_k: int | None  # eval.top_k when every job used the same
    logger: dict[str, Any]  # the jobs' `logger` node: where the report run logs unless told otherwise
    stats: Any = None  # the jobs' bootstrap settings (icl_gd.sweep.stats.Boot)
    skipped: int = 0  # done jobs left out because a file of theirs does not read back
    search: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # the sweep's gd_search.parquet (gd_search points)


def job_frame(jobs: list[Job]) -> pd.DataFrame:
    """One row per job: META, folder, order_seed, demo_labels, and `reference` (the first order of its order
    group); `method` is the job's `Job.shown_label` ("gd (shuffled labels)" for the null control)."""
    first: dict[str, tuple[bool, int]] = {}
    for j in jobs:
        first[j.key(ORDER_KEY)] = min(first.get(j.key(ORDER_KEY), j.order_rank()), j.order_rank())
    rows = []
    for j in jobs:
        c, o = j.config, j.config.get(ORDER_KEY)
        revision = c["model"].get("revision")
        rows.append(
            {
                "model": j.model_label,
                "model_base": base_label(j.model_label, revision),
                "revision": revision,
                "random_init": bool(c["model"].get("random_init")),
                "dataset": c["dataset"]["name"],
                "method": j.shown_label,
                "demos": int(c["demos"]),
                "seed": int(c["seed"]),
                "order_seed": o,
                "demo_labels": j.demo_labels,
                "reference": j.order_rank() == first[j.key(ORDER_KEY)],
                "sparsity_relative": bool((c.get("analysis") or {}).get("sparsity_relative")),
                "folder": str(j.folder),
            }
        )
    return pd.DataFrame(rows)


def _read(path: Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """A parquet file (only the wanted columns that it has), or an empty frame when it is absent."""
    if not path.exists():
        return pd.DataFrame()
    return io.read_parquet(path, list(columns) if columns else None)


def _read_sweep_file(folder: Path, name: str) -> pd.DataFrame:
    """A parquet file the compare step wrote (empty when absent); SweepFileError when it does not read back."""
    try:
        return _read(folder / name)
    except READ_ERRORS as e:
        raise SweepFileError(
            f"{folder / name} does not read back ({type(e).__name__}: {e}): rerun the comparison, which "
            f"rewrites it (python -m icl_gd.sweep compare {folder}), then the report"
        ) from e


def job_files(jobs: pd.DataFrame, name: str, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """The file `name` of every job that has it, stacked, each row with its job's META columns.

    A file that does not read back is left out, with an error naming the job, the file and the fix."""
    frames = []
    for _, j in jobs.iterrows():
        try:
            df = read_job_file(Path(j["folder"]), name, lambda p: _read(p, columns))
        except UnreadableJobFile as e:
            log.error("%s", e)
            continue
        if len(df):
            frames.append(df.assign(**{k: j[k] for k in META}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def label_correct(preds: pd.DataFrame) -> pd.Series:
    """Label correctness: predicted label == gold where the set has label words, else top-1 token == gold."""
    if "pred_label" in preds:
        return (preds["pred_label"] == preds["gold"]).astype(float)
    return preds["correct"].astype(float)


def status_counts(folder: Path) -> Counter:
    """How many jobs under the folder are done, failed or neither (running, killed), from their status.json."""
    return Counter(
        (io.read_status(p.parent) or {}).get("status", "unreadable") for p in folder.rglob(io.STATUS)
    )


def require_folder(folder: Path) -> None:
    """FileNotFoundError, saying what to pass, unless `folder` is a folder (both steps read a sweep folder)."""
    if not Path(folder).is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder: pass the sweep folder (hydra.sweep.dir) of a multirun"
        )


def load_sweep(folder: Path, scan: SweepScan | None = None) -> Sweep:
    """Read a sweep folder; EmptySweepError when it holds no finished language-model job (NoFinishedJobsError,
    naming the failed jobs' errors, when it has jobs but none finished), SweepFileError when a file the compare
    step wrote does not read back. scan: the folder's `scan_jobs`, when taken."""
    require_folder(folder)
    jobs, scan = finished_jobs(folder, scan)
    frame = job_frame(jobs)
    preds = job_files(frame[frame["reference"]], io.PREDICTIONS, PREDICTION_COLUMNS)
    accuracy = (
        preds.assign(correct=label_correct(preds))[[*META, "query_id", "correct"]]
        if len(preds)
        else pd.DataFrame(columns=[*META, "query_id", "correct"])
    )
    top_ks = {j.config.get("eval", {}).get("top_k") for j in jobs}
    return Sweep(
        folder=folder,
        status=status_counts(folder),
        jobs=frame,
        queries=_read_sweep_file(folder, io.COMPARISON_QUERIES),
        orders=_read_sweep_file(folder, io.ORDER_SENSITIVITY),
        accuracy=accuracy,
        dai_layers=job_files(frame, io.DAI_LAYERS),
        dai_queries=job_files(frame, io.DAI_QUERIES),
        sparsity=job_files(frame, io.SPARSITY),
        search=_read_sweep_file(folder, io.SWEEP_SEARCH) if sweep_search_path(folder) else pd.DataFrame(),
        top_k=top_ks.pop() if len(top_ks) == 1 else None,
        logger=jobs_logger(jobs),
        stats=settings_of(j.config for j in jobs),
        skipped=len(scan.unreadable),
    )
