"""Sweeps on a real single-node SLURM cluster (slurmctld + slurmd + munged, started here: tests/helpers/slurm_cluster.py)
through hydra/launcher=submitit_slurm: a sweep of icl and gd jobs compared once at the end; a job killed mid-run
recorded failed while the sweep ends, and a rerun redoing only it; a preempted job requeued, the finished ones kept;
a job at its time limit recorded with the reason; and pairs of timeout_min / signal_delay_s that would kill jobs at
random refused before anything is submitted.

Without root, or without SLURM and apt-get, the cluster tests skip with the reason. The cluster has no accounting:
its sacct stand-in (bin/sacct, first on PATH) reports job states from squeue.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from icl_gd import io
from icl_gd.errors import ConfigError
from icl_gd.sweep.launchers import check_signal_timing
from tests.helpers.cli import run_py
from tests.helpers.config import ROOT, job_folder, subprocess_env
from tests.helpers.slurm_cluster import LocalSlurm, array_job_ids, squeue, start_cluster, wait_for

pytestmark = pytest.mark.filterwarnings(
    r"ignore:\s*'hydra/launcher/\w+' is validated against ConfigStore schema:UserWarning"
)
# every job: the tiny random model, few queries, 2 (of the node's 4 declared) CPUs, so two jobs run at once
BASE = (
    "-m",
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.cpus_per_task=2",
    "hydra.launcher.mem_gb=2",
    "model=tiny_random",
    "demos=2",
    "eval.n_queries=4",
    "logger=none",
)
# a gd job of this many epochs runs for minutes on the tiny model: long enough to be killed, preempted or timed out
LONG = 100_000


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    yield from start_cluster(tmp_path_factory.mktemp("slurm"))


def env_for(cluster: LocalSlurm) -> dict[str, str]:
    env = cluster.env(subprocess_env())
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def command(sweep: Path, *args: str) -> list[str]:
    return [sys.executable, "run.py", *BASE, *args, f"hydra.sweep.dir={sweep}"]


def start(cluster: LocalSlurm, sweep: Path, *args: str) -> subprocess.Popen:
    sweep.parent.mkdir(parents=True, exist_ok=True)
    log = open(sweep.parent / f"{sweep.name}.log", "a")  # noqa: SIM115 -- the child's, closed by finish()
    return subprocess.Popen(
        command(sweep, *args), cwd=ROOT, env=env_for(cluster), stdout=log, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, sweep: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(
            f"the sweep did not end within {timeout:.0f} s (it hangs on a job?)\n{log_of(sweep)[-3000:]}"
        )
    finally:
        proc.stdout and proc.stdout.close()
    return log_of(sweep)


def log_of(sweep: Path) -> str:
    return (sweep.parent / f"{sweep.name}.log").read_text()


def status(sweep: Path, name: str) -> dict:
    return io.read_status(sweep / name) or {}


def folder(epochs: int) -> str:
    return job_folder(
        "demos=2", "eval.n_queries=4", f"method.epochs={epochs}", "method=gd", "model=tiny_random"
    )


def started(sweep: Path, name: str) -> bool:
    """Whether the job's runner has started (status.json `running`); fails at once if it failed instead."""
    st = status(sweep, name)
    assert st.get("status") != "failed", f"{name} failed: {st.get('error')}"
    return st.get("status") == "running"


def task_of(sweep: Path, index: int) -> str:
    """The SLURM id (<array>_<index>) of the sweep's job number `index`."""
    ids = [i for i in array_job_ids(sweep) if i.endswith(f"_{index}")]
    assert len(ids) == 1, ids
    return ids[0]


def result_files(job: Path) -> dict[str, int]:
    return {str(p.relative_to(job)): p.stat().st_mtime_ns for p in job.glob("*.*") if p.suffix != ".log"}


# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_icl_and_gd_sweep_runs_as_slurm_jobs_and_is_compared_once(slurm: LocalSlurm, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    started = time.monotonic()
    proc = run_py(
        *BASE, "method=icl,gd", "seed=0,1", f"hydra.sweep.dir={sweep}", env=env_for(slurm), timeout=600
    )
    out = proc.stdout + proc.stderr
    print(f"4-job SLURM sweep: {time.monotonic() - started:.0f} s")
    jobs = {p.parent.name: p.parent for p in sweep.glob("*/status.json")}
    cfgs = [yaml.safe_load((job / "config.yaml").read_text()) for job in jobs.values()]
    assert sorted((c["method"]["name"], c["seed"]) for c in cfgs) == [
        ("gd", 0),
        ("gd", 1),
        ("icl", 0),
        ("icl", 1),
    ]
    for job in jobs.values():
        assert json.loads((job / "status.json").read_text())["status"] == "done"
        assert len(pd.read_parquet(job / "predictions.parquet")) == 4
        assert (job / "metrics.json").exists() and (job / "config.yaml").exists()
    # each job was a task of one SLURM job array, which slurmctld ran to completion
    ids = array_job_ids(sweep)
    assert len(ids) == 4 and len({i.split("_")[0] for i in ids}) == 1
    for i in ids:
        assert squeue(slurm, i) == "COMPLETED"
        assert list((sweep / ".submitit" / i).glob("*_result.pkl"))
    # the comparison and the report ran once, at the end, in the launching process, over every job
    assert out.count("# Comparison of 4 jobs") == 1
    comp = pd.read_parquet(sweep / "comparison.parquet")
    comp = comp[comp.seed.notna()]
    assert set(comp.pair_type) == {"icl_vs_gd"} and set(comp.seed) == {0, 1}
    assert {Path(p).name for p in {*comp.job_a, *comp.job_b}} == set(jobs)
    assert (sweep / "report.md").exists() and (sweep / "comparison.md").exists()


@pytest.mark.slow
def test_a_killed_job_is_recorded_failed_a_preempted_one_requeued_and_a_rerun_redoes_only_the_killed(
    slurm: LocalSlurm, tmp_path: Path
) -> None:
    """Three gd jobs (the two long ones run 10 to 120 s here): a short one; one scancel'led mid-run; one preempted mid-run (SLURM's USR2, as before a
    preemption) that submitit requeues and that runs again from its start. The sweep ends instead of waiting for
    the killed job forever; the rerun with the same hydra.sweep.dir runs only the killed job."""
    # long enough that the signal lands mid-run on a quiet machine too (at 100 epochs a tiny job took 5 s and
    # once finished before its scancel arrived)
    sweep, short, killed, preempted = tmp_path / "sweep", 2, 400, 401
    args = ("method=gd", f"method.epochs={short},{killed},{preempted}", "hydra.launcher.timeout_min=30")
    began = time.monotonic()
    proc = start(slurm, sweep, *args)
    try:
        # each as soon as its runner started (status.json "running"): seconds before it could end
        running = lambda n: started(sweep, folder(n))  # noqa: E731
        wait_for("the job to kill to run", lambda: running(killed), 180, proc, every=0.1)
        kill_id = task_of(sweep, 1)
        slurm.client("scancel", kill_id)
        wait_for("the job to preempt to run", lambda: running(preempted), 180, proc, every=0.1)
        preempt_id = task_of(sweep, 2)
        slurm.client("scancel", "--signal=USR2", preempt_id)  # what slurmctld sends before it preempts a job
        # submitit requeued it; SLURM holds a requeued job two minutes (BeginTime): release it sooner, once slurmd
        # has let go of the killed run (released at once, slurmd refuses it: "Job credential revoked")
        wait_for("the requeue", lambda: "BeginTime" in squeue(slurm, preempt_id, "%T %r"), 60, proc)
        time.sleep(5)
        slurm.client("scontrol", "update", f"jobid={preempt_id}", "StartTime=now")
        out = finish(proc, sweep, timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"kill + preemption sweep: {time.monotonic() - began:.0f} s")
    assert proc.returncode == 1, out[-2000:]  # a job failed: the sweep says so
    # the killed job: failed, with SLURM's state and where its log is
    st = status(sweep, folder(killed))
    assert st["status"] == "failed" and st["launcher_state"] == "CANCELLED", st
    assert kill_id in st["error"] and "_log.err" in st["error"] and "Rerun" in st["error"]
    assert squeue(slurm, kill_id) == "CANCELLED"
    # the preempted job: requeued once by submitit, then done
    assert status(sweep, folder(preempted))["status"] == "done", slurm.client(
        "scontrol", "show", "job", preempt_id
    ).stdout + slurm.logs(4000)
    assert "Restarts=1" in slurm.client("scontrol", "show", "job", preempt_id).stdout
    logs = "".join(p.read_text() for p in (sweep / ".submitit" / preempt_id).glob("*_log.*"))
    assert "this job is preempted" in logs and f"Requeued job {preempt_id}" in logs
    assert status(sweep, folder(short))["status"] == "done"
    # the end of the sweep: the finished jobs compared, the killed one named with the fix
    assert "1 of 3 jobs" in out and f"{folder(killed)} (JobEndedCancelled" in out
    assert (sweep / "comparison.md").exists()
    assert "Traceback" not in out

    kept = {n: result_files(sweep / folder(n)) for n in (short, preempted)}
    began = time.monotonic()
    proc = start(slurm, sweep, *args)
    out = finish(proc, sweep, timeout=300)
    print(f"rerun: {time.monotonic() - began:.0f} s")
    assert proc.returncode == 0, out[-2000:]
    assert all(status(sweep, folder(n))["status"] == "done" for n in (short, killed, preempted))
    assert {n: result_files(sweep / folder(n)) for n in (short, preempted)} == kept  # skipped, not redone


@pytest.mark.slow
def test_a_job_at_its_time_limit_is_recorded_with_the_reason(slurm: LocalSlurm, tmp_path: Path) -> None:
    """timeout_min=2, signal_delay_s=30: SLURM signals the long job 30 to 60 s before its limit, submitit does not
    requeue it (max_num_timeout=0), and its status.json says it ran into its time limit, with the fix."""
    sweep = tmp_path / "sweep"
    args = (
        "method=gd",
        f"method.epochs=2,{LONG}",
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=30",
    )
    began = time.monotonic()
    out = finish(start(slurm, sweep, *args), sweep, timeout=400)
    print(f"time-limit sweep: {time.monotonic() - began:.0f} s")
    st = status(sweep, folder(LONG))
    assert st["status"] == "failed" and st["error_type"] == "TimeLimit", st
    assert "hydra.launcher.timeout_min=2" in st["error"] and "max_num_timeout" in st["error"]
    assert status(sweep, folder(2))["status"] == "done"  # the other job is kept
    assert f"{folder(LONG)} (TimeLimit: stopped at its time limit" in out
    err = next((sweep / ".submitit" / task_of(sweep, 1)).glob("*_log.err")).read_text()
    assert "Caught signal SIGUSR2" in err and "this job is timed-out" in err


# ----------------------------------------------------------------------------------------------------------
# timeout_min against signal_delay_s: no cluster needed


@pytest.mark.parametrize(
    ("timeout_min", "delay", "needle"),
    [
        (2, 120, "Set hydra.launcher.timeout_min to 3 or more, or lower hydra.launcher.signal_delay_s to 60"),
        (1, 90, "would kill jobs at random"),
        (60, 900, "requeued without end. Set hydra.launcher.signal_delay_s to 690 or less"),
        (0, 0, "must be a number > 0"),
    ],
)
def test_a_timeout_too_close_to_the_signal_delay_is_refused(
    timeout_min: int, delay: int, needle: str
) -> None:
    with pytest.raises(ConfigError) as e:
        check_signal_timing({"timeout_min": timeout_min, "signal_delay_s": delay})
    assert needle in str(e.value), str(e.value)


@pytest.mark.parametrize(
    ("timeout_min", "delay"), [(3, 120), (1, 0), (2, 30), (60, 120), (240, 120), (60, 690)]
)
def test_safe_pairs_pass(timeout_min: int, delay: int) -> None:
    check_signal_timing({"timeout_min": timeout_min, "signal_delay_s": delay})
    check_signal_timing({"timeout_min": timeout_min})  # submitit_local: no signal


@pytest.mark.slow
def test_the_command_line_refuses_the_pair_before_any_job(tmp_path: Path) -> None:
    """No cluster is asked: the check runs at the start of the multirun, before the launcher submits."""
    sweep = tmp_path / "sweep"
    proc = run_py(
        *BASE, "method=icl", "hydra.launcher.timeout_min=2", f"hydra.sweep.dir={sweep}", check=False
    )
    err = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in err, err[-2000:]
    assert (
        "ConfigError: hydra.launcher.timeout_min=2 with hydra.launcher.signal_delay_s=120 would kill" in err
    )
    assert not sweep.exists()
    print(shlex.join(["run.py", "hydra.launcher.timeout_min=2"]), "->", err.strip().splitlines()[-1][:120])
