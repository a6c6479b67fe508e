"""What a job says on the console (a non-interactive log): step progress of a gd job, one end line per job with
a short label and its folder relative to the sweep, an error said once, nothing of progress with progress=false."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.cli import run_py

TINY = ["model=tiny_random", "logger=none", "eval.n_queries=2"]
CONSOLE_WIDTH = 120  # the console table stays readable in a terminal
STEP_LINE = re.compile(r"train: +100% 16/16 \[.*step/s, loss=[0-9.]+\]")


@pytest.mark.slow
def test_a_gd_job_shows_its_steps_and_one_end_line(tmp_path: Path) -> None:
    job = tmp_path / "gd"
    proc = run_py(*TINY, "method=gd", "demos=4", "method.epochs=4", f"hydra.run.dir={job}")
    out = proc.stdout + proc.stderr
    assert STEP_LINE.search(out), out[-2000:]
    assert STEP_LINE.search((job / "icl-gd.log").read_text())  # the job's log file too
    (end,) = [line for line in out.splitlines() if " done in " in line]
    assert re.search(
        rf"job done in [0-9.]+ s: gd present_past N=4 seed=0 \(label_accuracy=0\.\d+\) -> {job}$", end
    )
    quiet = run_py(
        *TINY, "method=gd", "demos=4", "method.epochs=4", "progress=false", f"hydra.run.dir={job}_q"
    )
    assert "icl_gd.progress" not in quiet.stdout + quiet.stderr


@pytest.mark.slow
def test_sweep_jobs_are_numbered_and_named_relative_to_the_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_py("-m", *TINY, "method=zeroshot,icl", "demos=1", f"hydra.sweep.dir={sweep}")
    ends = [
        line.split("[INFO] ", 1)[1]
        for line in (proc.stdout + proc.stderr).splitlines()
        if " done in " in line
    ]
    assert len(ends) == 2
    for i, (line, method) in enumerate(zip(ends, ("zeroshot", "icl"), strict=True)):
        assert re.match(
            rf"job {i + 1}/2 done in [0-9.]+ s: {method},N=1~\w+ \(label_accuracy=0\.\d+\)$", line
        )
        folder = line.split(" s: ", 1)[1].split(" ", 1)[0]
        assert (sweep / folder / "metrics.json").is_file()


@pytest.mark.slow
def test_a_config_error_is_said_once(tmp_path: Path) -> None:
    proc = run_py(*TINY, "method=gd", "method.lr=-1", f"hydra.run.dir={tmp_path / 'bad'}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out
    errors = [line for line in out.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "ConfigError" in errors[0], out[-2000:]


@pytest.mark.slow
def test_a_sweeps_console_is_one_line_per_job_start_and_end_with_one_sync_hint(tmp_path: Path) -> None:
    """No per-job W&B, memory-plan or cache lines; the comparison's short table; one `wandb sync` hint a sweep."""
    sweep = tmp_path / "sweep"
    args = [a for a in TINY if a != "logger=none"]
    proc = run_py("-m", *args, "method=zeroshot,icl", "demos=2", "progress=false", f"hydra.sweep.dir={sweep}")
    lines = (proc.stdout + proc.stderr).splitlines()
    said = "\n".join(lines)
    assert "memory plan" not in said and "W&B offline run " not in said and "from the cache" not in said
    assert sum("upload them with: wandb sync" in line for line in lines) == 1
    assert sum(" done in " in line for line in lines) == 2  # one end line per job
    assert f"All metrics, shares and legends: {sweep / 'comparison.md'}" in said
    table = [line for line in lines if line.startswith("|")]
    assert table and max(map(len, table)) < CONSOLE_WIDTH, max(table, key=len)


@pytest.mark.slow
def test_console_lines_carry_the_time_and_level_the_log_file_the_full_format(tmp_path: Path) -> None:
    job = tmp_path / "icl"
    proc = run_py(*TINY, "method=icl", "demos=1", f"hydra.run.dir={job}")
    (end,) = [line for line in (proc.stdout + proc.stderr).splitlines() if " done in " in line]
    assert re.match(r"\[\d\d:\d\d:\d\d\]\[INFO\] job done in ", end), end
    logged = (job / "icl-gd.log").read_text()
    assert re.search(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\]\[icl_gd\]\[INFO\] - job done in ", logged)
