"""Every numeric knob of the linreg lab has its range checked at validation, before any training."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf

from icl_gd.errors import ConfigError
from icl_gd.linreg.config import POSITIVE_INTS, SEED_MAX
from icl_gd.validation import validate
from tests.helpers.config import CONF, compose_config

LAB = ["dataset=linreg", "method=train"]
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("linreg_*.yaml"))
LORA = [  # a valid LoRA study: model=lsa, one layer, a shifted distribution, i.i.d. design
    "dataset.shift.feature_cov={kind:powerlaw,power:0.5}",
    "method.lora.ranks=[1,2]",
]
DEFAULT_STEPS: int = OmegaConf.load(CONF / "method" / "train.yaml").steps
DEFAULT_D: int = OmegaConf.load(CONF / "dataset" / "linreg.yaml").d


@dataclass(frozen=True)
class Bad:
    """One bad value: the full key, the overrides that set it, the allowed range as the message words it."""

    key: str
    overrides: tuple[str, ...]
    allowed: str
    fix: str = ""  # the advice the message ends with; "" = the default "set <key> <allowed>"
    model: str = "lsa"

    @property
    def advice(self) -> str:
        return self.fix or f"set {self.key} {self.allowed}"


def bad(key: str, value: str, allowed: str, *extra: str, fix: str = "", model: str = "lsa") -> Bad:
    """The case `key=value` (plus `extra` overrides) on `model`."""
    return Bad(key, (f"{key}={value}", *extra), allowed, fix, model)


RANK_FIX = "set model.rank in [1, min(dataset.d)] or null (full)"
LORA_RANK_FIX = "give ranks in [1, min(dataset.d)]"
CASES = [
    # dataset (conf/dataset/linreg.yaml)
    bad("dataset.d", "0", ">= 1"),
    bad("dataset.n", "0", ">= 1"),
    bad("dataset.n", "[4,0]", ">= 1"),  # one bad value of a grid
    bad("dataset.noise", "-0.1", ">= 0"),
    bad("dataset.noise", "inf", ">= 0"),
    bad("dataset.noise", "nan", ">= 0"),
    bad("dataset.rag_alpha", "-0.1", "in [0, 1]"),
    bad("dataset.rag_alpha", "1.5", "in [0, 1]"),
    bad("dataset.align_alpha", "-0.1", "in [0, 1]"),
    bad("dataset.align_alpha", "[0.5,1.01]", "in [0, 1]"),
    bad("dataset.batch", "0", ">= 1"),
    bad("dataset.feature_cov.power", "-1", ">= 0"),
    bad("dataset.task_cov.power", "-0.5", ">= 0"),
    Bad("dataset.shift.feature_cov.power", ("dataset.shift.feature_cov={kind:powerlaw,power:-1}",), ">= 0"),
    Bad("dataset.shift.task_cov.power", ("dataset.shift.task_cov={kind:powerlaw,power:-1}",), ">= 0"),
    # model=lsa (conf/model/lsa.yaml)
    bad("model.layers", "0", ">= 1"),
    bad("model.rank", "0", f"in [1, {DEFAULT_D}]", fix=RANK_FIX),
    bad("model.rank", str(DEFAULT_D + 1), f"in [1, {DEFAULT_D}]", fix=RANK_FIX),
    bad("model.init_std", "0", "> 0"),
    bad("model.init_std", "-0.1", "> 0"),
    # model=h3 (conf/model/h3.yaml)
    bad(
        "model.hidden",
        "4",
        ">= 5",
        "dataset.d=[3,5]",
        fix="set model.hidden >= max(dataset.d) = 5",
        model="h3",
    ),
    bad("model.init_std", "0", "> 0", model="h3"),
    # model=gd_construction (conf/model/gd_construction.yaml)
    bad("model.layers", "0", ">= 1", model="gd_construction"),
    bad("model.lr", "0", "> 0", fix="set model.lr > 0, or null (line search)", model="gd_construction"),
    bad("model.lr", "-0.1", "> 0", fix="set model.lr > 0, or null (line search)", model="gd_construction"),
    # method=train (conf/method/train.yaml)
    *(bad(f"method.{k}", "0", ">= 1") for k in POSITIVE_INTS),
    bad("method.lr", "0", "> 0"),
    bad("method.lr", "-0.02", "> 0"),
    bad("method.warmup", "-1", ">= 0"),
    bad(
        "method.warmup",
        str(DEFAULT_STEPS + 1),
        f"in [0, {DEFAULT_STEPS}]",
        fix="set method.warmup <= method.steps",
    ),
    bad(
        "method.warmup",
        "60",
        "in [0, 50]",
        "method.lora.steps=50",
        *LORA,
        fix="set method.warmup <= method.lora.steps",
    ),
    bad("method.min_lr_ratio", "-0.01", "in [0, 1]"),
    bad("method.min_lr_ratio", "1.5", "in [0, 1]"),
    bad("method.sparsity_thresholds", "[0.01,0.0]", "in (0, 1]"),
    bad("method.sparsity_thresholds", "[2.0]", "in (0, 1]"),
    bad("method.threads", "-1", ">= 0"),
    bad("method.lora.ranks", "[0]", f"in [1, {DEFAULT_D}]", fix=LORA_RANK_FIX),
    bad("method.lora.ranks", f"[1,{DEFAULT_D + 1}]", f"in [1, {DEFAULT_D}]", fix=LORA_RANK_FIX),
    bad("method.lora.steps", "0", ">= 1"),
    bad("method.lora.lr", "0", "> 0"),
    bad("method.lora.alpha", "0", "> 0"),
    bad("method.lora.init_std", "0", "> 0"),
    # top level
    bad("seed", "-1", f"in [0, {SEED_MAX}]"),
    bad("seed", str(SEED_MAX + 1), f"in [0, {SEED_MAX}]"),
    bad("seed", "1.5", f"in [0, {SEED_MAX}]"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.model}:{c.overrides[0]}" for c in CASES])
def test_bad_value_fails_naming_key_range_and_fix(case: Bad) -> None:
    cfg = compose_config([f"model={case.model}", *LAB, *case.overrides])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    msg = str(err.value)
    assert msg.startswith(f"{case.key}="), msg
    assert "expected a" in msg and f" {case.allowed}. " in msg, msg
    assert case.advice in msg, msg


GOOD_EDGES = [  # inclusive bounds stay allowed
    ("lsa", ["dataset.noise=0", "dataset.rag_alpha=[0,1]", "method.min_lr_ratio=0", "seed=0"]),
    ("lsa", ["dataset.align_alpha=1", "method.min_lr_ratio=1", f"seed={SEED_MAX}", "method.threads=0"]),
    (
        "lsa",
        [f"method.warmup={DEFAULT_STEPS}", "method.sparsity_thresholds=[1.0]", "dataset.feature_cov.power=0"],
    ),
    ("lsa", ["dataset.d=1", "dataset.n=1", "model.rank=1", "model.init_std=1e-6", "method.lr=1e-9"]),
    ("lsa", [*LORA, f"method.lora.ranks=[1,{DEFAULT_D}]", "method.warmup=50", "method.lora.steps=50"]),
    ("h3", ["dataset.d=[3,5]", "model.hidden=5"]),
    (
        "gd_construction",
        ["model.lr=0.5", f"method.warmup={DEFAULT_STEPS + 1}"],
    ),  # nothing trained: no schedule
]


@pytest.mark.parametrize(("model", "overrides"), GOOD_EDGES)
def test_boundary_values_validate(model: str, overrides: list[str]) -> None:
    validate(compose_config([f"model={model}", *LAB, *overrides]))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_linreg_preset_validates(preset: str) -> None:
    validate(compose_config([f"experiment={preset}"]))
