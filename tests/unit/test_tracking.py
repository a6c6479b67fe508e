"""icl_gd.tracking against the real wandb library in offline mode, checked by reading its files back.

wandb 0.31 (wandb-core) writes `files/config.yaml` and `files/wandb-summary.json` only for online runs; an
offline run keeps config, group, job type, history and summary in its `run-<id>.wandb` log, which
`read_records` below parses (a LevelDB-style log of `wandb.proto` Record messages, the format `wandb sync`
uploads). Media (tables, images) are plain files under `files/media/`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from icl_gd import tracking
from icl_gd.errors import ConfigError
from icl_gd.tracking import NullTracker, Tracker, WandbTracker, make_tracker
from tests.helpers.wandb_runs import offline_runs, run_folder

wandb = pytest.importorskip("wandb")

WANDB_CFG = {
    "name": "wandb",
    "project": "icl-gd",
    "entity": None,
    "mode": None,
    "tags": [],
    "init_timeout_s": 30,
}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """WANDB_MODE=offline, no credentials, every wandb folder under tmp_path; returns the job's output dir."""
    home = tmp_path / "wandb_home"
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    for var, sub in [
        ("WANDB_DIR", "dir"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ]:
        monkeypatch.setenv(var, str(home / sub))
    yield tmp_path / "job"
    wandb.teardown()  # wandb caches env-derived settings per process; the next test starts clean


def make(out: Path, **kw: Any) -> Tracker:
    args = {"config": {"seed": 0, "model": {"name": "tiny_random"}}, "group": "sweep-1", "job_type": "icl"}
    return make_tracker(kw.pop("logger_cfg", WANDB_CFG), output_dir=out, **(args | kw))


# ----------------------------------------------------------------------------------------------------------
# Offline runs write what was logged


def test_offline_run_records_config_group_job_type_log_and_summary(
    offline: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from omegaconf import OmegaConf

    caplog.set_level(logging.INFO, logger="icl_gd.tracking")
    logger_cfg = OmegaConf.create(WANDB_CFG | {"tags": ["smoke"]})  # the Hydra node, as the runner passes it
    config = OmegaConf.create({"seed": 3, "n_demos": 4, "demos": {"k": "${n_demos}"}})
    t = make(offline, logger_cfg=logger_cfg, config=config, job_type="gd", name="gd-seed3")
    assert isinstance(t, WandbTracker) and t.mode == "offline"
    assert isinstance(t, Tracker)
    assert t.run.group == "sweep-1" and t.run.job_type == "gd"

    t.log({"gd/train_loss": 0.5}, step=0)
    t.log({"gd/train_loss": 0.25}, step=1)
    t.summary({"icl/accuracy": 0.75, "compare/overlap@10": 0.4})
    t.finish()
    t.finish()  # idempotent

    (run_dir,) = offline_runs(offline)
    assert t.run_dir == run_dir.resolve()
    info = run_folder(run_dir)
    assert info["group"] == "sweep-1" and info["job_type"] == "gd" and info["name"] == "gd-seed3"
    assert info["tags"] == ["smoke"]
    assert info["config"]["seed"] == 3 and info["config"]["demos"] == {"k": 4}  # resolved
    assert info["summary"]["icl/accuracy"] == 0.75
    assert info["summary"]["compare/overlap@10"] == 0.4
    assert info["summary"]["gd/train_loss"] == 0.25  # last logged value
    assert "gd/train_loss" in info["history_keys"]

    hint = f"W&B offline run saved in {run_dir}; upload with: wandb sync {run_dir}"
    assert hint in caplog.messages


def test_log_table_histogram_image_artifact(offline: Path, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "fig.png"
    Image.new("RGB", (4, 4), "red").save(png)
    artifact_file = tmp_path / "metrics.json"
    artifact_file.write_text('{"icl/accuracy": 0.5}')
    df = pd.DataFrame({"query": [0, 1], "label": ["pos", "neg"], "topk": [[5, 7], [9]], "p": [0.5, 0.25]})

    t = make(offline, job_type="compare")
    t.log_table("compare/pairs", df)
    t.log_histogram("icl/entropy", [0.1, 0.2, float("nan"), 0.4])
    t.log_histogram("icl/empty", [float("nan")])  # nothing finite: skipped, no error
    t.log_image("report/curve", png)
    t.log_artifact(artifact_file, name="metrics icl/seed 0", type="metrics")
    assert t._failures == 0
    t.finish()

    (run_dir,) = offline_runs(offline)
    (table_file,) = (run_dir / "files" / "media" / "table" / "compare").glob("pairs_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["query", "label", "topk", "p"]
    assert table["data"] == [[0, "pos", [5, 7], 0.5], [1, "neg", [9], 0.25]]  # list cells stay lists
    assert list((run_dir / "files" / "media" / "images" / "report").glob("curve_*.png"))
    summary = run_folder(run_dir)["summary"]
    assert summary["compare/pairs"]["_type"] == "table-file" and summary["compare/pairs"]["nrows"] == 2
    assert summary["icl/entropy"]["_type"] == "histogram" and sum(summary["icl/entropy"]["values"]) == 3
    assert "icl/empty" not in summary


def test_two_trackers_in_one_process_write_two_runs(offline: Path) -> None:
    first = make(offline, job_type="icl")
    first.log({"icl/accuracy": 1.0})
    first.finish()
    second = make(offline, job_type="gd")
    second.log({"gd/accuracy": 0.0})
    third = make(offline, job_type="compare")  # second left open: wandb finishes it (reinit=finish_previous)
    second.finish()  # no error although wandb already finished it
    third.finish()

    runs = offline_runs(offline)
    assert len(runs) == 3 and len({first.run_dir, second.run_dir, third.run_dir}) == 3
    jobs = {run_folder(r)["job_type"]: run_folder(r) for r in runs}
    assert set(jobs) == {"icl", "gd", "compare"}
    assert jobs["icl"]["summary"]["icl/accuracy"] == 1.0
    assert jobs["gd"]["summary"]["gd/accuracy"] == 0.0


# ----------------------------------------------------------------------------------------------------------
# Off and broken: no-ops, never an exception


def exercise(t: Tracker, tmp_path: Path) -> None:
    t.log({"icl/accuracy": 0.5}, step=0)
    t.summary({"icl/accuracy": 0.5})
    t.log_table("t", pd.DataFrame({"a": [1]}))
    t.log_histogram("h", [1.0, 2.0])
    t.log_image("i", tmp_path / "missing.png")
    t.log_artifact(tmp_path / "missing.txt", name="a", type="t")
    t.finish()
    t.finish()


def test_logger_none_is_a_null_tracker_writing_nothing(offline: Path, tmp_path: Path) -> None:
    for cfg in ({"name": "none"}, None):
        t = make(offline, logger_cfg=cfg)
        assert type(t) is NullTracker and t.run_dir is None
        exercise(t, tmp_path)
    assert not offline.exists()


def test_wandb_mode_disabled_writes_nothing(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    t = make(offline)
    assert t.run_dir is None
    exercise(t, tmp_path)
    assert not (offline / "wandb").exists()


def test_init_failure_degrades_to_no_ops(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_init(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("backend exploded")

    monkeypatch.setattr(wandb, "init", broken_init)
    t = make(offline)
    assert t.run_dir is None
    exercise(t, tmp_path)
    assert any("backend exploded" in m for m in caplog.messages)


def test_online_init_failure_retries_offline(
    offline: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_init, modes = wandb.init, []

    def unreachable_when_online(*args: Any, **kwargs: Any) -> Any:
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise TimeoutError("api.wandb.ai unreachable")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", unreachable_when_online)
    t = make(offline, logger_cfg=WANDB_CFG | {"mode": "online"})  # config mode wins over WANDB_MODE=offline
    t.summary({"icl/accuracy": 0.5})
    t.finish()
    assert modes == ["online", "offline"]
    assert any("retrying offline" in m for m in caplog.messages)
    (run_dir,) = offline_runs(offline)
    assert run_folder(run_dir)["summary"]["icl/accuracy"] == 0.5


def test_errors_while_logging_are_caught_then_logging_stops(
    offline: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    t = make(offline)
    calls = []

    def broken_log(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        raise ValueError("bad value")

    monkeypatch.setattr(t.run, "log", broken_log)
    for i in range(5):
        t.log({"icl/accuracy": float(i)})
    assert len(calls) == tracking._MAX_FAILURES  # gave up after that many failures
    assert sum("bad value" in m for m in caplog.messages) == tracking._MAX_FAILURES
    t.finish()  # the run is still closed properly
    assert offline_runs(offline)


# ----------------------------------------------------------------------------------------------------------
# Mode resolution (no wandb run)


def test_mode_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc_file = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc_file))

    assert tracking.resolve_mode(None) == "offline"  # no key anywhere
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    os.chmod(netrc_file, 0o600)
    assert tracking.has_api_key() and tracking.resolve_mode(None) == "online"
    netrc_file.write_text("machine api.forge.coreweave.com login user password " + "k" * 40 + "\n")
    assert tracking.resolve_mode(None) == "online"  # wandb >= 0.31's default host
    netrc_file.write_text("machine example.com login user password secret\n")
    assert tracking.resolve_mode(None) == "offline"  # an entry for another host is no key
    monkeypatch.setenv("WANDB_BASE_URL", "https://example.com")  # a private server: its own entry counts
    assert tracking.resolve_mode(None) == "online"
    monkeypatch.delenv("WANDB_BASE_URL")
    netrc_file.write_text("machine api.wandb.ai login\n")  # malformed: treated as no key, no exception
    assert tracking.resolve_mode(None) == "offline"

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.resolve_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")  # explicit env beats auto
    assert tracking.resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # wandb's old spelling
    assert tracking.resolve_mode(None) == "offline"
    assert tracking.resolve_mode("online") == "online"  # the config beats everything
    assert tracking.resolve_mode("Disabled") == "disabled"


def test_config_errors_name_the_key_and_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"logger\.name='tensorboard'.*'wandb', 'none'"):
        make_tracker({"name": "tensorboard"}, output_dir=tmp_path, config={}, group=None, job_type="icl")
    with pytest.raises(ConfigError, match=r"logger\.mode='sometimes'.*'online', 'offline', 'disabled'"):
        make_tracker(
            WANDB_CFG | {"mode": "sometimes"}, output_dir=tmp_path, config={}, group=None, job_type="icl"
        )


# ----------------------------------------------------------------------------------------------------------
# What a run is called: flat keys, names, groups, tags (pure; no wandb run)

JOB = {
    "method": {"name": "icl", "tag": None},
    "dataset": {"name": "sst2"},
    "model": {"name": "tiny_random"},
    "demos": 8,
    "seed": 0,
    "order_seed": None,
    "demo_labels": "original",
}


def test_flat_keys_name_tags_and_job_type_say_what_a_job_is() -> None:
    flat = tracking.flat_keys(JOB, None)
    assert flat == {
        "method": "icl",
        "method_label": "icl",
        "dataset": "sst2",
        "model": "tiny_random",
        "demos": 8,
        "seed": 0,
        "order_seed": None,
        "demo_labels": "original",
        "experiment": "adhoc",
    }
    assert set(flat) == set(tracking.FLAT_KEYS)
    template = tracking.DEFAULTS["run_name"]
    assert tracking.run_name(template, flat, "job0") == "icl-sst2-N8-s0"
    assert tracking.job_type_of(flat) == "icl"
    assert tracking.run_tags(flat) == ["adhoc", "sst2", "icl", "tiny_random"]  # distinct: label == method

    floor = tracking.flat_keys({**JOB, "order_seed": 1, "demo_labels": "shuffled"}, "dai")
    assert tracking.run_name(template, floor, "job1") == "icl-sst2-N8-s0-o1-shuffled"
    assert tracking.job_type_of(floor) == "icl_order"  # the ICL noise floor is its own job type
    assert tracking.run_tags(floor) == ["dai", "sst2", "icl", "tiny_random", "order_floor", "shuffled_labels"]

    tagged = tracking.flat_keys({**JOB, "method": {"name": "gd", "tag": "gd_best"}}, None)
    assert tracking.run_name("{method}:{method_label}:{job}", tagged, "j") == "gd:gd_best:j"


def test_job_run_puts_flat_keys_beside_the_tree() -> None:
    args = tracking.job_run(
        JOB, {"name": "wandb"}, experiment=None, group="g", job="j", extra={"versions": {}}
    )
    assert args["config"]["method"] == "icl" and args["config"]["cfg"]["method"] == JOB["method"]
    assert args["config"]["versions"] == {} and args["group"] == "g"
    assert (args["job_type"], args["name"]) == ("icl", "icl-sst2-N8-s0")


def test_group_is_the_experiment_and_the_sweeps_start_time(tmp_path: Path) -> None:
    default = tmp_path / "multirun" / "2026-01-01" / "21-28-21"
    assert tracking.sweep_label(default) == "2026-01-01_21-28-21"
    assert tracking.sweep_label(tmp_path / "my_sweep") == "my_sweep"
    assert tracking.sweep_group(None, default, None) == "adhoc-2026-01-01_21-28-21"
    assert (
        tracking.sweep_group({"group": "{sweep}@{experiment}"}, default, "dai") == "2026-01-01_21-28-21@dai"
    )
    assert tracking.sweep_group({"group": "fixed"}, default, "dai") == "fixed"


def test_a_template_with_an_unknown_field_names_the_key_and_the_fields() -> None:
    with pytest.raises(ConfigError, match=r"logger\.group=.*\{experiment\}, \{sweep\}"):
        tracking.sweep_group({"group": "{date}"}, Path("s"), None)
    with pytest.raises(ConfigError, match=r"logger\.run_name=.*\{method\}.*\{job\}"):
        tracking.run_name("{lr}", tracking.flat_keys(JOB, None), "j")


def test_stable_ids_and_artifact_names(tmp_path: Path) -> None:
    a = tracking.stable_run_id("compare", tmp_path / "s")
    assert a == tracking.stable_run_id("compare", tmp_path / "x" / ".." / "s")  # the resolved folder
    assert a != tracking.stable_run_id("compare", tmp_path / "t") and a.startswith("compare-")
    assert len(a) == len("compare-") + 12
    long = tracking.predictions_artifact("g" * 100, "method=gd,lr=" + "1" * 100)
    assert len(long) == 128 and long.startswith("predictions-ggg")
    assert long != tracking.predictions_artifact("g" * 100, "method=gd,lr=" + "1" * 99)
    assert tracking.predictions_artifact(None, "method=gd,seed=0") == "predictions-method-gd-seed-0"


def test_run_id_of_reads_the_newest_run_folder(tmp_path: Path) -> None:
    assert tracking.run_id_of(tmp_path) is None
    for name in ("offline-run-20260101_000000-old1", "offline-run-20260102_000000-compare-abc", "run-x"):
        (tmp_path / "wandb" / name).mkdir(parents=True)
    assert tracking.run_id_of(tmp_path) == "compare-abc"  # ids may hold dashes


# ----------------------------------------------------------------------------------------------------------
# Honest runs: exit codes, fixed bins, stable ids, one fallback and one hint per process


def test_histogram_bins_are_fixed_on_the_unit_interval(offline: Path) -> None:
    t = make(offline, logger_cfg=WANDB_CFG | {"hist_bins": 4})
    t.log_histogram("gold_prob_hist", [0.1, 0.2, 0.3, 0.9, float("nan")], bounds=tracking.PROB_RANGE)
    t.finish(exit_code=1)
    info = run_folder(offline_runs(offline)[0])
    assert info["exit_code"] == 1
    assert info["summary"]["gold_prob_hist"]["bins"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert info["summary"]["gold_prob_hist"]["values"] == [2, 1, 0, 1]
    assert info["metrics"] == {"train/step": "", "train/*": "train/step"}  # train curves against train/step


def test_a_stable_id_resumes_one_run_and_drops_the_superseded_offline_copy(offline: Path) -> None:
    rid = tracking.stable_run_id("compare", offline)
    for value in (1.0, 2.0):
        t = make(offline, job_type="compare", run_id=rid)
        t.summary({"n_pairs": value})
        t.use_artifact("predictions-x", type="predictions")  # offline: no lineage, and no error
        assert t._failures == 0
        t.finish()
    (run_dir,) = offline_runs(offline)
    info = run_folder(run_dir)
    assert info["run_id"] == rid and info["summary"]["n_pairs"] == 2.0


def test_after_one_failed_online_init_the_process_stays_offline(
    offline: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_init, modes = wandb.init, []

    def unreachable_when_online(*args: Any, **kwargs: Any) -> Any:
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise TimeoutError("unreachable")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", unreachable_when_online)
    online = WANDB_CFG | {"mode": "online"}
    for job in ("a", "b", "c"):
        make(offline / job, logger_cfg=online).finish()
    assert modes == ["online", "offline", "offline", "offline"]  # one wait, not three
    assert sum("every later W&B run of this process starts offline" in m for m in caplog.messages) == 1


def test_the_sync_hint_is_said_once_per_sweep_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="icl_gd.tracking")
    sweep = tmp_path / "sweep"
    for d in ("wandb/offline-run-20260101_000000-c", "job/wandb/offline-run-20260101_000000-j"):
        (sweep / d).mkdir(parents=True)
    tracking.sync_hint(sweep)
    tracking.sync_hint(sweep)
    hints = [m for m in caplog.messages if "wandb sync" in m]
    assert hints == [
        f"W&B offline runs of {sweep}; upload them with: wandb sync {sweep}/wandb/offline-run-* "
        f"{sweep}/*/wandb/offline-run-*"
    ]
    tracking.sync_hint(tmp_path / "empty")  # no offline run: nothing to say
    assert len([m for m in caplog.messages if "wandb sync" in m]) == 1
