"""Loading, templates and sampling: real files from ../shared/data, and broken ones made in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icl_gd.data import (
    Example,
    Template,
    load_splits,
    order_demos,
    resolve_data_dir,
    sample_demos,
    sample_queries,
)
from icl_gd.data.prompts import build_prompt
from icl_gd.errors import ConfigError, DataError
from tests.helpers.config import DATA, compose_config


def ds_cfg(*overrides: str):
    cfg = compose_config(["output_dir=/tmp/x", *overrides])
    return cfg.dataset, resolve_data_dir(cfg)


@pytest.mark.parametrize(
    ("dataset", "n_pool", "n_test"),
    [
        ("sst2", 436, 436),
        ("sst5", 8544, 1101),
        ("trec", 5452, 500),
        ("agnews", 3800, 3800),
        ("cb", 250, 56),
        ("rte", 2490, 277),
        ("present_past", 147, 146),
        ("country_capital", 99, 98),
    ],
)
def test_shared_data_sets_load_with_their_sizes(dataset: str, n_pool: int, n_test: int) -> None:
    ds, data_dir = ds_cfg(f"dataset={dataset}")
    s = load_splits(ds, data_dir)
    assert (len(s.pool), len(s.test)) == (n_pool, n_test)
    assert not {e.id for e in s.pool} & {
        e.id for e in s.test
    }  # a seeded split never leaks a query into the pool
    words = set(ds.label_words.values()) if ds.label_words else None
    assert words is None or {e.answer for e in s.test} <= words


def test_data_dir_defaults_to_shared_and_env_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ICL_GD_DATA", raising=False)
    assert resolve_data_dir(compose_config(["output_dir=/tmp/x"])) == DATA.resolve()
    monkeypatch.setenv("ICL_GD_DATA", str(tmp_path))
    assert resolve_data_dir(compose_config(["output_dir=/tmp/x"])) == tmp_path


def test_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    ds, _ = ds_cfg("dataset=sst2")
    with pytest.raises(DataError) as e:
        load_splits(ds, tmp_path)
    msg = str(e.value)
    assert (
        str(tmp_path / "classification/sst2/dev.jsonl") in msg and "data_dir" in msg and "ICL_GD_DATA" in msg
    )


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def jsonl_cfg(path: Path):
    ds, _ = ds_cfg(
        "dataset=jsonl",
        f"dataset.path={path}",
        "dataset.text_fields=[text]",
        "+dataset.label_words={a: yes, b: no}",
        "dataset.template='T: {text} L: {label}'",
    )
    return ds


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    f = write(tmp_path / "d.jsonl", '{"text": "x", "label": "a"}\n{"text": "y", "label": \n')
    with pytest.raises(DataError, match=r"d.jsonl:2: malformed JSON"):
        load_splits(jsonl_cfg(f), tmp_path)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "holds no examples"),
        (b'{"text": "\xff\xfe", "label": "a"}\n', "not UTF-8"),
        ('{"txt": "x", "label": "a"}\n', "no field(s) ['text']"),
        ('{"text": "x", "label": "c"}\n', "label 'c', not in dataset.label_words"),
        ("[1, 2]\n", "expected a JSON object"),
    ],
)
def test_broken_files_fail_with_a_clear_message(tmp_path: Path, content, needle: str) -> None:
    f = write(tmp_path / "d.jsonl", content)
    with pytest.raises(DataError) as e:
        load_splits(jsonl_cfg(f), tmp_path)
    assert needle in str(e.value)


def test_user_jsonl_and_wordpair_files_load(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(10)]
    f = write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    s = load_splits(jsonl_cfg(f), tmp_path)
    assert len(s.pool) + len(s.test) == 10 and {e.answer for e in s.pool + s.test} == {"yes", "no"}
    wp = write(tmp_path / "w.json", json.dumps([{"input": f"i{i}", "output": f"o{i}"} for i in range(6)]))
    ds, _ = ds_cfg("dataset=wordpairs", f"dataset.path={wp}")
    s = load_splits(ds, tmp_path)
    assert sorted(e.answer for e in s.pool + s.test) == [f"o{i}" for i in range(6)]


def test_template_puts_the_space_before_the_label_into_the_answer() -> None:
    t = Template("Q: {input}\nA: {label}", ["input"])
    assert t.query({"input": "walk"}, "walked") == ("Q: walk\nA:", " walked")
    assert t.demo({"input": "walk"}, "walked") == "Q: walk\nA: walked"
    assert build_prompt(["d1", "d2"], "q", "\n\n") == "d1\n\nd2\n\nq"
    assert build_prompt([], "q", "\n\n") == "q"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("Q: {input}", "has no {label}"),
        ("{label} Q: {input}", "must end"),
        ("Q: {inp}\nA: {label}", "inp"),
        ("Q: {input\nA: {label}", "not a valid format string"),
    ],
)
def test_bad_templates(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as e:
        Template(text, ["input"])
    assert needle in str(e.value)


def test_demos_and_queries_depend_only_on_dataset_n_seed_and_order() -> None:
    ds, data_dir = ds_cfg("dataset=sst2")
    s = load_splits(ds, data_dir)
    d8 = sample_demos(s.pool, 8, 0, "sst2")
    assert [e.id for e in d8] == [e.id for e in sample_demos(s.pool, 8, 0, "sst2")]
    assert [e.id for e in d8] != [e.id for e in sample_demos(s.pool, 8, 1, "sst2")]
    q = sample_queries(s.test, 50, 0, "sst2")
    assert [e.id for e in sample_queries(s.test, 20, 0, "sst2")] == [e.id for e in q[:20]]
    assert not {e.id for e in d8} & {e.id for e in q}
    reordered = order_demos(d8, 3)
    assert sorted(e.id for e in reordered) == sorted(e.id for e in d8) and reordered != d8
    assert order_demos(d8, None) == d8 and order_demos(d8, 3) == reordered


def test_balanced_sampling_alternates_labels() -> None:
    ds, data_dir = ds_cfg("dataset=agnews")
    demos = sample_demos(load_splits(ds, data_dir).pool, 8, 0, "agnews", "balanced")
    labels = [e.label for e in demos]
    assert sorted(labels) == sorted(["1", "2", "3", "4"] * 2) and len(set(labels[:4])) == 4


def test_too_many_demos_or_queries_fail_with_the_pool_size() -> None:
    ds, data_dir = ds_cfg("dataset=country_capital")
    s = load_splits(ds, data_dir)
    with pytest.raises(ConfigError, match="demos=500 exceeds the demonstration pool .*99 examples"):
        sample_demos(s.pool, 500, 0, "country_capital")
    with pytest.raises(ConfigError, match="eval.n_queries=1000 exceeds the 98 test examples"):
        sample_queries(s.test, 1000, 0, "country_capital")


def test_another_order_is_never_the_sampled_order() -> None:
    """The ICL-vs-ICL floor compares two orders: an order_seed never gives back the identity (n >= 2)."""
    two = [Example("a", {}, "x", "x"), Example("b", {}, "y", "y")]
    for seed in range(20):
        assert order_demos(two, seed) == two[::-1]
    assert order_demos(two[:1], 5) == two[:1]  # one demo has one order
