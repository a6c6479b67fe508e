"""Fail fast on a bad config, before any model or data loads: dispatch to the lab or to the language-model checks.

config.py checks the groups it owns (model, dataset, eval, analysis, top-level knobs); the template is parsed by
data/; each method checks its own keys (`Method.schema`, `Method.check`); the lab validates its own config.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from icl_gd import config
from icl_gd.data import Template
from icl_gd.data.source import source_dataset
from icl_gd.errors import ConfigError
from icl_gd.methods import Method, method_class
from icl_gd.methods.registry import TARGET_KEY

LAB_DATASET = "linreg"
LAB_MODELS = ("lsa", "h3", "gd_construction")
LAB_METHODS = ("train",)


def check_sweep_job(cfg: DictConfig) -> None:
    """A sweep's job, composed but not yet run: what `run` checks before its heavy work (the sweeper's `check`).

    Every interpolation but the output folder's (set only when the job starts) is resolved, so an unset
    environment variable fails here too.
    """
    config.normalize(cfg)
    config.resolved(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("hydra", "output_dir")]))
    validate(cfg)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key, the allowed values and the fix."""
    config.check_groups(cfg)
    if cfg.dataset.get("name") == LAB_DATASET:
        from icl_gd.linreg.config import validate as validate_lab  # noqa: PLC0415 -- the lab needs no LM code

        validate_lab(cfg)
        return
    if cfg.model.get("name") in LAB_MODELS or cfg.method.get("name") in LAB_METHODS:
        raise ConfigError(
            f"model={cfg.model.get('name')} method={cfg.method.get('name')} belong to the linear-regression lab: "
            "use them with dataset=linreg (e.g. experiment=linreg_theory)."
        )
    validate_lm(cfg)


def validate_lm(cfg: DictConfig) -> type[Method]:
    """Check the language-model part of a config; returns the method's class."""
    config.check_model(cfg)
    dataset = config.check_dataset(cfg)
    Template(dataset.template, list(dataset.text_fields))  # parsing the template is cheap and needs no model
    cls = method_class(cfg.method)
    node = cfg.method
    if TARGET_KEY in node:  # the class path says which class, not how it runs: not a key of its schema
        node = OmegaConf.masked_copy(node, [k for k in node if k != TARGET_KEY])
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))  # a method may interpolate `search:`
    method = config.typed(cls.schema, node, "method")
    config.check_job(cfg, dataset)
    source_dataset(cfg, list(dataset.text_fields))  # demo_source=<dataset>: composed and checked, not loaded
    cls.check(cfg, method)
    check_analysis(cfg, cls)
    return cls


def check_analysis(cfg: DictConfig, cls: type[Method]) -> None:
    """analysis.dai needs a trained model; analysis.sparsity needs an update of the model's own weights."""
    an = cfg.get("analysis") or {}
    if (an.get("dai") or an.get("sparsity")) and not cls.trains:
        which = "analysis.dai" if an.get("dai") else "analysis.sparsity"
        raise ConfigError(
            f"{which}=true compares a trained model with ICL: it needs method=gd (or lora), not method={cls.name}."
        )
    if an.get("sparsity") and not cls.updates_weights:
        raise ConfigError(
            "analysis.sparsity=true measures the update of the model's own weights: use method=gd."
        )
