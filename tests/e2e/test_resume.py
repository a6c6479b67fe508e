"""Nothing lost: a killed sweep resumes with only its unfinished jobs, a write killed midway leaves no half file
that a later step trusts, and W&B faults (no key, disabled, an unreachable server) never fail a job."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from icl_gd import io
from icl_gd.config import config_hash
from icl_gd.runner import run
from icl_gd.sweep.compare import compare_sweep
from icl_gd.sweep.jobs import load_jobs
from tests.helpers.cli import run_py
from tests.helpers.config import ROOT, subprocess_env
from tests.helpers.wandb_runs import offline_runs, run_folder

# ----------------------------------------------------------------------------------------------------------
# A killed sweep, rerun

SWEEP_ARGS = ("-m", "debug=smoke", "method=icl,gd", "seed=0,1,2")


def statuses(sweep: Path) -> dict[str, str]:
    """job folder name -> status, for every job folder with a readable status.json."""
    return {
        p.parent.name: (io.read_status(p.parent) or {}).get("status", "?")
        for p in sweep.glob("*/status.json")
    }


def result_files(folder: Path) -> dict[str, tuple[int, str]]:
    """The job's own files (not Hydra's .hydra/ record or its log) -> (mtime_ns, sha256)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"
    }


@pytest.mark.slow
def test_a_killed_sweep_reruns_exactly_its_unfinished_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    command = [sys.executable, "run.py", *SWEEP_ARGS, f"hydra.sweep.dir={sweep}"]
    with open(tmp_path / "first.log", "w") as first_log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=subprocess_env(),
            stdout=first_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 300
        try:
            while sum(s == "done" for s in statuses(sweep).values()) < 2:
                assert proc.poll() is None, (
                    f"the sweep ended before two jobs were done:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
                )
                assert time.time() < deadline, "no two jobs done within 300 s"
                time.sleep(0.01)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a lost node or Ctrl-\ would
            proc.wait()

    before = statuses(sweep)
    finished = {name for name, s in before.items() if s == "done"}
    assert 2 <= len(finished) < 6, before
    assert not (sweep / "comparison.parquet").exists()  # the sweep never reached its end
    kept = {name: result_files(sweep / name) for name in finished}

    proc = run_py(*SWEEP_ARGS, f"hydra.sweep.dir={sweep}", timeout=600)  # the same command again
    log = proc.stdout + proc.stderr
    skipped = {Path(m).name for m in re.findall(r"skip (\S+): done with the same config", log)}
    ran = {Path(m).name for m in re.findall(r" done in [0-9.]+ s: (\S+)", log)}  # the jobs' end lines
    everything = set(statuses(sweep))
    assert len(everything) == 6 and set(statuses(sweep).values()) == {"done"}
    assert skipped == finished and ran == everything - finished  # exactly the unfinished jobs ran
    for name, files in kept.items():
        assert result_files(sweep / name) == files, f"{name} changed"  # not a byte, not a timestamp

    comp = pd.read_parquet(sweep / "comparison.parquet")
    comp = comp[comp.seed.notna()]  # per-demo-set rows; pooled cell rows carry no job
    assert set(comp.pair_type) == {"icl_vs_gd"} and set(comp.seed) == {0, 1, 2}
    assert {Path(p).name for p in {*comp.job_a, *comp.job_b}} == everything  # all 6 jobs compared
    assert "# Comparison of 6 jobs" in log


# ----------------------------------------------------------------------------------------------------------
# Atomic writes

KILL_MIDWAY = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from icl_gd import io

    class HalfFrame:  # io.write_parquet calls df.to_parquet(tmp): write half a file, then die as a killed job does
        def to_parquet(self, path, index=False):
            with open(path, "wb") as f:
                f.write(b"PAR1 half a parquet file")
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    io.write_parquet(Path(sys.argv[1]), HalfFrame())
    """
)


def kill_midway(path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", KILL_MIDWAY, str(path)], cwd=ROOT, timeout=120)
    assert proc.returncode == -signal.SIGKILL


def test_a_write_killed_midway_leaves_the_old_file_or_none(tmp_path: Path) -> None:
    new, old = tmp_path / "new" / "predictions.parquet", tmp_path / "old" / "predictions.parquet"
    io.write_parquet(old, pd.DataFrame({"query_id": ["q0"], "gold": ["walked"]}))
    stamp = old.read_bytes()
    for path in (new, old):
        kill_midway(path)
        tmp = list(path.parent.glob(".predictions.parquet.*.tmp"))  # the half file, under a temporary name
        assert len(tmp) == 1 and tmp[0].read_bytes().startswith(b"PAR1 half")
    assert not new.exists()  # never renamed into place
    assert old.read_bytes() == stamp and pd.read_parquet(old).query_id.tolist() == ["q0"]


def test_a_job_killed_before_done_is_ignored_by_compare_and_rerun(smoke, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    icl, gd = sweep / "icl", sweep / "gd"
    run(smoke("method=icl", out=icl))
    gd_cfg = smoke("method=gd", out=gd)
    run(gd_cfg)
    # gd was killed after its predictions and metrics, before status.json said done, mid-way through a rewrite
    io.write_status(gd, "running", config_hash=config_hash(gd_cfg))
    (gd / ".predictions.parquet.abc123.tmp").write_bytes(b"PAR1 half")
    stale = (gd / "predictions.parquet").stat().st_mtime_ns

    assert [j.folder for j in load_jobs(sweep)] == [icl]  # a job that is not done is not compared
    assert compare_sweep(sweep, logger_cfg={"name": "none"}).empty

    run(gd_cfg)  # not skipped: status.json says running
    assert io.read_status(gd)["status"] == "done" and (gd / "predictions.parquet").stat().st_mtime_ns != stale
    assert set(compare_sweep(sweep, logger_cfg={"name": "none"}).pair_type) == {"icl_vs_gd"}


def test_only_a_complete_done_record_counts_as_done(smoke, tmp_path: Path) -> None:
    out = tmp_path / "job"
    cfg = smoke(out=out)
    run(cfg)
    h = config_hash(cfg)
    assert io.is_done(out, h)
    (out / "status.json").write_text('{"status": "do')  # torn by a writer that is not atomic
    assert io.read_status(out) is None and not io.is_done(out, h)
    io.write_status(out, "done", config_hash=h)
    (out / "metrics.json").unlink()  # done, but its metrics are gone
    assert not io.is_done(out, h)
    run(cfg)
    assert io.is_done(out, h) and json.loads((out / "metrics.json").read_text())["n_queries"] == 4


# ----------------------------------------------------------------------------------------------------------
# W&B faults, through runner.run: the job's files are complete whatever W&B does

JOB_FILES = ("config.yaml", "status.json", "metrics.json", "predictions.parquet", "demos.jsonl")


@pytest.fixture
def no_wandb_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    yield
    import wandb

    wandb.teardown()  # wandb caches env-derived settings per process


def assert_job_complete(out: Path) -> None:
    assert all((out / f).exists() for f in JOB_FILES)
    assert io.read_status(out)["status"] == "done"


def test_no_api_key_runs_offline_and_says_how_to_sync(
    smoke, tmp_path: Path, no_wandb_credentials, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "job"
    with caplog.at_level(logging.INFO, logger="icl_gd"):
        run(smoke("logger=wandb", out=out))
    assert_job_complete(out)
    (run_dir,) = offline_runs(out)
    assert f"upload with: wandb sync {run_dir}" in caplog.text
    assert (
        run_folder(run_dir)["summary"]["accuracy"]
        == json.loads((out / "metrics.json").read_text())["accuracy"]
    )


def test_wandb_mode_disabled_logs_nothing_and_the_job_is_complete(
    smoke, tmp_path: Path, no_wandb_credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "job"
    run(smoke("logger=wandb", out=out))
    assert_job_complete(out)
    assert not (out / "wandb").exists()


def test_an_unreachable_server_falls_back_to_offline_within_the_timeout(
    smoke,
    tmp_path: Path,
    no_wandb_credentials,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # a key, so the job tries online first
    out = tmp_path / "job"
    started = time.time()
    with caplog.at_level(logging.INFO, logger="icl_gd"):
        run(smoke("logger=wandb", "logger.init_timeout_s=3", out=out))
    elapsed = time.time() - started
    assert_job_complete(out)
    assert "retrying offline" in caplog.text and "wandb sync" in caplog.text
    assert len(offline_runs(out)) == 1
    assert elapsed < 60, (
        f"{elapsed:.0f} s"
    )  # 3 s of init timeout, the offline run and the job (about 10 s here)
