"""A real single-node SLURM cluster for the tests: scripts/slurm_local.py (what `make slurm-up` runs), started in a
temporary folder on free ports so that it lives beside any other cluster on the machine.

The cluster has no accounting (no slurmdbd): its folder's bin/sacct, first on the PATH of every command the tests
run against it, answers submitit's state query from `squeue -t all`. That stand-in is a fixture of the tests (and of
the local cluster), not of the project: on a real cluster sacct answers from slurmdbd.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.config import ROOT

_spec = importlib.util.spec_from_file_location("slurm_local", ROOT / "scripts" / "slurm_local.py")
slurm_local = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("slurm_local", slurm_local)
_spec.loader.exec_module(slurm_local)
LocalSlurm = slurm_local.LocalSlurm
ClusterError = slurm_local.ClusterError


def start_cluster(folder: Path) -> Iterator[LocalSlurm]:
    """Start a cluster in `folder` (skip, with the reason, where none can run here), yield it, and stop its daemons
    by PID at the end whatever happened (the fixture's teardown, and atexit should the teardown not run)."""
    reason = slurm_local.cannot_run()
    if reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    cluster = LocalSlurm(folder, cluster="icl_gd_test")
    atexit.register(cluster.stop, log=lambda *_: None)
    # SIGTERM (timeout, CI cancelling the run) unwinds like Ctrl-C, so this fixture's teardown runs
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            slurm_local.install(log=lambda *_: None)
        except ClusterError as e:  # no package source (offline, no apt lists): as without apt
            pytest.skip(f"no local SLURM cluster: {e}")
        cluster.start(log=lambda *_: None)
        cluster.watch(os.getpid())  # and should this process die without a teardown (SIGKILL): the watchdog's
        yield cluster
    finally:
        cluster.stop(log=lambda *_: None)
        if signal.getsignal(signal.SIGTERM) is _interrupt:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def squeue(cluster: LocalSlurm, job: str, fmt: str = "%T") -> str:
    """One job's field(s) as slurmctld knows it, finished jobs included ('' when it does not know the job)."""
    return cluster.client("squeue", "-h", "-r", "-t", "all", "-j", job, "-o", fmt).stdout.strip()


def array_job_ids(sweep: Path) -> list[str]:
    """The SLURM job ids of a sweep's tasks, from its .submitit/<array id>_<task> folders."""
    return sorted(p.name for p in (sweep / ".submitit").glob("*_*") if p.is_dir())


def wait_for(what: str, check, timeout: float, proc: subprocess.Popen | None = None, every: float = 0.5):
    """Poll check() until it returns something truthy; fail after `timeout` s, or when `proc` exited first."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)
