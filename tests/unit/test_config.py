"""Every option of every group composes and validates; bad values fail naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from icl_gd.config import config_hash
from icl_gd.errors import ConfigError
from icl_gd.validation import validate
from tests.helpers.config import ROOT, compose_config

LINREG = {"lsa", "h3", "gd_construction", "linreg", "train"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def lm_options(group: str) -> list[str]:
    return [o for o in options(group) if o not in LINREG and o not in ("jsonl", "wordpairs")]


MODEL_ALIASES = {"smollm2_135m": "smollm2_135m_instruct_q4_1"}  # the default model's old name


@pytest.mark.parametrize("model", lm_options("model"))
def test_every_model_composes_and_validates(model: str) -> None:
    cfg = compose_config([f"model={model}", "output_dir=/tmp/x"])
    validate(cfg)
    assert cfg.model.name == MODEL_ALIASES.get(model, model)
    assert {"name", "path", "gguf_file", "dtype", "device", "revision", "trust_remote_code"} <= set(cfg.model)


@pytest.mark.parametrize("dataset", lm_options("dataset"))
def test_every_dataset_composes_and_validates(dataset: str) -> None:
    cfg = compose_config([f"dataset={dataset}", "output_dir=/tmp/x"])
    validate(cfg)
    assert cfg.dataset.name == dataset
    assert "{label}" in cfg.dataset.template
    # label words are text: an unquoted YAML true/false would be a bool (cb and rte once had that)
    assert all(isinstance(w, str) and w.strip() for w in (cfg.dataset.label_words or {}).values())


NEEDS = {
    "gd_search": ["eval.n_select=10"]
}  # what a method requires beyond the defaults (it says so when missing)


@pytest.mark.parametrize("method", lm_options("method"))
def test_every_method_composes_and_validates(method: str) -> None:
    validate(compose_config([f"method={method}", "output_dir=/tmp/x", *NEEDS.get(method, [])]))


@pytest.mark.parametrize("logger", options("logger"))
def test_every_logger_composes(logger: str) -> None:
    assert compose_config([f"logger={logger}", "output_dir=/tmp/x"]).logger.name == logger


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_validates(experiment: str) -> None:
    validate(compose_config([f"experiment={experiment}", "output_dir=/tmp/x"]))


def test_generic_files_validate_once_filled_in(tmp_path: Path) -> None:
    validate(compose_config(["dataset=wordpairs", "dataset.path=x.json", "output_dir=/tmp/x"]))
    validate(
        compose_config(
            [
                "dataset=jsonl",
                "dataset.path=x.jsonl",
                "+dataset.label_words={a: yes, b: no}",
                "output_dir=/tmp/x",
            ]
        )
    )


def test_smoke_debug_preset_shrinks_the_run() -> None:
    cfg = compose_config(["debug=smoke", "output_dir=/tmp/x"])
    assert cfg.model.name == "tiny_random" and cfg.logger.name == "none" and cfg.eval.n_queries <= 8


def test_unknown_option_names_the_available_ones() -> None:
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as e:
        compose_config(["method=gdd", "output_dir=/tmp/x"])
    assert "gdd" in str(e.value) and "icl" in str(e.value)


def test_misspelled_key_is_rejected_by_hydra() -> None:
    with pytest.raises(ConfigCompositionException) as e:
        compose_config(["method.lrr=0.1", "output_dir=/tmp/x"])
    assert "lrr" in str(e.value)


BAD = [
    (["method=gd", "method.lr=0"], "method.lr"),
    (["method=gd", "method.lr=-1e-3"], "method.lr"),
    (["demos=-1"], "demos"),
    (["method=gd", "demos=0"], "demos=0"),
    (["method=gd", "method.optimizer=rmsprop"], "method.optimizer"),
    (["method=gd", "method.params=layer_v"], "method.layer"),
    (["method=gd", "method.params=mlp"], "method.params"),
    (["method=gd", "method.epochs=0"], "method.epochs"),
    (["method=gd", "method.batch_size=0"], "method.batch_size"),
    (["method=lora", "method.r=0"], "method.r"),
    (["eval.n_queries=0"], "eval.n_queries"),
    (["model.dtype=float8"], "model.dtype"),
    (["dataset.template='Q: {input}'"], "{label}"),
    (["dataset.template='Q: {question} A: {label}'"], "question"),
    (["dataset=sst2", "dataset.label_words.1=negative"], "same word"),
    (["dataset=present_past", "demo_sampling=balanced"], "balanced"),
    (["demo_sampling=stratified"], "demo_sampling"),
    (["method.lr=abc", "method=gd"], "method.lr"),
]


@pytest.mark.parametrize(("overrides", "needle"), BAD, ids=[n for _, n in BAD])
def test_bad_values_fail_before_anything_loads(overrides: list[str], needle: str) -> None:
    with pytest.raises((ConfigError, ConfigCompositionException)) as e:
        validate(compose_config([*overrides, "output_dir=/tmp/x"]))
    assert needle in str(e.value)


def test_hash_ignores_where_a_job_writes_but_not_what_it_computes() -> None:
    a = compose_config(["output_dir=/tmp/a", "logger=none"])
    b = compose_config(["output_dir=/tmp/b", "logger=wandb"])
    c = compose_config(["output_dir=/tmp/a", "seed=1"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
