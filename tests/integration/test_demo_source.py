"""The null control demo_source=<dataset>: demos drawn from another task, this task's template, queries and words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from icl_gd import io
from icl_gd.config import config_hash, normalize
from icl_gd.errors import ConfigError
from icl_gd.runner import run
from icl_gd.sweep import tables, verdicts
from icl_gd.sweep.jobs import Job, label_jobs
from icl_gd.sweep.pair_types import ORDER_PAIR, control_source, is_both_control, is_control, order_label
from icl_gd.sweep.pairs import find_pairs
from icl_gd.validation import validate
from tests.helpers.config import compose_config
from tests.helpers.jobs import hand_job


def job(name: str, method: str = "icl", **cfg: Any) -> Job:
    return hand_job(name, method, dataset="sst2", **cfg)


def test_other_task_jobs_pair_with_icl_as_a_control_and_among_themselves_marked() -> None:
    jobs = [
        job("icl"),
        job("icl_o1", order_seed=1),
        job("gd", "gd"),
        job("icl_ag", demo_source="agnews"),
        job("icl_ag_o1", demo_source="agnews", order_seed=1),
        job("gd_ag", "gd", demo_source="agnews"),
    ]
    pairs = {(t, a.folder.name, b.folder.name) for t, a, b in find_pairs(label_jobs(jobs))}
    assert pairs == {
        ("icl_vs_gd", "icl", "gd"),
        (ORDER_PAIR, "icl", "icl_o1"),
        ("icl_vs_gd_both_demos_from_agnews", "icl_ag", "gd_ag"),
        ("icl_vs_icl_order_both_demos_from_agnews", "icl_ag", "icl_ag_o1"),
        ("icl_vs_icl_demos_from_agnews", "icl", "icl_ag"),
        ("icl_vs_gd_demos_from_agnews", "icl", "gd_ag"),
    }
    assert job("x", "gd", demo_source="agnews").shown_label == "gd (demos from agnews)"
    assert job("y", "gd", demo_source="sst2").demo_source is None  # its own task: no control


def test_demo_source_other_is_the_partner_named_in_other_task() -> None:
    cfg = compose_config(["debug=smoke", "output_dir=/tmp/x", "dataset=sst2", "demo_source=other"])
    normalize(cfg)
    assert cfg.demo_source == "agnews"
    direct = compose_config(["debug=smoke", "output_dir=/tmp/x", "dataset=sst2", "demo_source=agnews"])
    assert config_hash(cfg) == config_hash(direct)  # the identity holds the task, not the word "other"
    cfg = compose_config(["debug=smoke", "output_dir=/tmp/x", "dataset=cb", "demo_source=other"])
    with pytest.raises(ConfigError, match=r"other_task, which names none.*other_task\.cb=<a data set"):
        normalize(cfg)


def test_demos_from_its_own_task_are_the_plain_job() -> None:
    own = compose_config(["debug=smoke", "output_dir=/tmp/x", "dataset=sst2", "demo_source=sst2"])
    plain = compose_config(["debug=smoke", "output_dir=/tmp/x", "dataset=sst2"])
    normalize(own)
    assert own.demo_source is None and config_hash(own) == config_hash(plain)


def test_pair_type_rules_read_the_other_task_back() -> None:
    assert control_source("icl_vs_gd_best_demos_from_agnews") == "agnews"
    assert is_control("icl_vs_gd_best_demos_from_agnews") and not is_both_control(
        "icl_vs_gd_demos_from_agnews"
    )
    assert is_both_control("icl_vs_gd_both_demos_from_agnews") and not is_control(
        "icl_vs_gd_both_demos_from_agnews"
    )
    assert control_source("icl_vs_gd_both_demos_from_agnews") is None
    assert order_label("icl_vs_icl_order_both_demos_from_agnews") == "icl"
    assert not is_control("icl_vs_gd") and not is_both_control("icl_vs_gd")
    assert tables.pair_name("icl_vs_gd_demos_from_agnews") == "icl vs gd with demos from agnews (control)"
    assert tables.pair_name("icl_vs_gd_both_demos_from_agnews") == "icl vs gd, both with demos from agnews"
    assert verdicts.row_group("icl_vs_gd_demos_from_agnews") == 2
    assert verdicts.row_group("icl_vs_gd_both_demos_from_agnews") == 3


def test_a_control_pair_is_tested_and_a_pair_of_two_control_jobs_is_not() -> None:
    def rows(pair: str, method_b: str, value: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "pair_type": pair,
                "method_a": "icl",
                "method_b": method_b,
                "model": "m",
                "dataset": "d",
                "demos": 4,
                "eval": "",
                "seed": [0, 0, 1, 1],
                "query_id": ["q0", "q1", "q0", "q1"],
                "overlap@k": [value, value + 0.02, value - 0.02, value],
                "ocs": value,
                "accuracy_a": 1.0,
                "accuracy_b": 0.5,
            }
        )

    q = pd.concat(
        [
            rows(ORDER_PAIR, "icl", 0.9),
            rows("icl_vs_gd_demos_from_agnews", "gd", 0.2),
            rows("icl_vs_gd_both_demos_from_agnews", "gd", 0.4),
            rows("icl_vs_icl_order_both_demos_from_agnews", "icl", 0.1),  # must not be the floor
        ],
        ignore_index=True,
    )
    table = verdicts.headline_table(q).set_index("pair_type")
    assert table.loc["icl_vs_gd_demos_from_agnews", "verdict"] == verdicts.BELOW
    assert table.loc["icl_vs_gd_demos_from_agnews", "floor_overlap@k"] == pytest.approx(0.9)
    assert table.loc["icl_vs_gd_both_demos_from_agnews", "verdict"] == verdicts.BOTH_CONTROL_ROW
    assert table.loc["icl_vs_icl_order_both_demos_from_agnews", "verdict"] == verdicts.FLOOR_ROW


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            ["demo_source=nosuch"],
            r"demo_source=nosuch is not a data set of conf/dataset/.*demo_source=agnews",
        ),
        (["dataset=present_past", "demo_source=sst2"], r"template fills in \['input'\].*same fields"),
        (["dataset=sst2", "demo_source=agnews", "demo_labels=shuffled"], r"one null control at a time"),
        (["dataset=sst2", "demo_source=agnews", "demos=0", "method=zeroshot"], r"demos=0 draws nothing"),
        (["dataset=sst2", "demo_source=linreg"], r"regression lab"),
    ],
)
def test_bad_demo_sources_are_refused_before_any_load(overrides: list[str], needle: str) -> None:
    cfg = compose_config(["debug=smoke", "output_dir=/tmp/x", *overrides])
    with pytest.raises(ConfigError, match=needle):
        validate(cfg)


def _demo_rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / io.DEMOS).read_text().splitlines()]


def test_demos_from_another_task_are_that_tasks_own_in_this_template(tmp_path: Path) -> None:
    """sst2 with demo_source=agnews: the demos agnews's own job draws for the seed (ids, fields, answers in agnews's
    label words), shown in sst2's template; the queries and label words stay sst2's."""
    common = ["debug=smoke", "logger=none", "method=icl", "demos=4", "seed=0"]
    run(
        compose_config([*common, "dataset=agnews", f"output_dir={tmp_path / 'agnews'}"]),
        raise_on_failure=True,
    )
    run(compose_config([*common, "dataset=sst2", f"output_dir={tmp_path / 'sst2'}"]), raise_on_failure=True)
    out = tmp_path / "sst2_from_agnews"
    cfg = compose_config([*common, "dataset=sst2", "demo_source=agnews", f"output_dir={out}"])
    run(cfg, raise_on_failure=True)
    own, borrowed, plain = _demo_rows(tmp_path / "agnews"), _demo_rows(out), _demo_rows(tmp_path / "sst2")
    assert [r["id"] for r in borrowed] == [r["id"] for r in own] != [r["id"] for r in plain]
    assert [r["answer"] for r in borrowed] == [r["answer"] for r in own]
    assert {r["answer"] for r in borrowed} <= {"world", "sports", "business", "technology"}
    for r in borrowed:  # sst2's template around agnews's sentence and answer
        assert r["demo"] == f"Review: {r['fields']['sentence']}\nSentiment: {r['answer']}"
    queries = json.loads((out / io.QUERIES).read_text())
    assert queries == json.loads((tmp_path / "sst2" / io.QUERIES).read_text())
    preds = pd.read_parquet(out / io.PREDICTIONS)
    assert {c for c in preds.columns if c.startswith("p_label/")} == {"p_label/negative", "p_label/positive"}
    assert set(preds.gold) <= {"negative", "positive"}
