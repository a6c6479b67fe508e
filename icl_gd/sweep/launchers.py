"""What the project adds to the submitit launchers (hydra_plugins/icl_gd_launchers): a check of timeout_min against
signal_delay_s before any job is submitted, and the record, in a job's status.json, of a job that ended without a
result (killed, out of memory, past its time limit), so that the sweep ends, says which job and why, and a rerun
with the same hydra.sweep.dir redoes only those jobs.

Timing of SLURM's time-limit signal (submitit asks for `--signal=USR2@<signal_delay_s>`): slurmctld checks time
limits every 30 s and sends the signal at the first check at which the time left is below signal_delay_s + 30 s.
A job whose whole limit is below that gets the signal at its first check, 0 to 30 s after it starts: a job still
starting Python dies of it ("srun: error: task 0: User defined signal 2"), one already in it is recorded as timed
out after seconds, so jobs fail "at random". Hence the rule: the signal may not come in a job's first 30 s.

submitit then tells a time limit from a preemption by the time the job has run: a signal before
min(80 % of the limit, the limit - 10 min) is a preemption (requeued, not counted against max_num_timeout), later
a time limit. A signal_delay_s above max(20 % of the limit, 10 min) - 30 s makes every time limit look like a
preemption, and a job too long for its limit is requeued without end. That pair is refused too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from icl_gd.errors import ConfigError

SIGNAL_CHECK_S = 30  # slurmctld's period for time-limit checks (and so for --signal)
STARTUP_S = 30  # a job's first seconds, in which no signal may come (Python, imports, submitit's handler)


def check_signal_timing(launcher: Mapping[str, Any], prefix: str = "hydra.launcher") -> None:
    """Raise ConfigError for a timeout_min / signal_delay_s pair that would kill jobs at random, or make every time
    limit look like a preemption. Launchers without signal_delay_s (submitit_local, joblib, ray) pass."""
    if "signal_delay_s" not in launcher or launcher.get("timeout_min") is None:
        return
    timeout_min, delay = launcher["timeout_min"], launcher.get("signal_delay_s") or 0
    if not isinstance(timeout_min, (int, float)) or timeout_min <= 0:
        raise ConfigError(
            f"{prefix}.timeout_min={timeout_min!r}: the time limit in minutes must be a number > 0"
        )
    if not isinstance(delay, (int, float)) or delay < 0:
        raise ConfigError(f"{prefix}.signal_delay_s={delay!r}: the seconds before the limit must be >= 0")
    limit = timeout_min * 60
    earliest = limit - delay - SIGNAL_CHECK_S  # seconds into the job at which the signal may come
    if earliest < STARTUP_S:
        need = math.ceil((delay + SIGNAL_CHECK_S + STARTUP_S) / 60)
        max_delay = limit - SIGNAL_CHECK_S - STARTUP_S
        lower = f", or lower {prefix}.signal_delay_s to {int(max_delay)} or less" if max_delay >= 0 else ""
        raise ConfigError(
            f"{prefix}.timeout_min={timeout_min} with {prefix}.signal_delay_s={delay} would kill jobs at random: "
            f"submitit has SLURM send its time-limit signal (USR2) {delay} s before the {limit:.0f} s limit, and "
            f"SLURM sends it at its first 30-second check once less than {delay + SIGNAL_CHECK_S} s are left, so "
            f"here as early as {max(earliest, 0):.0f} s into a job: one still starting Python dies of it, one "
            f"already running is stopped as timed out. Set {prefix}.timeout_min to {need} or more{lower}."
        )
    preempt_before = min(0.8 * limit, limit - 600)  # submitit: a signal before this is a preemption
    if earliest < preempt_before:
        max_delay = max(0.2 * limit, 600) - SIGNAL_CHECK_S
        raise ConfigError(
            f"{prefix}.signal_delay_s={delay} is too long for {prefix}.timeout_min={timeout_min}: submitit takes a "
            f"signal that comes more than max(20% of the limit, 10 min) before the limit for a preemption and "
            f"requeues the job without counting it against max_num_timeout, so a job too long for its limit "
            f"would be requeued without end. Set {prefix}.signal_delay_s to {int(max_delay)} or less."
        )


def record_ended_without_result(
    folder: Path, job_id: str, state: str, error: BaseException, logs: list[Path], launcher: Mapping[str, Any]
) -> str:
    """Write status.json `failed` for a job whose process ended without a result (unless it says done or failed
    already: then it stands). Returns the line said about it."""
    from icl_gd import io  # noqa: PLC0415 -- pandas/pyarrow, only when a job went wrong

    st = None
    try:
        st = io.read_status(folder)
    except Exception:  # unreadable: replaced by the record below
        st = None
    state = (state or "UNKNOWN").upper()
    why = {
        "CANCELLED": "cancelled (scancel, or preempted and not requeued)",
        "TIMEOUT": f"killed at its time limit (timeout_min={launcher.get('timeout_min')})",
        "OUT_OF_MEMORY": f"killed for memory (mem_gb={launcher.get('mem_gb')})",
        "NODE_FAIL": "lost with its node",
        "PREEMPTED": "preempted and not requeued",
        "FAILED": "its process died (killed by a signal, or exited before writing a result)",
        "INTERRUPTED": "its process was killed (submitit_local: a signal, or out of memory)",
        "FINISHED": "its process died without writing a result (submitit_local: killed by a signal, or out of memory)",
    }.get(state.split()[0], f"its process ended in state {state}")
    # submitit's message: "Job <id> (task: 0) with path <result.pkl>\nhas not produced any output (state: X)\n
    # Error stream produced: ..." -- its first two lines, as one
    said = str(error).split("Error stream produced")[0].split("Traceback")[0]
    first = " ".join(said.split()) or type(error).__name__
    first = first if first.endswith(".") else first + "."
    line = (
        f"job {job_id} ended without a result: {why}. {first} Its log: {', '.join(map(str, logs))}. "
        "Rerun the sweep's command with the same hydra.sweep.dir: it redoes this job and skips the done ones."
    )
    if st is not None and st.get("status") in ("done", "failed"):
        return line
    extra = {k: st[k] for k in ("config_hash",) if st and k in st}
    folder.mkdir(parents=True, exist_ok=True)
    io.write_status(
        folder,
        "failed",
        **extra,
        error_type=f"JobEnded{state.split()[0].title().replace('_', '')}",
        error=line,
        launcher_job_id=job_id,
        launcher_state=state,
    )
    return line


def note_time_limit(folder: Path, launcher: Mapping[str, Any], ran_s: float) -> None:
    """After a job that got submitit's time-limit signal and was not requeued: its status.json (failed with
    submitit's UncompletedJobError, raised in the runner by the signal) says so in words, with the fix."""
    from icl_gd import io  # noqa: PLC0415

    try:
        st = io.read_status(folder)
    except Exception:
        return
    if not st or st.get("status") != "failed" or st.get("error_type") != "UncompletedJobError":
        return
    st["error"] = (
        f"stopped at its time limit: hydra.launcher.timeout_min={launcher.get('timeout_min')}, and the job got "
        f"the time-limit signal {launcher.get('signal_delay_s')} s before it, after {ran_s:.0f} s "
        f"(submitit: {st.get('error')}). Raise hydra.launcher.timeout_min, or let submitit requeue it with "
        f"hydra.launcher.max_num_timeout=N (a requeued job starts over), and rerun the sweep: it redoes this job."
    )
    st["error_type"] = "TimeLimit"
    io.write_json(folder / io.STATUS, st)
