"""Nothing silent: one test per class of the integrity issue. A failure names the key or value and the fix (and
exits non-zero with a failed status.json); a wrong-result class now gives the corrected number.

Each class is named in its test's docstring; the lab's numeric ranges are in tests/unit/test_lab_ranges.py and
the sweep-level failures (unreadable files at compare time, failed jobs at the end of a sweep) in
tests/e2e/test_sweep_failures.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import stat
from pathlib import Path

import pandas as pd
import pytest

from icl_gd import io
from icl_gd.config import DIRNAME_MAX, job_dirname
from icl_gd.errors import ConfigError, DataError
from icl_gd.runner import run
from icl_gd.validation import validate
from tests.helpers.cli import run_py
from tests.helpers.config import ROOT, compose_config

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "table",
    "window",
    "garden",
    "pencil",
    "mountain",
    "candle",
    "ocean",
    "bridge",
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small files of this module's own: labels pos/neg, labels "0"/"1", one label only, word pairs with a null."""
    d = tmp_path_factory.mktemp("data")
    write_jsonl(
        d / "rating.jsonl",
        [{"text": f"{w} {i}", "label": "pos" if i % 2 else "neg"} for i, w in enumerate(WORDS * 2)],
    )
    write_jsonl(
        d / "binary.jsonl", [{"text": f"{w} {i}", "label": str(i % 2)} for i, w in enumerate(WORDS * 2)]
    )
    write_jsonl(d / "one_label.jsonl", [{"text": w, "label": "pos"} for w in WORDS])
    pairs = [{"input": w, "output": w.upper()} for w in WORDS]
    pairs[3]["output"] = None
    (d / "null_pairs.json").write_text(json.dumps(pairs))
    pairs[3]["output"] = "  "
    (d / "empty_pairs.json").write_text(json.dumps(pairs))
    return d


def rating(data: Path, *more: str, words: str = "{pos: positive, neg: negative}") -> list[str]:
    return [
        "dataset=jsonl",
        f"dataset.path={data / 'rating.jsonl'}",
        "dataset.text_fields=[text]",
        f"+dataset.label_words={words}",
        "dataset.template='Text: {text} Label: {label}'",
        *more,
    ]


def failed_loudly(proc, folder: Path | None, *names: str) -> None:
    """Non-zero exit, every name in the output, and a failed status.json where the job has a folder."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    for name in names:
        assert re.search(name, out), f"{name!r} not in the output:\n{out[-2000:]}"
    if folder is not None and (folder / io.STATUS).exists():
        assert io.read_status(folder)["status"] == "failed"


# ---- silent exits -------------------------------------------------------------------------------------------


def test_an_unset_environment_variable_fails_naming_it_and_the_fix(tmp_path: Path) -> None:
    """Silent exit: ${oc.env:UNSET} in a value is a logged ConfigError, exit non-zero, status.json failed."""
    env = {k: v for k, v in os.environ.items() if k != "ICL_GD_TEST_UNSET"}
    proc = run_py(
        "debug=smoke",
        "data_dir=${oc.env:ICL_GD_TEST_UNSET}",
        f"hydra.run.dir={tmp_path}",
        env={**env, "WANDB_MODE": "offline"},
        check=False,
    )
    failed_loudly(proc, tmp_path, "ICL_GD_TEST_UNSET", r"export NAME|oc\.env:NAME,default")
    assert io.read_status(tmp_path)["error_type"] == "ConfigError"


def test_an_interpolation_inside_a_template_says_how_to_write_it_literally(tmp_path: Path) -> None:
    """Silent exit: a ${...} inside dataset.template names the key and the escape."""
    proc = run_py(
        "debug=smoke",
        "dataset.template='Q: {input} ${shape}\\nA: {label}'",
        f"hydra.run.dir={tmp_path}",
        check=False,
    )
    failed_loudly(proc, tmp_path, "dataset.template", "shape", r"\\\$\{\.\.\.\}")


def test_a_plus_dict_with_int_keys_replaces_a_sets_label_words(smoke) -> None:
    """Silent exit: '+dataset.label_words={0: no, 1: yes}' on sst2 (whose keys are "0"/"1") now runs with no/yes."""
    cfg = smoke("dataset=sst2", "+dataset.label_words={0: no, 1: yes}", "method=zeroshot", "demos=0")
    m = run(cfg, raise_on_failure=True)
    df = pd.read_parquet(Path(cfg.output_dir) / io.PREDICTIONS)
    assert set(df.gold) <= {"no", "yes"} and m["label_accuracy"] == (df.pred_label == df.gold).mean()


def test_every_failure_is_logged_with_its_type_and_ends_non_zero(tmp_path: Path) -> None:
    """Silent exit: an unexpected error (a wrong type inside a method's setting) is logged, not swallowed."""
    proc = run_py("debug=smoke", "method=gd", "method.epochs=two", f"hydra.run.dir={tmp_path}", check=False)
    failed_loudly(proc, tmp_path, "method.epochs", "ConfigError")


def test_a_done_job_whose_metrics_do_not_read_back_is_redone(smoke, caplog) -> None:
    """Silent exit: a truncated metrics.json of a done job is redone with a warning, never fatal."""
    cfg = smoke("method=zeroshot", "demos=0")
    first = run(cfg, raise_on_failure=True)
    out = Path(cfg.output_dir)
    (out / io.METRICS).write_text((out / io.METRICS).read_text()[:20])
    assert run(cfg, raise_on_failure=True) == first
    assert "does not read back" in caplog.text and json.loads((out / io.METRICS).read_text()) == first


# ---- silent wrong results -----------------------------------------------------------------------------------


def test_the_readmes_custom_template_command_puts_real_newlines_in_prompts(
    data: Path, tmp_path: Path
) -> None:
    """Wrong result: Hydra keeps \\n as two characters; templates (and separators) interpret \\n, \\t and \\\\."""
    readme = (ROOT / "README.md").read_text()
    line = next(raw for raw in readme.splitlines() if "dataset=jsonl dataset.path=" in raw)
    rest = next(raw for raw in readme.splitlines() if "Text: {text}" in raw)
    args = shlex.split(line.rstrip("\\").split("run.py", 1)[1]) + shlex.split(rest)
    args = [f"dataset.path={data / 'rating.jsonl'}" if a.startswith("dataset.path=") else a for a in args]
    run_py(*args, "debug=smoke", f"hydra.run.dir={tmp_path}")
    demos = [json.loads(raw) for raw in (tmp_path / io.DEMOS).read_text().splitlines()]
    assert demos and all(re.fullmatch(r"Text: .*\nLabel: (positive|negative)", d["demo"]) for d in demos)


def test_label_words_sharing_a_first_token_report_no_first_token_accuracy(data: Path, smoke, caplog) -> None:
    """Wrong result: 'very good'/'very bad' made accuracy count ' very' as right; it is now NaN, with a warning."""
    cfg = smoke(*rating(data, words="{pos: very good, neg: very bad}"))
    m = run(cfg, raise_on_failure=True)
    assert math.isnan(m["accuracy"]) and m["first_token_shared"] == 1.0 and 0 <= m["label_accuracy"] <= 1
    df = pd.read_parquet(Path(cfg.output_dir) / io.PREDICTIONS)
    assert df.correct.isna().all() and m["label_accuracy"] == (df.pred_label == df.gold).mean()
    assert "share their first token" in caplog.text and "very good" in caplog.text


def test_distinct_first_tokens_keep_accuracy(data: Path, smoke) -> None:
    m = run(smoke(*rating(data)), raise_on_failure=True)
    assert m["first_token_shared"] == 0.0 and not math.isnan(m["accuracy"])


@pytest.mark.parametrize(
    ("overrides", "error", "names"),
    [
        (
            ["dataset.path={d}/one_label.jsonl", "dataset.label_words={pos: positive}"],
            ConfigError,
            ["single label", "at least two"],
        ),
        (
            ["dataset.path={d}/one_label.jsonl"],
            DataError,
            ["every example has the label 'pos'", "label_field"],
        ),
        (["dataset.test_path={d}/rating.jsonl"], DataError, ["test_path is dataset.path", "test_path=null"]),
    ],
    ids=["one_label_word", "one_label_in_data", "test_file_is_demo_file"],
)
def test_degenerate_classification_data_is_refused(data, smoke, overrides, error, names) -> None:
    """Wrong result: a single label (every answer right) or queries drawn from the demo file are refused."""
    words = [o.split("=", 1)[1] for o in overrides if o.startswith("dataset.label_words=")]
    overrides = [o for o in overrides if not o.startswith("dataset.label_words=")]
    cfg = smoke(
        *rating(data, **({"words": words[0]} if words else {})),
        *[o.replace("{d}", str(data)) for o in overrides],
    )
    with pytest.raises(error) as e:
        run(cfg, raise_on_failure=True)
    for name in names:
        assert name in str(e.value)


@pytest.mark.parametrize("name", ["null_pairs", "empty_pairs"])
def test_word_pairs_with_a_null_or_empty_answer_are_refused(data: Path, smoke, name: str) -> None:
    """Wrong result: a null output became the answer "None"; now the row is named."""
    with pytest.raises(DataError, match=r"row 4 has an empty or null 'output'.*Fix or delete that row"):
        run(smoke("dataset=wordpairs", f"dataset.path={data / name}.json"), raise_on_failure=True)


def test_queries_that_are_demonstrations_are_counted_and_warned(tmp_path: Path, smoke, caplog) -> None:
    """Wrong result: a test file that repeats the demo file's rows lets ICL copy the answer: warned, counted."""
    rows = [{"input": w, "output": w.upper()} for w in WORDS]
    (tmp_path / "pool.json").write_text(json.dumps(rows))
    (tmp_path / "test.json").write_text(json.dumps(rows[:4]))
    cfg = smoke(
        "dataset=wordpairs",
        f"dataset.path={tmp_path / 'pool.json'}",
        f"dataset.test_path={tmp_path / 'test.json'}",
        "demos=8",
    )
    m = run(cfg, raise_on_failure=True)
    shown = {
        json.loads(s)["fields"]["input"] for s in (Path(cfg.output_dir) / io.DEMOS).read_text().splitlines()
    }
    seen = {r["input"] for r in rows[:4]} & shown
    assert m["queries_seen_as_demos"] == len(seen) > 0 and "also demonstrations" in caplog.text


def test_a_prompt_past_the_context_is_refused_before_any_forward_pass(smoke) -> None:
    """Wrong result: a prompt past the position limit ran anyway; eval.overflow=error refuses it with the fix."""
    cfg = smoke("demos=8", "+model.arch.max_position_embeddings=48")
    with pytest.raises(ConfigError, match=r"past the model's context of 48 tokens.*eval\.overflow=truncate"):
        run(cfg, raise_on_failure=True)
    assert not (Path(cfg.output_dir) / io.PREDICTIONS).exists()


def test_overflow_truncate_drops_the_first_demos_and_says_so(smoke, caplog) -> None:
    cfg = smoke("demos=8", "+model.arch.max_position_embeddings=48", "eval.overflow=truncate")
    m = run(cfg, raise_on_failure=True)
    demos = (Path(cfg.output_dir) / io.DEMOS).read_text().splitlines()
    assert 0 < m["n_demos"] == len(demos) < 8 and m["demos_dropped"] == 8 - m["n_demos"]
    assert "dropped the first" in caplog.text


def test_int_keys_of_an_inline_label_map_match_the_files_text_labels(data: Path, smoke) -> None:
    """Wrong result: '+dataset.label_words={0: objective, 1: subjective}' was refused for labels "0"/"1"."""
    cfg = smoke(
        "dataset=jsonl",
        f"dataset.path={data / 'binary.jsonl'}",
        "dataset.text_fields=[text]",
        "+dataset.label_words={0: objective, 1: subjective}",
        "dataset.template='Text: {text} L: {label}'",
    )
    m = run(cfg, raise_on_failure=True)
    demos = [json.loads(s) for s in (Path(cfg.output_dir) / io.DEMOS).read_text().splitlines()]
    assert {d["answer"] for d in demos} <= {"objective", "subjective"} and "label_accuracy" in m
    assert {d["label"] for d in demos} <= {"0", "1"}


def test_boolean_label_keys_match_json_booleans(tmp_path: Path, smoke) -> None:
    path = write_jsonl(
        tmp_path / "bool.jsonl", [{"text": w, "label": i % 2 == 0} for i, w in enumerate(WORDS)]
    )
    cfg = smoke(
        "dataset=jsonl",
        f"dataset.path={path}",
        "dataset.text_fields=[text]",
        "+dataset.label_words={true: yes, false: no}",
        "dataset.template='{text} {label}'",
    )
    run(cfg, raise_on_failure=True)
    demos = [json.loads(s) for s in (Path(cfg.output_dir) / io.DEMOS).read_text().splitlines()]
    assert {(d["label"], d["answer"]) for d in demos} <= {("true", "yes"), ("false", "no")}


@pytest.mark.parametrize(
    ("override", "key", "nearest"),
    [
        ("+order_sed=1", "order_sed", "order_seed"),
        ("+eval.n_query=3", "eval.n_query", "eval.n_queries"),
        ("+model.dtyp=float32", "model.dtyp", "model.dtype"),
    ],
)
def test_an_unknown_key_added_with_plus_names_the_nearest_known_key(override, key, nearest) -> None:
    """Wrong result: +order_sed=1 (Hydra's own suggestion for a typo) was ignored; now an error."""
    cfg = compose_config(["debug=smoke", override, "output_dir=/tmp/unused"])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    leaf = nearest.rsplit(".", 1)[-1]
    assert f"unknown key `{key}`" in str(e.value) and f"Did you mean `{leaf}`" in str(e.value)


def test_job_folder_names_are_one_component_and_never_too_long() -> None:
    """Wrong result: a path in an override nested (or escaped) the job folder; a long one broke the file system."""
    assert job_dirname("demos=2,method=icl") == "demos=2,method=icl"  # ordinary names are unchanged
    path = job_dirname("dataset.path=../../x.jsonl,demos=2")
    assert "/" not in path and path.startswith("dataset.path=.._.._x.jsonl,demos=2-")
    long = job_dirname(",".join(f"hydra.sweeper.key{i}=value{i}" for i in range(40)))
    assert len(long.encode()) <= DIRNAME_MAX and long.startswith("hydra.sweeper.key0=value0,")
    assert job_dirname("a/b") != job_dirname("a_b")  # the hash keeps rewritten names distinct


@pytest.mark.slow
def test_a_relative_dataset_path_in_a_multirun_stays_inside_the_sweep(data: Path, tmp_path: Path) -> None:
    """Wrong result: dataset.path=../x.jsonl (read from data_dir) put job folders outside the sweep folder."""
    sweep = tmp_path / "sweep"
    inner = data / "inner"
    inner.mkdir(exist_ok=True)
    args = [a if not a.startswith("dataset.path=") else "dataset.path=../rating.jsonl" for a in rating(data)]
    run_py("-m", *args, f"data_dir={inner}", "debug=smoke", "order_seed=null,1", f"hydra.sweep.dir={sweep}")
    folders = sorted(p.parent for p in sweep.rglob(io.STATUS))
    assert len(folders) == 2 and all(f.parent == sweep for f in folders)
    assert (sweep / "comparison.parquet").exists()


# ---- a sweep is checked before its first job -----------------------------------------------------------------


def test_a_bad_grid_value_stops_the_sweep_before_any_job(tmp_path: Path) -> None:
    """Sweep: every job is composed and validated before the first starts; the job and the key are named."""
    proc = run_py(
        "-m", "debug=smoke", "method=icl", "eval.top_k=3,0", f"hydra.sweep.dir={tmp_path}", check=False
    )
    failed_loudly(proc, None, r"eval\.top_k=0 must be >= 1", r"job 2 of 2", "no job ran")
    assert not list(tmp_path.rglob(io.METRICS))


# ---- files ---------------------------------------------------------------------------------------------------


def test_result_files_follow_the_umask(smoke) -> None:
    """Files: the atomic writes' temporary files were 0600; result files are readable as the umask allows."""
    old = os.umask(0o022)
    try:
        cfg = smoke()
        run(cfg, raise_on_failure=True)
    finally:
        os.umask(old)
    files = [p for p in Path(cfg.output_dir).rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044 for p in files)


def test_demos_keep_a_raw_text_field_beside_the_formatted_demo(data: Path, smoke) -> None:
    """Files: demos.jsonl overwrote a raw field called `text` with the formatted demo; now they are apart."""
    cfg = smoke(*rating(data))
    run(cfg, raise_on_failure=True)
    rows = [json.loads(s) for s in (Path(cfg.output_dir) / io.DEMOS).read_text().splitlines()]
    raw = {json.dumps(r["text"]) for r in map(json.loads, (data / "rating.jsonl").read_text().splitlines())}
    assert all(json.dumps(r["fields"]["text"]) in raw and r["demo"].startswith("Text: ") for r in rows)
