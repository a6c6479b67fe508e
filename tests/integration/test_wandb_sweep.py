"""A 4-job offline sweep, run twice into one folder, read back from its W&B files: one metric namespace, flat keys,
names, groups, tags, honest exit codes, artifacts, one compare run, the report's line plots and the dashboard spec.

The sweep (tiny_random, 4 queries): icl, icl on another demo order (the floor), gd, and a gd that diverges at step 1
(it fails on purpose). The first invocation exits 1 (a job failed); the second, with allow_failures=true, skips the
three done jobs, reruns the failed one and exits 0. Both share one module-scoped fixture (about 40 s here).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from icl_gd import dashboard, io, tracking
from tests.helpers.cli import run_py
from tests.helpers.config import subprocess_env
from tests.helpers.wandb_runs import logged_keys, sweep_runs

pytestmark = pytest.mark.slow

GRIDS = (
    "+hydra.sweeper.grids={icl: {method: icl}, icl_order: {method: icl, order_seed: 1}, gd: {method: gd}, "
    'gd_diverges: {method: gd, seed: 1, method.optimizer: sgd, method.lr: 1e3, method.grad_clip: "null"}}'
)
GROUP = (
    "adhoc-2026-01-01_21-28-21"  # experiment (none: adhoc) and the start time of Hydra's default sweep folder
)
NAMES = {
    "icl-present_past-N2-s0",
    "icl-present_past-N2-s0-o1",
    "gd-present_past-N2-s0",
    "gd-present_past-N2-s1",
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("wandb_sweep")
    folder = root / "multirun" / "2026-01-01" / "21-28-21"
    env = subprocess_env() | {f"WANDB_{v}_DIR": str(root / "wandb_home") for v in ("CACHE", "CONFIG", "DATA")}
    args = ["-m", "hydra/sweeper=grids", GRIDS, "model=tiny_random", "logger=wandb", "dataset=present_past"]
    args += ["demos=2", "eval.n_queries=4", f"hydra.sweep.dir={folder}"]
    first = run_py(*args, env=env, check=False)
    second = run_py(*args, "allow_failures=true", env=env, check=False)
    jobs = {st.parent: io.read_status(st.parent)["status"] for st in folder.glob(f"*/{io.STATUS}")}
    runs = sweep_runs(folder)
    latest = {}
    for r in runs:  # oldest first: the last run of each folder counts
        latest[r["folder"]] = r
    return {"folder": folder, "first": first, "second": second, "jobs": jobs, "runs": runs, "latest": latest}


def _out(proc: Any) -> str:
    return proc.stdout + proc.stderr


def job_runs(sweep: dict[str, Any], status: str | None = None) -> dict[Path, dict[str, Any]]:
    return {f: sweep["latest"][f] for f, st in sweep["jobs"].items() if status in (None, st)}


def test_exit_codes_and_the_end_of_sweep_line(sweep: dict[str, Any]) -> None:
    first, second = _out(sweep["first"]), _out(sweep["second"])
    assert sweep["first"].returncode == 1, first[-2000:]  # a job failed
    assert sweep["second"].returncode == 0, second[-2000:]  # allow_failures=true
    failed = next(f.name for f, st in sweep["jobs"].items() if st == "failed")
    assert re.search(rf"4 jobs; 3 done: .*; 0 skipped \(done before\); 1 failed: {re.escape(failed)}", first)
    assert re.search(r"4 jobs; 0 done; 3 skipped \(done before\): .*; 1 failed: ", second)
    assert "exit 0 although jobs failed: allow_failures=true" in second
    # one sync hint per sweep, with the folder; no job of the sweep says its own
    assert second.count("upload them with: wandb sync") == 1 and "upload with: wandb sync" not in second
    assert (
        f"wandb sync {sweep['folder']}/wandb/offline-run-* {sweep['folder']}/*/wandb/offline-run-*" in second
    )


def test_one_metric_namespace_with_the_jobs_numbers(sweep: dict[str, Any]) -> None:
    done = job_runs(sweep, "done")
    assert len(done) == 3
    for folder, r in done.items():
        m = io.read_json(folder / io.METRICS)
        assert r["summary"]["label_accuracy"] == pytest.approx(m["label_accuracy"])
        assert r["summary"]["gold_prob"] == pytest.approx(m["gold_prob"])
        assert r["summary"]["status"] == "done" and r["exit_code"] == 0
        assert not [k for k in r["summary"] if k.split("/")[0] in ("icl", "gd", "icl_order") and "/" in k]
        hist = r["summary"]["gold_prob_hist"]
        assert len(hist["bins"]) == tracking.DEFAULTS["hist_bins"] + 1
        assert hist["bins"][0] == 0.0 and hist["bins"][-1] == 1.0 and sum(hist["values"]) == m["n_queries"]
    icl = next(r for r in done.values() if r["job_type"] == "icl")
    gd = next(r for r in done.values() if r["job_type"] == "gd")
    common = {"accuracy", "label_accuracy", "gold_prob", "entropy", "n_queries"}
    assert common <= set(icl["summary"]) and common <= set(gd["summary"])
    assert "train/loss" in gd["history_keys"] and gd["metrics"]["train/*"] == "train/step"
    table = gd["summary"]["predictions"]
    assert table["_type"] == "table-file" and table["nrows"] == 4


def test_flat_config_names_tags_group_job_types(sweep: dict[str, Any]) -> None:
    runs = job_runs(sweep)
    for folder, r in runs.items():
        cfg = yaml.safe_load((folder / io.CONFIG).read_text())
        flat = {k: r["config"][k] for k in ("method", "dataset", "demos", "seed", "order_seed", "experiment")}
        assert flat == {
            "method": cfg["method"]["name"],
            "dataset": "present_past",
            "demos": 2,
            "seed": cfg["seed"],
            "order_seed": cfg["order_seed"],
            "experiment": "adhoc",
        }
        assert r["config"]["cfg"]["method"] == cfg["method"]  # the whole tree beside the flat keys
        assert {"adhoc", "present_past", cfg["method"]["name"], "tiny_random"} <= set(r["tags"])
    assert {r["name"] for r in runs.values()} == NAMES
    assert {r["job_type"] for r in runs.values()} == {"icl", "icl_order", "gd"}
    assert "order_floor" in next(r["tags"] for r in runs.values() if r["job_type"] == "icl_order")
    assert {r["group"] for r in sweep["runs"]} == {GROUP}  # jobs, compare and report: one group


def test_the_failed_job_run_says_so(sweep: dict[str, Any]) -> None:
    (r,) = job_runs(sweep, "failed").values()
    assert r["exit_code"] == 1 and r["summary"]["status"] == "failed"
    assert "diverged" in r["summary"]["error"] and r["summary"]["error_type"] == "DivergedError"
    assert (
        len([x for x in sweep["runs"] if x["folder"] == next(iter(job_runs(sweep, "failed")))]) == 2
    )  # rerun


def test_predictions_artifacts_and_the_compare_runs_table(sweep: dict[str, Any]) -> None:
    folder, done = sweep["folder"], job_runs(sweep, "done")
    names = {}
    for f, r in done.items():
        ((name, kind, files),) = [a for a in r["artifacts"] if a[1] == "predictions"]
        assert name == tracking.predictions_artifact(GROUP, f.name) and files == [
            "demos.jsonl",
            "predictions.parquet",
        ]
        names[f] = name
    (compare,) = [
        r for r in sweep["runs"] if r["job_type"] == "compare"
    ]  # the first invocation's was superseded
    assert (
        compare["run_id"] == tracking.stable_run_id("compare", folder)
        and compare["name"] == f"compare-{GROUP}"
    )
    assert sorted(compare["config"]["input_artifacts"]) == sorted(names.values())
    (table_file,) = (compare["run_dir"] / "files" / "media" / "table").glob("comparison_[0-9]*.table.json")
    t = json.loads(table_file.read_text())
    rows = pd.DataFrame(t["data"], columns=t["columns"])
    parquet = pd.read_parquet(folder / io.COMPARISON)
    assert len(rows) == len(parquet) and set(rows["pair_type"]) == {"icl_vs_gd", "icl_vs_icl_order"}
    ids = {str(f): r["run_id"] for f, r in done.items()}
    per_set = rows[rows["job_a"].notna()]
    assert list(per_set["run_id_a"]) == [ids[j] for j in per_set["job_a"]]
    assert list(per_set["run_id_b"]) == [ids[j] for j in per_set["job_b"]]
    pooled = rows[rows["job_a"].isna()]
    assert len(pooled) and set(pooled["run_id_a"]) <= set(ids.values())  # one demo set: one job per side
    merged = rows.merge(parquet, on=["pair_type", "metric", "seed"], suffixes=("", "_p"))
    assert merged["mean"].to_numpy() == pytest.approx(merged["mean_p"].to_numpy(), nan_ok=True)


def test_the_report_runs_line_plots_hold_the_jobs_accuracy(sweep: dict[str, Any]) -> None:
    folder = sweep["folder"]
    (report,) = [r for r in sweep["runs"] if r["job_type"] == "report"]
    assert report["run_id"] == tracking.stable_run_id("report", folder)
    key = "plots/present_past/label_accuracy_vs_demos"
    assert key + "_table" in logged_keys(report)
    reference = {
        r["job_type"]: io.read_json(f / io.METRICS)["label_accuracy"]
        for f, r in job_runs(sweep, "done").items()
    }
    assert line_values(report, key) == pytest.approx({"icl": reference["icl"], "gd": reference["gd"]})  # N=2
    queries = pd.read_parquet(folder / io.COMPARISON_QUERIES)
    overlap = queries.groupby("pair_type")["overlap@k"].mean()
    assert line_values(report, "plots/present_past/overlap@k_vs_demos") == pytest.approx(
        {
            "icl vs gd": overlap["icl_vs_gd"],
            "ICL vs ICL in another order (floor)": overlap["icl_vs_icl_order"],
        }
    )
    plots = {p["key"]: p for p in io.read_json(folder / io.WANDB_PLOTS)}
    assert plots["plots/present_past/overlap@k_vs_demos"]["floors"] == ["ICL vs ICL in another order (floor)"]
    assert (folder / io.FIGURES / io.FIG_WANDB).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def line_values(run: dict[str, Any], key: str) -> dict[str, float]:
    """The (single-point) lines of a wandb.plot.line_series the run logged under `key`: line name -> y."""
    (table_file,) = (run["run_dir"] / "files" / "media" / "table").glob(f"{key}_table_*.table.json")
    t = json.loads(table_file.read_text())
    rows = pd.DataFrame(t["data"], columns=t["columns"])
    assert (rows["step"] == 2).all()  # x: the number of demonstrations
    return dict(zip(rows["lineKey"], rows["lineVal"], strict=True))


SPEC_FIELDS = {"x", "y", "z", "metric", "metrics", "groupby"}


def _spec_keys(node: Any, found: set[str]) -> set[str]:
    """Every key a panel names: strings (or objects' `name`) under SPEC_FIELDS, and each chart's table key."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "tableKey":
                found.add(v)
            elif k in SPEC_FIELDS:
                for item in v if isinstance(v, list) else [v]:
                    if isinstance(item, str):
                        found.add(item)
                    elif isinstance(item, dict) and isinstance(item.get("name"), str):
                        found.add(item["name"])
            else:
                _spec_keys(v, found)
    elif isinstance(node, list):
        for v in node:
            _spec_keys(v, found)
    return found


def test_every_dashboard_panel_key_is_logged(sweep: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    folder = sweep["folder"]
    assert dashboard.main([str(folder), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == str((folder / io.DASHBOARD).resolve())
    spec = json.loads((folder / io.DASHBOARD).read_text())
    assert spec["group"] == GROUP and spec["project"] == "icl-gd"
    assert {s["name"] for s in spec["workspace"]["sections"]} == {
        "Accuracy vs demos, by method",
        "Agreement vs demos, by pair (dashed: the noise floor)",
        "Training loss",
        "Dataset: present_past",
    }
    logged = set().union(*(logged_keys(r) for r in sweep["runs"]))
    used = _spec_keys(spec, set()) | {k for keys in spec["panel_keys"].values() for k in keys}
    assert {"demos", "method", "label_accuracy", "train/step", "train/loss", "comparison"} <= used
    assert "plots/present_past/overlap@k_vs_demos_table" in used
    assert sorted(used - logged) == []
