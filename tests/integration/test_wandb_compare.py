"""The W&B side of the sweep steps without a sweep: run ids in the comparison Table, the end-of-sweep line."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from icl_gd import io
from icl_gd.sweep.callbacks import MAX_NAMED, MAX_NAMED_DONE, sweep_line
from icl_gd.sweep.compare import with_run_ids
from icl_gd.sweep.jobs import Job, JobFailure, SweepScan

CELL = {"model": "m", "dataset": "sst2", "demos": 2, "eval": "e", "method_a": "icl", "method_b": "gd"}


def test_each_comparison_row_names_the_runs_of_both_jobs(tmp_path: Path) -> None:
    a0, b0, a1, b1 = (str(tmp_path / n) for n in ("icl_s0", "gd_s0", "icl_s1", "gd_s1"))
    rows = pd.DataFrame(
        [
            {
                **CELL,
                "pair_type": "icl_vs_gd",
                "metric": "ocs",
                "seed": 0,
                "job_a": a0,
                "job_b": b0,
                "mean": 0.5,
            },
            {
                **CELL,
                "pair_type": "icl_vs_gd",
                "metric": "ocs",
                "seed": 1,
                "job_a": a1,
                "job_b": b1,
                "mean": 0.7,
            },
            {**CELL, "pair_type": "icl_vs_gd", "metric": "ocs", "seed": None, "job_a": None, "job_b": None},
        ]
    )
    runs = {Path(f): {"run_id": rid} for f, rid in ((a0, "ia"), (b0, "ga"), (a1, "ib"), (b1, None))}
    out = with_run_ids(rows, runs)
    assert list(out["run_id_a"]) == ["ia", "ib", "ia,ib"]  # a pooled row: every job of its cell and pair
    assert list(out["run_id_b"]) == ["ga", "", "ga"]  # a job without a W&B run has no id
    assert list(out["mean"][:2]) == [0.5, 0.7] and "run_id_a" not in rows  # the input is not changed


def test_the_end_of_sweep_line_counts_done_skipped_failed_with_folders(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    folders = {n: sweep / n for n in ("old", "new", "bad", "running")}
    for f in folders.values():
        io.write_status(f, "done")
    os.utime(folders["old"] / io.STATUS, (time.time() - 60, time.time() - 60))  # done before this multirun
    job = {"model": {"name": "m"}, "method": {"name": "icl"}}
    scan = SweepScan(
        sweep,
        jobs=[Job(folders["old"], job), Job(folders["new"], job)],
        failed=[JobFailure(folders["bad"], "DivergedError: loss")],
        unfinished=[JobFailure(folders["running"], "running")],
    )
    line = sweep_line(scan, started=time.time() - 1)
    assert line == (
        f"sweep {sweep}: 4 jobs; 1 done: new; 1 skipped (done before): old; 1 failed: bad; 1 unfinished: running"
    )
    many = SweepScan(sweep, failed=[JobFailure(sweep / f"j{i:02d}", "x") for i in range(MAX_NAMED + 2)])
    named = ", ".join(f"j{i:02d}" for i in range(MAX_NAMED))
    assert sweep_line(many, None).endswith(f"{MAX_NAMED + 2} failed: {named}, and 2 more")
    # done jobs are the ones nobody needs to find: a few are named, the rest counted, so the line stays short
    done = [Job(sweep / f"d{i:02d}", job) for i in range(MAX_NAMED_DONE + 5)]
    for j in done:
        io.write_status(j.folder, "done")
    short = sweep_line(SweepScan(sweep, jobs=done), None)
    assert f"{MAX_NAMED_DONE + 5} done: d00, d01, d02, and 5 more; 0 skipped" in short
