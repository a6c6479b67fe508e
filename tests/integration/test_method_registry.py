"""A new method is one module and one YAML file: registered from outside the package and run through run.py."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from icl_gd import io
from icl_gd.errors import ConfigError
from icl_gd.methods import METHODS, Method, method_class
from icl_gd.validation import validate
from tests.helpers.cli import run_py
from tests.helpers.config import subprocess_env

TOY_MODULE = '''
from icl_gd.methods import Method, MethodOutput
from icl_gd.methods.zeroshot import PromptMethodConfig


class PlainICL(Method):
    """ICL without the prefix cache: the demonstrations in the prompt, each prompt run whole."""

    name = "plain_icl"
    schema = PromptMethodConfig

    def answer(self, method, inputs):
        return MethodOutput(inputs.predict(inputs.lm.model, inputs.demos))
'''
COMMON = ["model=tiny_random", "dataset=present_past", "demos=3", "eval.n_queries=4", "logger=none"]


def test_built_in_methods_are_registered_by_name() -> None:
    assert {"zeroshot", "icl", "gd", "gd_search", "lora"} <= set(METHODS)
    assert method_class(OmegaConf.create({"name": "gd"})).trains
    with pytest.raises(
        ConfigError, match="method='nope' is not allowed; choose one of: gd, gd_search, icl, lora, zeroshot"
    ):
        method_class(OmegaConf.create({"name": "nope"}))


def test_a_target_that_is_not_a_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a subclass of icl_gd.methods.Method"):
        method_class(OmegaConf.create({"name": "x", "_target_": "pathlib.Path"}))
    with pytest.raises(ConfigError, match="cannot be imported"):
        method_class(OmegaConf.create({"name": "x", "_target_": "no_such_module.Thing"}))


def test_gd_is_not_checked_as_lora(make_cfg) -> None:
    """The LoRA checks are lora's alone: a gd config has no rank at all, and lora still checks its rank."""
    validate(make_cfg("method=gd", "demos=1"))
    with pytest.raises(ConfigError, match=r"unknown key `method\.r`"):
        validate(make_cfg("method=gd", "+method.r=0"))
    with pytest.raises(ConfigError, match=r"method\.r=0 must be >= 1"):
        validate(make_cfg("method=lora", "method.r=0"))
    assert issubclass(method_class(OmegaConf.create({"name": "lora"})), Method)


@pytest.mark.slow
def test_a_method_defined_outside_the_package_runs_through_run_py(tmp_path: Path) -> None:
    (tmp_path / "toy_method.py").write_text(TOY_MODULE)
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "plain_icl.yaml").write_text(
        "_target_: toy_method.PlainICL\nname: plain_icl\n"
    )
    env = {**subprocess_env(), "PYTHONPATH": str(tmp_path)}
    jobs = {}
    for method, extra in (("plain_icl", []), ("icl", ["eval.prefix_cache=false"])):
        out = tmp_path / method
        searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
        run_py(f"method={method}", *COMMON, *extra, f"hydra.run.dir={out}", searchpath, env=env, timeout=300)
        jobs[method] = pd.read_parquet(out / io.PREDICTIONS)
    # the toy got the job's demos and queries from the runner: its outputs are icl's without the cache, exactly
    toy, icl = jobs["plain_icl"], jobs["icl"]
    assert len(toy) == 4 and list(toy.query_id) == list(icl.query_id)
    assert toy.gold_prob.tolist() == icl.gold_prob.tolist() and [list(t) for t in toy.topk_ids] == [
        list(t) for t in icl.topk_ids
    ]
    demos = (tmp_path / "plain_icl" / io.DEMOS).read_text()
    assert demos == (tmp_path / "icl" / io.DEMOS).read_text() and demos.count("\n") == 3
