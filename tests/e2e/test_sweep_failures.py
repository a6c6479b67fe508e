"""Nothing silent at the sweep level: a job whose files do not read back is skipped by name, with the fix, and the
rest is still compared and reported; a multirun with a failed job or a failed step exits 1 after writing what it
could, with one line naming each failure; a folder with no finished job says why, naming the failed jobs' errors.

The sweep folders are built once per module (tiny random model, two queries) and copied before each test
corrupts them."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from icl_gd import io
from icl_gd.runner import run
from icl_gd.sweep import cli
from icl_gd.sweep.callbacks import CompareOnMultirunEnd
from tests.helpers.cli import run_py
from tests.helpers.config import compose_config, job_folder

BASE = ["model=tiny_random", "logger=none", "eval.n_queries=2"]
TOP_K_ERROR = "ConfigError: eval.top_k=100000 exceeds the vocabulary of model=tiny_random"
# the jobs of the in-process sweep: two icl-vs-zeroshot pairs (demos 1 and 2) and one job that fails at run time
JOBS = {
    "icl_d1": ["method=icl", "demos=1"],
    "zs_d1": ["method=zeroshot", "demos=1"],
    "icl_d2": ["method=icl", "demos=2"],
    "zs_d2": ["method=zeroshot", "demos=2"],
    "bad_top_k": ["method=icl", "demos=1", "eval.top_k=100000"],  # passes validation, fails at the model
}
REDO = (
    "delete {job}/status.json and rerun the sweep's command"  # the fix for a file the runner does not check
)
RERUN = "Rerun the sweep's command (python run.py -m ...): the runner redoes a job whose {file} does not read back"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep folder of real jobs, run in this process: four done, one failed (ConfigError)."""
    root = tmp_path_factory.mktemp("built")
    for name, overrides in JOBS.items():
        run(compose_config([*BASE, *overrides, f"output_dir={root / name}"]))
    assert io.read_status(root / "bad_top_k")["status"] == "failed"
    assert all(io.read_status(root / n)["status"] == "done" for n in JOBS if n != "bad_top_k")
    return root


@pytest.fixture
def sweep(built: Path, tmp_path: Path) -> Callable[..., Path]:
    """sweep(without=(names...)) -> a fresh copy of the built sweep folder, less the named jobs."""

    def copy(without: tuple[str, ...] = ()) -> Path:
        target = tmp_path / "sweep"
        shutil.copytree(built, target)
        for name in without:
            shutil.rmtree(target / name)
        return target

    return copy


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble_middle(path: Path) -> None:
    """Overwrite the first half past the magic bytes: the parquet footer still reads, the data pages do not."""
    data = bytearray(path.read_bytes())
    data[8 : len(data) // 2] = b"\xff" * (len(data) // 2 - 8)
    path.write_bytes(bytes(data))


def compare(folder: Path) -> None:
    cli.main(["compare", str(folder), "--logger", "none"])


def report(folder: Path) -> None:
    cli.main(["report", str(folder), "--logger", "none"])


def end_of_multirun(folder: Path) -> None:
    """What Hydra calls once every job of `python run.py -m ...` has run."""
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(folder)}}, "logger": {"name": "none"}})
    CompareOnMultirunEnd().on_multirun_end(config)


def pair_demos(folder: Path) -> set[int]:
    return set(pd.read_parquet(folder / io.COMPARISON)["demos"].astype(int))


# ----------------------------------------------------------------------------------------------------------
# A job whose files do not read back: skipped by name, with the fix; the rest is compared and reported


@pytest.mark.parametrize(
    ("file", "damage", "fix"),
    [
        (io.PREDICTIONS, truncate, REDO),
        (io.PREDICTIONS, garble_middle, REDO),
        (io.DEMOS, truncate, REDO),
        (io.CONFIG, lambda p: p.write_text("model: [unclosed\n"), REDO),
        (io.METRICS, truncate, RERUN),
        (io.STATUS, truncate, RERUN),
        (io.PREDICTIONS, Path.unlink, REDO),
    ],
    ids=[
        "predictions_truncated",
        "predictions_garbled",
        "demos",
        "config",
        "metrics",
        "status",
        "predictions_gone",
    ],
)
def test_a_job_whose_file_does_not_read_back_is_skipped_and_the_rest_compared(
    sweep, file: str, damage, fix: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = sweep()
    job = folder / "icl_d1"
    damage(job / file)
    with caplog.at_level(logging.INFO):
        compare(folder)  # exits 0: the comparison of the other jobs is written
    out = caplog.text
    assert f"job {job} is skipped: its {file} does not read back (" in out
    assert fix.format(job=job, file=file) in out
    assert pair_demos(folder) == {2}  # the demos=2 pair is compared, the one with the broken job is not
    md = (folder / io.COMPARISON_MD).read_text()
    assert "icl_vs_zeroshot" in md and "Not compared: 1 failed, 1 whose files do not read back" in md
    # the closing line names both, each with its reason
    assert "2 of 5 jobs in" in out and f"icl_d1 ({file} does not read back: " in out
    assert f"bad_top_k ({TOP_K_ERROR}" in out

    caplog.clear()
    with caplog.at_level(logging.INFO):
        report(folder)  # and so is the report, with the skipped job counted in its header
    assert f"job {job} is skipped: its {file} does not read back" in caplog.text
    assert (
        "left out because their files do not read back: 1 (see the log)" in (folder / io.REPORT).read_text()
    )


def test_a_broken_analysis_file_leaves_out_that_job_s_rows_only(sweep, caplog) -> None:
    folder = sweep()
    io.write_parquet(folder / "icl_d2" / io.SPARSITY, pd.DataFrame({"layer": [0]}))
    truncate(folder / "icl_d2" / io.SPARSITY)
    compare(folder)
    assert (
        "its sparsity.parquet does not read back" in caplog.text
        and REDO.format(job=folder / "icl_d2") in caplog.text
    )
    assert pair_demos(folder) == {1}


def test_a_sweep_file_that_does_not_read_back_stops_the_report_with_the_fix(sweep, capsys) -> None:
    folder = sweep()
    compare(folder)
    truncate(folder / io.COMPARISON_QUERIES)
    with pytest.raises(SystemExit) as e:
        report(folder)
    err = capsys.readouterr().err
    assert e.value.code == 1 and f"{folder / io.COMPARISON_QUERIES} does not read back" in err
    assert f"rerun the comparison, which rewrites it (python -m icl_gd.sweep compare {folder})" in err
    compare(folder)  # the fix works
    report(folder)
    assert (folder / io.REPORT).exists()


def test_a_comparison_without_pairs_drops_the_files_of_an_earlier_one(sweep) -> None:
    folder = sweep()
    compare(folder)
    assert (folder / io.COMPARISON_QUERIES).exists()
    for name in ("zs_d1", "zs_d2"):
        shutil.rmtree(folder / name)
    compare(folder)
    assert not (folder / io.COMPARISON_QUERIES).exists()  # the report must not show the removed pairs
    assert "No comparable pairs" in (folder / io.COMPARISON_MD).read_text()


# ----------------------------------------------------------------------------------------------------------
# A folder with no finished job: the command exits non-zero, naming the folder, each failed job's error, the fix


@pytest.mark.parametrize("command", [compare, report])
def test_a_folder_whose_jobs_all_failed_exits_1_naming_their_errors(sweep, command, capsys) -> None:
    folder = sweep(without=("icl_d1", "zs_d1", "zs_d2"))
    truncate(folder / "icl_d2" / io.PREDICTIONS)
    with pytest.raises(SystemExit) as e:
        command(folder)
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert f"{folder} holds no finished language-model job: 2 of 2 jobs in {folder} failed:" in err
    assert f"bad_top_k ({TOP_K_ERROR}" in err and "icl_d2 (predictions.parquet does not read back: " in err
    assert "fix what the errors say and rerun the sweep's command" in err
    assert "for a job whose files do not read back, delete its status.json and rerun" in err
    assert not (folder / io.COMPARISON).exists()


def test_a_status_json_that_says_failed_is_named_with_its_error(sweep, capsys) -> None:
    folder = sweep(without=("icl_d1", "zs_d1", "icl_d2", "bad_top_k"))
    io.write_status(
        folder / "zs_d2", "failed", error_type="DivergedError", error="loss is nan at step 3\nmore"
    )
    with pytest.raises(SystemExit) as e:
        compare(folder)
    err = capsys.readouterr().err
    assert (
        e.value.code == 1
        and "1 of 1 jobs in" in err
        and "zs_d2 (DivergedError: loss is nan at step 3)" in err
    )


def test_a_folder_without_job_folders_exits_2_saying_what_to_pass(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        compare(tmp_path / "empty")
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert f"{tmp_path / 'empty'} holds no finished language-model job: it has no job folder" in err
    assert "Pass the sweep folder (hydra.sweep.dir) of a multirun" in err


def test_a_killed_job_is_named_when_nothing_finished(sweep, capsys) -> None:
    folder = sweep(without=("icl_d1", "zs_d1", "icl_d2", "bad_top_k"))
    io.write_status(folder / "zs_d2", "running")
    with pytest.raises(SystemExit) as e:
        compare(folder)
    err = capsys.readouterr().err
    assert (
        e.value.code == 1 and "1 of 1 jobs in" in err and "have not finished: zs_d2 (status 'running'" in err
    )
    assert "rerun the sweep's command: it runs them again" in err


# ----------------------------------------------------------------------------------------------------------
# The end of a multirun (the Hydra callback): exit 1 after writing what it could, one line naming each failure


def test_the_end_of_a_multirun_with_a_failed_job_exits_1_after_writing(sweep, caplog) -> None:
    folder = sweep()
    truncate(folder / "zs_d1" / io.PREDICTIONS)
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as e:
        end_of_multirun(folder)
    assert e.value.code == 1
    assert pair_demos(folder) == {2} and (folder / io.REPORT).exists()  # written before the exit
    summary = [r for r in caplog.records if r.levelno == logging.ERROR and "jobs in" in r.message]
    assert len(summary) == 1
    line = summary[0].message
    assert line.startswith(f"2 of 5 jobs in {folder} failed: ")
    assert f"bad_top_k ({TOP_K_ERROR}" in line and "zs_d1 (predictions.parquet does not read back: " in line
    assert "fix what the errors say and rerun the sweep's command" in line
    assert f"compared without them in {folder / io.COMPARISON_MD} and {folder / io.REPORT}" in line


def test_the_end_of_a_multirun_whose_report_fails_exits_1_with_the_rerun_command(sweep, caplog) -> None:
    folder = sweep(without=("bad_top_k",))
    (folder / io.FIGURES).write_text("a file where the figures folder goes")
    with pytest.raises(SystemExit) as e:
        end_of_multirun(folder)
    assert e.value.code == 1 and pair_demos(folder) == {1, 2}  # the comparison is written all the same
    errors = [r.message for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(f"report of {folder} failed: ")
    assert errors[0].endswith(f"(rerun it with: make report SWEEP={folder})")


def test_the_end_of_a_multirun_where_every_job_finished_returns(sweep, caplog) -> None:
    folder = sweep(without=("bad_top_k",))
    end_of_multirun(folder)  # no SystemExit: Hydra exits 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (folder / io.COMPARISON_MD).exists() and (folder / io.REPORT).exists()


def test_the_end_of_a_regression_lab_multirun_returns(tmp_path: Path, caplog) -> None:
    job = tmp_path / "sweep" / "lab"
    io.write_yaml(job / io.CONFIG, {"dataset": {"name": "linreg"}, "method": {"name": "gd"}})
    io.write_status(job, "done")
    with caplog.at_level(logging.INFO):
        end_of_multirun(
            tmp_path / "sweep"
        )  # its jobs write their own figures: nothing to compare, no failure
    assert "regression-lab jobs (dataset=linreg)" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ----------------------------------------------------------------------------------------------------------
# The real command lines, in subprocesses


@pytest.fixture(scope="module")
def multirun(tmp_path_factory: pytest.TempPathFactory):
    """`python run.py -m ...` with two jobs that fail at run time among four: (sweep folder, finished process)."""
    folder = tmp_path_factory.mktemp("multirun") / "sweep"
    proc = run_py(
        "-m", *BASE, "method=icl,zeroshot", "eval.top_k=10,100000", f"hydra.sweep.dir={folder}", check=False
    )
    return folder, proc


@pytest.mark.slow
def test_a_multirun_with_failed_jobs_exits_1_after_writing_the_comparison(multirun) -> None:
    folder, proc = multirun
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out
    failed = [p.parent for p in folder.rglob(io.STATUS) if io.read_status(p.parent)["status"] == "failed"]
    names = {job_folder(*BASE, f"method={m}", "eval.top_k=100000") for m in ("icl", "zeroshot")}
    assert len(failed) == 2 and {f.name for f in failed} == names
    assert f"2 of 4 jobs in {folder} failed: " in out
    for job in failed:  # each named by its folder, with its error
        assert f"{job.relative_to(folder)} ({TOP_K_ERROR}" in out
    assert "fix what the errors say and rerun the sweep's command" in out
    assert set(pd.read_parquet(folder / io.COMPARISON)["pair_type"]) == {"icl_vs_zeroshot"}
    assert (folder / io.REPORT).exists()


@pytest.mark.slow
def test_the_compare_command_s_exit_codes(multirun, tmp_path: Path) -> None:
    folder, _ = multirun
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    job = copy / job_folder(*BASE, "method=zeroshot", "eval.top_k=10")
    truncate(job / io.PREDICTIONS)

    def sweep_cli(path: Path):
        return run_py(
            "compare", str(path), "--logger", "none", module="icl_gd.sweep", check=False, timeout=300
        )

    skipped = sweep_cli(copy)  # one job left: no pair, but the comparison is written
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert f"job {job} is skipped: its predictions.parquet does not read back" in skipped.stderr
    assert REDO.format(job=job) in skipped.stderr and "3 of 4 jobs in" in skipped.stderr

    truncate(copy / job_folder(*BASE, "method=icl", "eval.top_k=10") / io.PREDICTIONS)
    none_finished = sweep_cli(copy)
    assert none_finished.returncode == 1 and "Traceback" not in none_finished.stderr
    assert (
        f"{copy} holds no finished language-model job: 4 of 4 jobs in {copy} failed:" in none_finished.stderr
    )

    (tmp_path / "empty").mkdir()
    empty = sweep_cli(tmp_path / "empty")
    assert empty.returncode == 2 and "it has no job folder" in empty.stderr
