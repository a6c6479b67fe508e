"""How many CPU threads one job's torch uses: the machine's cores shared among the jobs that run at once.

torch starts one thread per core in every process. Under the joblib launcher, n_jobs processes each start that
many, and the oversubscribed threads spin against each other: measured here (2 cores, two ICL jobs at once, agnews,
8 demos, 20 queries), 27.7 s per job with torch's default threads against 14.5 s with one thread each (1.9x).
`threads: auto` gives each of a joblib sweep's parallel jobs its share of the cores; elsewhere (one job at a time,
or a cluster launcher that reserves CPUs per job, or OMP_NUM_THREADS set by the user) torch's default stands. An
integer sets it outright. Each job's status.json records the threads it ran with (`torch_threads`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

AUTO = "auto"
OMP_ENV = "OMP_NUM_THREADS"
JOBLIB = "joblib"  # the launcher whose jobs share this machine's cores (its _target_ names it)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def concurrent_jobs(launcher: Mapping[str, Any] | None, cores: int) -> int:
    """How many jobs a launcher runs at once on this machine: a joblib launcher's n_jobs (-1 = one per core,
    -2 = all cores but one, as joblib counts), 1 for any other launcher (basic: one after another)."""
    if not launcher or JOBLIB not in str(launcher.get("_target_", "")).lower():
        return 1
    n = int(launcher.get("n_jobs") or 1)
    return max(1, n if n > 0 else cores + 1 + n)


def job_threads(setting: Any, cores: int, concurrent: int) -> int | None:
    """The job's torch threads: `setting` when it is an integer; for `auto`, cores // concurrent (at least one)
    when jobs share the machine, None (torch's default) when a job has it to itself."""
    if setting != AUTO:
        return int(setting)
    return max(1, cores // concurrent) if concurrent > 1 else None


def apply(setting: Any, launcher: Mapping[str, Any] | None) -> int | None:
    """Set torch's thread count for this job process (see `job_threads`); returns what was set, or None."""
    if setting == AUTO and os.environ.get(OMP_ENV):
        return None  # the user's own choice, which torch has already read
    cores = usable_cores()
    n = job_threads(setting, cores, concurrent_jobs(launcher, cores))
    if n is not None:
        import torch  # noqa: PLC0415 -- only when there is something to set

        torch.set_num_threads(n)
    return n
