"""`--cfg job` shows each value's type from its schema (icl_gd/show_config.py), and fails on a bad key first."""

from __future__ import annotations

import pytest
import yaml

from icl_gd import show_config
from icl_gd.errors import EXIT_CONFIG, ConfigError
from tests.helpers.cli import run_py
from tests.helpers.config import compose_config


def _shown(*overrides: str) -> dict[str, str]:
    """`path: 'value  # type'` of every leaf line the typed YAML prints for these overrides."""
    text = show_config.annotated_yaml(show_config.typed_config(compose_config(list(overrides))))
    out, stack = {}, []
    for line in text.splitlines():
        depth = (len(line) - len(line.lstrip())) // len(show_config.INDENT)
        key, _, rest = line.strip().partition(":")
        stack[depth:] = [key]
        out[".".join(stack)] = rest.strip()
    return out


@pytest.mark.parametrize(
    ("argv", "overrides"),
    [
        (["--cfg", "job", "method=gd"], ["method=gd"]),
        (["method=gd", "-c", "job"], ["method=gd"]),
        (["--cfg=job"], []),
    ],
)
def test_a_plain_cfg_job_is_ours(argv: list[str], overrides: list[str]) -> None:
    assert show_config.requested(argv) == show_config.ShowRequest(overrides)


@pytest.mark.parametrize(
    "argv",
    [
        ["method=gd"],  # a job to run
        ["--cfg", "hydra"],  # Hydra's own node
        ["--cfg", "job", "--resolve"],  # resolving needs Hydra's runtime (output_dir)
        ["-m", "--cfg", "job", "method=icl,gd"],
        ["--cfg", "job", "--package", "method"],
    ],
)
def test_anything_else_is_left_to_hydra(argv: list[str]) -> None:
    assert show_config.requested(argv) is None


def test_each_leaf_says_the_type_its_schema_gives() -> None:
    shown = _shown("method=gd", "method.lr=1e-3")
    assert shown["method"] == "# GDConfig"
    assert shown["method.lr"] == "0.001  # float"
    assert shown["method.epochs"] == "5  # int"
    assert shown["method.grad_clip"] == "1.0  # float | None"
    assert shown["eval.n_queries"] == "50  # int"
    assert shown["model.path"] == "null  # str | None"
    assert shown["dataset.text_fields"] == "[input]  # list[str]"
    assert shown["dataset.label_words"] == "null  # dict[str, str] | None"
    assert shown["analysis.sparsity_thresholds"].endswith("# list[float]")
    # no schema: the value's own type; an interpolation says when it resolves
    assert shown["seed"] == "0  # int"
    assert shown["search.lr"].endswith("# list[float]")
    assert shown["output_dir"].endswith("# interpolation, resolved when the job runs")


def test_the_output_is_the_composed_config_as_yaml() -> None:
    cfg = compose_config(["method=gd"])
    text = show_config.annotated_yaml(show_config.typed_config(cfg))
    assert yaml.safe_load(text)["dataset"]["template"] == cfg.dataset.template  # "Q: {input}\nA: {label}"
    assert '"Q: {input}\\nA: {label}"' in text  # the line break shown as \n, on one line


def test_the_lab_shows_its_own_schemas() -> None:
    shown = _shown("experiment=linreg_theory")
    assert shown["dataset"] == "# DataConfig"
    assert shown["method"] == "# TrainConfig"
    assert shown["method.lr"].endswith("# float")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["method=gd", "+method.lrr=1e-3"], "Did you mean `lr`?"),
        (["+demo=4"], "Did you mean `demos`?"),
        (["method=gd", "method.epochs=abc"], "method.epochs"),
    ],
)
def test_a_bad_key_or_type_fails_naming_it(overrides: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("?", r"\?")):
        show_config.typed_config(compose_config(overrides))


@pytest.mark.slow
def test_run_py_cfg_job_prints_types_and_refuses_a_typo() -> None:
    ok = run_py("--cfg", "job", "method=gd", "method.lr=1e-3")
    assert "  lr: 0.001  # float" in ok.stdout
    bad = run_py("--cfg", "job", "method=gd", "+method.lrr=1e-3", check=False)
    assert bad.returncode == EXIT_CONFIG
    assert "ConfigError: unknown key `method.lrr`" in bad.stderr and "Did you mean `lr`?" in bad.stderr
    hydra_part = run_py("--cfg", "hydra", check=False)  # still Hydra's
    assert hydra_part.returncode == 0 and "sweeper:" in hydra_part.stdout
