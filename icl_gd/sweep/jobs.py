"""The finished jobs of a sweep folder and their labels (which of them pair: pairs.py; pair names: pair_types.py).

Every job file the sweep steps read goes through `read_job_file`: a file that does not read back (truncated,
corrupt, missing) raises UnreadableJobFile, naming the job folder, the file and how to redo the job, and the
steps skip that job instead of aborting. `scan_jobs` sorts a sweep folder's jobs into finished, failed,
unreadable and unfinished; `failure_summary` is the one line that says which jobs did not finish and why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from icl_gd import io
from icl_gd.config import config_hash, identity
from icl_gd.sweep.pair_types import method_label, model_label, shown_label

log = logging.getLogger(__name__)

METHOD_ORDER = ("icl", "gd", "gd_search", "lora", "zeroshot")  # the first of a pair is the reference
ORDER_KEY = "order_seed"  # the config key that only reorders the demonstrations
LABELS_KEY = "demo_labels"  # original | shuffled: the shuffled-label null control
ORIGINAL, SHUFFLED = "original", "shuffled"
SOURCE_KEY = (
    "demo_source"  # null = the job's own task; a dataset name: demos drawn from that task (a control)
)
NO_LOGGER = {"name": "none"}
LM_KEYS = ("model", "method", "dataset")  # what a language-model job's config.yaml must hold
NOT_LM = ("linreg",)  # dataset names of jobs that are no language-model job (the regression lab)
# job files the sweep reads (search.parquet: method=gd_search's points)
PARQUET_FILES = (io.PREDICTIONS, io.DAI_LAYERS, io.DAI_QUERIES, io.SPARSITY, io.SEARCH)
# what reading a file that is truncated, corrupt, of the wrong shape or gone raises
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, yaml.YAMLError, pa.ArrowException)
T = TypeVar("T")


class EmptySweepError(ValueError):
    """The folder holds no finished language-model job: nothing to compare or report."""


class NoFinishedJobsError(EmptySweepError):
    """The folder has job folders but none finished: each failed, does not read back or is still running."""


class UnreadableJobFile(Exception):
    """A finished job's file does not read back: the message names the job folder, the file and the fix."""

    def __init__(self, folder: Path, name: str, error: BaseException | str) -> None:
        self.folder, self.name = Path(folder), name
        self.error = error if isinstance(error, str) else f"{type(error).__name__}: {_first_line(error)}"
        super().__init__(
            f"job {self.folder} is skipped: its {name} does not read back ({self.error}). {self.fix}"
        )

    @property
    def reason(self) -> str:
        """What the failure summary says of the job."""
        return f"{self.name} does not read back: {self.error}"

    @property
    def fix(self) -> str:
        """How to redo the job: the runner reruns a job unless its status.json says done and its metrics read."""
        if self.name in (io.STATUS, io.METRICS):
            return (
                f"Rerun the sweep's command (python run.py -m ...): the runner redoes a job whose {self.name} "
                "does not read back, and skips the done ones."
            )
        return (
            f"To redo the job, delete {self.folder / io.STATUS} and rerun the sweep's command "
            "(python run.py -m ...): the runner runs that job again and skips the done ones."
        )


def _first_line(e: BaseException | str) -> str:
    """An error's message, on one line (a traceback-like message keeps its first line only)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_job_file(folder: Path, name: str, read: Callable[[Path], T]) -> T:
    """read(folder / name); UnreadableJobFile (naming the job, the file and the fix) when it does not read back."""
    try:
        return read(Path(folder) / name)
    except READ_ERRORS as e:
        raise UnreadableJobFile(folder, name, e) from e


@dataclass
class Job:
    """One finished job: its folder, its resolved config and the labels it gets in tables."""

    folder: Path
    config: dict[str, Any]
    method_label: str = ""  # the method name plus what tells it apart from same-named methods of the sweep
    model_label: str = ""  # the model name, @revision when revisions vary, "(untrained)" for random_init

    def __post_init__(self) -> None:
        self.method_label = self.method_label or self.method
        self.model_label = self.model_label or model_label(self.config["model"], False)

    @property
    def method(self) -> str:
        """The method's name (gd, icl, ...), before any label."""
        return self.config["method"]["name"]

    @property
    def demo_labels(self) -> str:
        """original, or shuffled (the null control); a job written before the key existed is on the original."""
        return str(self.config.get(LABELS_KEY) or ORIGINAL)

    @property
    def shuffled(self) -> bool:
        return self.demo_labels == SHUFFLED

    @property
    def demo_source(self) -> str | None:
        """The other task the demos come from (the control demo_source=<dataset>), or None: the job's own task."""
        source = self.config.get(SOURCE_KEY)
        return None if source in (None, "", self.config["dataset"]["name"]) else str(source)

    @property
    def is_control(self) -> bool:
        """A null-control job: its demos' labels shuffled, or its demos from another task."""
        return self.shuffled or self.demo_source is not None

    @property
    def shown_label(self) -> str:
        """The method label as per-job tables show it: "gd", "gd (shuffled labels)", "gd (demos from agnews)"."""
        return shown_label(self.method_label, self.demo_labels, self.demo_source)

    def key(self, *drop: str) -> str:
        """The job's identity minus `drop` and minus `analysis` (extra measurements never change predictions)."""
        ident = identity(self.config)
        for k in (*drop, "analysis"):
            ident.pop(k, None)
        return json.dumps(ident, sort_keys=True, default=str)

    def order_rank(self) -> tuple[bool, int]:
        """Sort key within an order group: the sampled order (order_seed null) first, then by order_seed."""
        o = self.config.get(ORDER_KEY)
        return (o is not None, o or 0)

    def predictions(self, columns: list[str] | None = None) -> pd.DataFrame:
        """predictions.parquet, or only those of `columns` it has; UnreadableJobFile when it does not read back."""
        return read_job_file(self.folder, io.PREDICTIONS, lambda p: io.read_parquet(p, columns))


def _varying(dicts: list[dict[str, Any]]) -> list[str]:
    """The keys whose values differ among the dicts (a key missing from some counts as varying)."""
    keys = sorted({k for d in dicts for k in d})
    return [k for k in keys if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) > 1]


def label_jobs(jobs: list[Job]) -> list[Job]:
    """Give each job its method and model label, from what varies among the sweep's same-named methods/models."""
    by_method: dict[str, list[Job]] = {}
    by_model: dict[str, list[Job]] = {}
    for j in jobs:
        by_method.setdefault(j.method, []).append(j)
        by_model.setdefault(j.config["model"]["name"], []).append(j)
    for group in by_method.values():
        varying = _varying([j.config["method"] for j in group])
        for j in group:
            j.method_label = method_label(j.config["method"], varying)
    for group in by_model.values():
        revisions = "revision" in _varying([j.config["model"] for j in group])
        for j in group:
            j.model_label = model_label(j.config["model"], revisions)
    return jobs


@dataclass
class JobFailure:
    """A job of a sweep folder that did not finish: its folder and why (ErrorType: message)."""

    folder: Path
    reason: str


@dataclass
class SweepScan:
    """The jobs of a sweep folder (each folder with a status.json), sorted by how they ended."""

    folder: Path
    jobs: list[Job] = field(default_factory=list)  # done language-model jobs whose files read back
    other_done: list[Path] = field(default_factory=list)  # done jobs that are no language-model job (linreg)
    failed: list[JobFailure] = field(default_factory=list)  # status.json says failed
    unreadable: list[UnreadableJobFile] = field(default_factory=list)  # a file of theirs does not read back
    unfinished: list[JobFailure] = field(default_factory=list)  # running (or killed), or another state

    @property
    def n_jobs(self) -> int:
        """Every job folder, however it ended."""
        groups = (self.jobs, self.other_done, self.failed, self.unreadable, self.unfinished)
        return sum(len(g) for g in groups)

    @property
    def not_finished(self) -> list[JobFailure]:
        """The failed jobs, then those whose files do not read back (each with its reason)."""
        return [*self.failed, *(JobFailure(u.folder, u.reason) for u in self.unreadable)]


def _read_config(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        raise ValueError(f"not a mapping but {type(config).__name__}")
    return config


def _read_demo_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def _read_parquet_through(path: Path) -> None:
    """Read every row group of a parquet file (one at a time, then dropped): a corrupt page fails here."""
    pf = pq.ParquetFile(path)
    for i in range(pf.num_row_groups):
        pf.read_row_group(i)


def _check_lm_files(folder: Path) -> None:
    """UnreadableJobFile unless each file of a done language-model job that the sweep reads reads back in full
    (predictions.parquet must be there; the others where they are)."""
    for name in PARQUET_FILES:
        if name == io.PREDICTIONS or (folder / name).exists():
            read_job_file(folder, name, _read_parquet_through)
    if (folder / io.METRICS).exists():
        read_job_file(folder, io.METRICS, io.read_json)
    if (folder / io.DEMOS).exists():
        read_job_file(folder, io.DEMOS, _read_demo_ids)


def _scan_one(folder: Path, scan: SweepScan) -> None:
    """Put the job of `folder` (it has a status.json) where it belongs in `scan`."""
    try:
        st = read_job_file(folder, io.STATUS, io.read_json)
        if not isinstance(st, dict):
            raise UnreadableJobFile(folder, io.STATUS, f"not a JSON object but {type(st).__name__}")
    except UnreadableJobFile as e:
        scan.unreadable.append(e)
        return
    state = st.get("status")
    if state == "failed":
        error = _first_line(st.get("error") or "no error recorded")
        scan.failed.append(JobFailure(folder, f"{st.get('error_type') or 'Error'}: {error}"))
        return
    if state != "done":
        scan.unfinished.append(JobFailure(folder, f"status {state!r} (still running, or killed)"))
        return
    try:
        config = read_job_file(folder, io.CONFIG, _read_config)
        if (config.get("dataset") or {}).get("name") in NOT_LM:
            scan.other_done.append(folder)
            return
        missing = [k for k in LM_KEYS if not isinstance(config.get(k), dict)]
        if missing:
            raise UnreadableJobFile(folder, io.CONFIG, f"it has no {', '.join(missing)}")
        _check_lm_files(folder)
    except UnreadableJobFile as e:
        scan.unreadable.append(e)
        return
    scan.jobs.append(Job(folder, config))


def scan_jobs(sweep_dir: Path) -> SweepScan:
    """Every job under the sweep folder (a folder with a status.json), sorted by how it ended.

    It reads each done job's files through once, so a job is in or out for every step that is given the scan."""
    scan = SweepScan(Path(sweep_dir))
    for status in sorted(Path(sweep_dir).rglob(io.STATUS)):
        _scan_one(status.parent, scan)
    return scan


def load_jobs(sweep_dir: Path, scan: SweepScan | None = None) -> list[Job]:
    """Every finished language-model job under the sweep folder, each counted once, labelled (`label_jobs`).

    A done job whose files do not read back is skipped, with an error that names the job, the file and the fix."""
    scan = scan or scan_jobs(sweep_dir)
    for e in scan.unreadable:
        log.error("%s", e)
    return label_jobs(unique_jobs(list(scan.jobs)))


def finished_jobs(sweep_dir: Path, scan: SweepScan | None = None) -> tuple[list[Job], SweepScan]:
    """`load_jobs` and the scan it rests on (taken now unless given); EmptySweepError (NoFinishedJobsError, naming
    the failed jobs' errors, when the folder has jobs) when none finished."""
    scan = scan or scan_jobs(sweep_dir)
    jobs = load_jobs(sweep_dir, scan)
    if not jobs:
        raise _empty(scan)
    return jobs, scan


def _empty(scan: SweepScan) -> EmptySweepError:
    """The error for a sweep folder without a finished language-model job: why, naming the jobs, and the fix."""
    head = f"{scan.folder} holds no finished language-model job: "
    if not scan.n_jobs:
        return EmptySweepError(
            head + f"it has no job folder (no {io.STATUS} under it). Pass the sweep folder (hydra.sweep.dir) "
            f"of a multirun, or run a sweep into it first (python run.py -m ... hydra.sweep.dir={scan.folder})"
        )
    said = [s for s in (failure_summary(scan), unfinished_note(scan)) if s]
    if said:
        return NoFinishedJobsError(head + " ".join(said))
    return EmptySweepError(
        head + f"its {len(scan.other_done)} done jobs are regression-lab jobs (dataset=linreg), which write "
        "their own tables and figures into their job folders"
    )


def _name(folder: Path, sweep: Path) -> str:
    """A job folder as the summary names it: relative to the sweep folder."""
    return str(folder.relative_to(sweep)) if folder.is_relative_to(sweep) else str(folder)


def unfinished_note(scan: SweepScan) -> str | None:
    """One line naming the jobs whose status.json says neither done nor failed (running, or killed); or None."""
    if not scan.unfinished:
        return None
    return (
        f"{len(scan.unfinished)} of {scan.n_jobs} jobs in {scan.folder} have not finished: "
        + "; ".join(f"{_name(f.folder, scan.folder)} ({f.reason})" for f in scan.unfinished)
        + ". If no sweep is running them, rerun the sweep's command: it runs them again and skips the done ones."
    )


def failure_summary(scan: SweepScan) -> str | None:
    """One line naming every job of the sweep that failed or whose files do not read back, and the fix; or None.

    "2 of 4 jobs in S failed: a (ConfigError: ...); b (predictions.parquet does not read back: ...). ..." """
    bad = scan.not_finished
    if not bad:
        return None
    fixes = []
    if scan.failed:
        fixes.append(
            "fix what the errors say and rerun the sweep's command: it runs the failed jobs again and skips "
            f"the done ones (each job's traceback is in its {io.STATUS})"
        )
    if scan.unreadable:
        fixes.append(
            f"for a job whose files do not read back, delete its {io.STATUS} and rerun the sweep's command "
            f"(a job whose {io.STATUS} or {io.METRICS} does not read back is redone without that)"
        )
    return (
        f"{len(bad)} of {scan.n_jobs} jobs in {scan.folder} failed: "
        + "; ".join(f"{_name(f.folder, scan.folder)} ({f.reason})" for f in bad)
        + ". To finish the sweep, "
        + "; ".join(fixes)
        + "."
    )


def unique_jobs(jobs: list[Job]) -> list[Job]:
    """The jobs with distinct resolved configs (output_dir aside): a job run twice under two folder names (a sweep
    extended by a value equal to a default) is counted once, the first folder kept, with a warning naming both."""
    seen: dict[str, Job] = {}
    for j in jobs:
        key = config_hash(j.config)
        if key in seen:
            log.warning(
                "%s is the same job as %s (same resolved config): counted once", j.folder, seen[key].folder
            )
            continue
        seen[key] = j
    return list(seen.values())


def demo_order(job: Job) -> list[str] | None:
    """The ids of the demonstrations in the order the job used them (demos.jsonl); None when it has no such file.

    UnreadableJobFile when the file does not read back."""
    if not (job.folder / io.DEMOS).exists():
        return None
    return read_job_file(job.folder, io.DEMOS, _read_demo_ids)


def sweep_search_path(sweep_dir: Path) -> Path | None:
    """The sweep folder's gd_search.parquet (every gd_search job's points); None when the folder is itself a job folder
    (it has a status.json), whose search.parquet is that job's own and is never overwritten."""
    return None if (Path(sweep_dir) / io.STATUS).exists() else Path(sweep_dir) / io.SWEEP_SEARCH


def jobs_logger(jobs: list[Job]) -> dict[str, Any]:
    """The jobs' `logger` node (the first job's): where a sweep-level run logs unless told otherwise."""
    return (jobs[0].config.get("logger") or NO_LOGGER) if jobs else NO_LOGGER
