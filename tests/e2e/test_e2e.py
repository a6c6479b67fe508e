"""The command line, end to end, in subprocesses: real SmolLM2 sweeps, failures that do not stop a sweep, reruns."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers.cli import run_py
from tests.helpers.wandb_runs import offline_runs, run_folder

pytestmark = pytest.mark.slow


def jobs(sweep: Path) -> dict[str, Path]:
    """method -> job folder (one job per method in these sweeps)."""
    out = {}
    for status in sweep.rglob("status.json"):
        cfg = json.loads(
            json.dumps(__import__("yaml").safe_load((status.parent / "config.yaml").read_text()))
        )
        out[cfg["method"]["name"] + ("" if cfg["order_seed"] is None else f"@{cfg['order_seed']}")] = (
            status.parent
        )
    return out


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_smollm2_zeroshot_icl_gd_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_py(
        "-m",
        "dataset=present_past",
        "method=zeroshot,icl,gd",
        "demos=8",
        "seed=0",
        "eval.n_queries=20",
        "logger=wandb",
        f"hydra.sweep.dir={sweep}",
        timeout=900,
    )
    j = jobs(sweep)
    assert set(j) == {"zeroshot", "icl", "gd"}
    for folder in j.values():
        assert json.loads((folder / "status.json").read_text())["status"] == "done"
        assert len(pd.read_parquet(folder / "predictions.parquet")) == 20
    icl, zs, gd = metrics(j["icl"]), metrics(j["zeroshot"]), metrics(j["gd"])
    assert (
        icl["accuracy"] >= 0.6 and icl["accuracy"] > zs["accuracy"]
    )  # calibration: 0.94 vs 0.00 at 50 queries
    assert gd["train_loss_final"] < gd["train_loss_initial"]
    assert (j["icl"] / "demos.jsonl").read_text() == (j["gd"] / "demos.jsonl").read_text()
    comp = pd.read_parquet(sweep / "comparison.parquet")
    assert set(comp.pair_type) == {"icl_vs_gd", "icl_vs_zeroshot", "gd_vs_zeroshot"}
    assert (comp.n == 20).all()  # every query of each pair joined
    info = run_folder(offline_runs(j["gd"])[0])
    assert info["job_type"] == "gd" and info["group"] == "adhoc-sweep"
    assert info["summary"]["accuracy"] == pytest.approx(gd["accuracy"])
    sweep_runs = {r["job_type"]: r for r in map(run_folder, offline_runs(sweep))}
    assert set(sweep_runs) == {"compare", "report"}  # the comparison, then the report, each a W&B run
    compare_run = sweep_runs["compare"]
    assert compare_run["summary"]["comparison"]["_type"] == "table-file"  # one row per (cell, pair, metric)


def test_a_diverged_job_fails_alone_and_a_rerun_skips_what_is_done(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = (
        "-m",
        "debug=smoke",
        "method=gd",
        "method.lr=1e-3,1e30",
        "method.grad_clip=null",
        f"hydra.sweep.dir={sweep}",
    )
    # the good job's files are written, and the sweep says that one failed
    proc = run_py(*args, timeout=900, check=False)
    assert proc.returncode == 1 and "1 of 2 jobs" in proc.stdout + proc.stderr
    lrs = {yaml.safe_load(c.read_text())["method"]["lr"]: c.parent for c in sweep.glob("*/config.yaml")}
    ok, bad = lrs[1e-3], lrs[1e30]
    assert json.loads((ok / "status.json").read_text())["status"] == "done"
    st = json.loads((bad / "status.json").read_text())
    assert (
        st["status"] == "failed" and st["error_type"] == "DivergedError" and metrics(bad)["diverged"] == 1.0
    )
    assert "failed" in proc.stdout + proc.stderr
    stamp = (ok / "predictions.parquet").stat().st_mtime_ns
    proc = run_py(*args, timeout=900, check=False)
    assert (
        proc.returncode == 1
        and "skip" in proc.stdout + proc.stderr
        and (ok / "predictions.parquet").stat().st_mtime_ns == stamp
    )
    assert json.loads((bad / "status.json").read_text())["status"] == "failed"  # retried, and failed again


def test_order_noise_floor_joins_into_the_same_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_py("-m", "debug=smoke", "method=icl,gd", f"hydra.sweep.dir={sweep}", timeout=900)
    run_py("-m", "debug=smoke", "method=icl", "order_seed=1", f"hydra.sweep.dir={sweep}", timeout=900)
    comp = pd.read_parquet(sweep / "comparison.parquet")
    assert set(comp.pair_type) == {"icl_vs_gd", "icl_vs_icl_order"}
    rerun = run_py("compare", str(sweep), "--logger", "none", module="icl_gd.sweep", check=False, timeout=300)
    assert rerun.returncode == 0 and "icl_vs_icl_order" in rerun.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["method=gd", "method.lr=-1"], "method.lr=-1.0 must be > 0"),
        (["method=gdd"], "Could not find 'method/gdd'"),
        (["model=llama7b"], "model.path=/path/to/local/llama7b"),
        (["data_dir=/nonexistent"], "ICL_GD_DATA"),
    ],
)
def test_bad_input_on_the_command_line_exits_non_zero_with_the_fix(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    proc = run_py("debug=smoke", *args, f"hydra.run.dir={tmp_path}/run", check=False, timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert needle in out and "Traceback" not in out
