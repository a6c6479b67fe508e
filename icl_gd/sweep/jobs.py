"""The finished jobs of a sweep folder, their labels, and the rules that pair them.

Two jobs form a pair when their resolved configs agree on everything but the method (a method pair), or when
they are of one method label and differ only in `order_seed` (an order pair `<label>_vs_<label>_order`: the noise
floor of that method; ICL's, `icl_vs_icl_order`, is the floor every verdict is tested against, GD's is
`gd_vs_gd_order`), unless the two realised orders (demos.jsonl) are equal. The shuffled-label null control
(`demo_labels=shuffled`: the demos' answers permuted among them) pairs an ICL job on the original labels with each
job on shuffled labels whose config is otherwise its own but for the method: `icl_vs_<label>_shuffled_labels`. Jobs
on shuffled labels pair among themselves as any jobs do, their pair types marked `_both_shuffled`, so that they
never pool with the pairs on the original labels (nor feed the floor).

Every job file the sweep steps read goes through `read_job_file`: a file that does not read back (truncated,
corrupt, missing) raises UnreadableJobFile, naming the job folder, the file and how to redo the job, and the
steps skip that job instead of aborting. `scan_jobs` sorts a sweep folder's jobs into finished, failed,
unreadable and unfinished; `failure_summary` is the one line that says which jobs did not finish and why.
"""

from __future__ import annotations

import itertools
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

log = logging.getLogger(__name__)

METHOD_ORDER = ("icl", "gd", "gd_search", "lora", "zeroshot")  # the first of a pair is the reference
ORDER_SUFFIX = "_order"  # an order pair is "<label>_vs_<label>_order"
ORDER_PAIR = "icl_vs_icl_order"  # THE floor: ICL against ICL in another order (verdicts test against it)
GD_ORDER_PAIR = "gd_vs_gd_order"  # GD's noise floor: GD against GD with the same demos in another order
ORDER_KEY = "order_seed"  # the config key that only reorders the demonstrations
LABELS_KEY = "demo_labels"  # original | shuffled: the shuffled-label null control
ORIGINAL, SHUFFLED = "original", "shuffled"
SHUFFLED_SUFFIX = "_shuffled_labels"  # the control: ICL (original labels) vs a job on shuffled labels
BOTH_SHUFFLED = "_both_shuffled"  # a method or order pair of two jobs that are both on shuffled labels
SHUFFLED_WORDS = "shuffled labels"  # how tables and the report name the control
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
    def shown_label(self) -> str:
        """The method label as per-job tables show it: "gd", "gd (shuffled labels)" for the null control."""
        return shown_label(self.method_label, self.demo_labels)

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


def shown_label(label: str, demo_labels: Any) -> str:
    """A method label with " (shuffled labels)" when its job's demos are on shuffled labels (the null control)."""
    return f"{label} ({SHUFFLED_WORDS})" if str(demo_labels or ORIGINAL) == SHUFFLED else label


def order_pair(label: str) -> str:
    """The order pair of a method label: "icl" -> "icl_vs_icl_order" (ORDER_PAIR), "gd" -> "gd_vs_gd_order"."""
    return f"{label}_vs_{label}{ORDER_SUFFIX}"


def shuffled_pair(label_a: str, label_b: str) -> str:
    """The null control's pair type: ICL on the original labels vs `label_b` on shuffled ones."""
    return f"{label_a}_vs_{label_b}{SHUFFLED_SUFFIX}"


def is_both_shuffled(pair_type: str) -> bool:
    """A pair of two jobs both on shuffled labels (a method or an order pair among them)."""
    return pair_type.endswith(BOTH_SHUFFLED)


def is_control(pair_type: str) -> bool:
    """The shuffled-label null control: ICL on the original labels vs a job on shuffled labels."""
    return pair_type.endswith(SHUFFLED_SUFFIX)


def order_label(pair_type: str) -> str | None:
    """The method label of an order pair ("gd_vs_gd_order" -> "gd", also when `_both_shuffled`); None otherwise."""
    base = pair_type.removesuffix(BOTH_SHUFFLED)
    if not base.endswith(ORDER_SUFFIX):
        return None
    a, sep, b = base.removesuffix(ORDER_SUFFIX).partition("_vs_")
    return a if sep and a == b else None


def is_order_pair(pair_type: str) -> bool:
    """An order pair of any method (a noise floor), on original or on shuffled labels."""
    return order_label(pair_type) is not None


def _fmt(v: Any) -> str:
    """A config value as a label shows it: floats in their shortest form (1e-3 -> "0.001")."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def method_label(method: dict[str, Any], varying: list[str]) -> str:
    """`tag` when set, else the name plus the `varying` keys that are set: "gd", "gd(lr=0.001)", "gd(batch_size=all)"."""
    if method.get("tag"):
        return str(method["tag"])
    shown = [
        f"{k}={_fmt(method[k])}" for k in varying if k not in ("name", "tag") and method.get(k) is not None
    ]
    return f"{method['name']}({','.join(shown)})" if shown else str(method["name"])


def model_label(model: dict[str, Any], show_revision: bool) -> str:
    """The model name, "@revision" when the sweep holds several revisions, " (untrained)" for random weights."""
    label = str(model["name"])
    if show_revision and model.get("revision"):
        label += f"@{model['revision']}"
    return label + (" (untrained)" if model.get("random_init") else "")


def base_label(label: str, revision: Any) -> str:
    """The model label without its "@revision": the model whose checkpoints a weight-evolution figure follows."""
    return label.replace(f"@{revision}", "") if isinstance(revision, str) and revision else label


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


def _groups(jobs: list[Job], *drop: str) -> list[list[Job]]:
    """The jobs grouped by `Job.key(*drop)`, in the order their keys first appear."""
    by_key: dict[str, list[Job]] = {}
    for j in jobs:
        by_key.setdefault(j.key(*drop), []).append(j)
    return list(by_key.values())


def _marked(pair_type: str, a: Job) -> str:
    """A pair type, marked `_both_shuffled` when its jobs are on shuffled labels (their key holds demo_labels)."""
    return pair_type + BOTH_SHUFFLED if a.shuffled else pair_type


def _order_pairs(jobs: list[Job]) -> list[tuple[str, Job, Job]]:
    """Jobs of one method label differing only in order_seed, unless their realised orders (demos.jsonl) are equal."""
    pairs = []
    for group in _groups(jobs, ORDER_KEY):  # the key holds the method config: one label per group
        group.sort(key=Job.order_rank)
        for a, b in itertools.combinations(group, 2):
            order_a = demo_order(a)
            if order_a is not None and order_a == demo_order(b):  # the same realised order is no pair
                log.warning("no order pair: %s and %s used the same demo order", a.folder.name, b.folder.name)
                continue
            pairs.append((_marked(order_pair(a.method_label), a), a, b))
    return pairs


def _control_pairs(jobs: list[Job]) -> list[tuple[str, Job, Job]]:
    """The shuffled-label control: each ICL job on the original labels in the sampled order (order_seed null)
    against every job on shuffled labels whose config is otherwise its own, the method aside."""
    icl: dict[str, list[Job]] = {}
    for j in jobs:
        if j.method == "icl" and not j.shuffled and j.config.get(ORDER_KEY) is None:
            icl.setdefault(j.key("method", LABELS_KEY), []).append(j)
    pairs = []
    for b in (j for j in jobs if j.shuffled):
        for a in icl.get(b.key("method", LABELS_KEY), []):
            pairs.append((shuffled_pair(a.method_label, b.method_label), a, b))
    return pairs


def find_pairs(jobs: list[Job]) -> list[tuple[str, Job, Job]]:
    """(pair type, reference job, other job): method pairs, order pairs of every method, the shuffled-label control.

    Method pairs agree on all but the method: jobs on shuffled and on original labels differ in `demo_labels`, so
    they are never a method pair (only the control pairs them), and pairs among shuffled jobs are `_both_shuffled`.
    """
    pairs = []
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    for group in _groups(jobs, "method"):
        group.sort(key=lambda j: (rank.get(j.method, len(rank)), j.method_label))
        for a, b in itertools.combinations(group, 2):
            if a.method_label != b.method_label:
                pairs.append((_marked(f"{a.method_label}_vs_{b.method_label}", a), a, b))
    return pairs + _order_pairs(jobs) + _control_pairs(jobs)
