"""Structured configs: the types and allowed values of every knob, checked before any model or data loads.

The YAML files in conf/ hold the values; these dataclasses say what a value may be. `validate(cfg)` merges each
group onto its schema (so a misspelled key or a wrong type fails with the key's name) and then checks ranges and
choices, raising `ConfigError` with the key, the allowed values and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from icl_gd.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "ICL_GD_DATA"

OPTIMIZERS = ("sgd", "adam", "adamw")
PARAM_SETS = ("all", "attn_kv", "layer_v")
LM_METHODS = ("zeroshot", "icl", "gd", "lora")
TRAINING_METHODS = ("gd", "lora")
SAMPLINGS = ("random", "balanced")
DTYPES = ("float32", "float16", "bfloat16", "float64")
DATASET_KINDS = ("classification", "wordpairs")
# conf/hydra/launcher/{joblib,submitit_*,ray}.yaml carry the names of the plugins' own schemas, so Hydra 1.3 checks
# each against its schema and warns, in every process, that this matching is deprecated. The files are complete
# without it (tests/test_launchers.py checks them against the schemas): silence that one warning.
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema", category=UserWarning
)
# Keys that say where a job writes, not what it computes: left out of the job's identity hash.
NON_IDENTITY_KEYS = ("output_dir", "logger", "rerun")


@dataclass
class ModelConfig:
    name: str = "smollm2_135m"
    path: str | None = None  # local folder or hub id; None = the folder of `package`
    package: str | None = None  # a Python package whose folder holds the weights (found, never imported)
    gguf_file: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    revision: str | None = None
    trust_remote_code: bool = False
    random_init: bool = False
    arch: dict[str, Any] = field(default_factory=dict)
    add_bos: bool | None = None


@dataclass
class HubConfig:
    path: str = "???"
    name: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    columns: dict[str, str] = field(default_factory=dict)
    label_column: str = "label"


@dataclass
class DatasetConfig:
    name: str = "???"
    kind: str = "classification"
    path: str = "???"
    test_path: str | None = None
    text_fields: list[str] = field(default_factory=lambda: ["sentence"])
    label_field: str = "label"
    label_words: dict[str, str] | None = None
    template: str = "???"
    separator: str = "\n\n"
    split_seed: int = 0
    test_fraction: float = 0.5
    hub: HubConfig | None = None


@dataclass
class MethodConfig:
    name: str = "icl"
    optimizer: str = "adam"
    lr: float = 1e-4
    epochs: int = 5
    batch_size: Any = 1  # 1 or "all"
    params: str = "all"
    layer: Any = None  # int (negative counts from the end) or "middle" (n_layers // 2), for params=layer_v
    layer_causal: bool = False  # Deutch et al.: detached layer inputs, one answer loss per layer output
    lr_grid: list[float] = field(default_factory=list)  # non-empty: pick lr from these by held-out demo loss
    heldout: int = 8  # held-out demonstrations (from the pool, disjoint from demos and queries) for lr_grid
    tag: str | None = None  # a display name for this method variant in comparisons and the report
    momentum: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    explode_factor: float = 1e3
    save_update: bool = False
    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class AnalysisConfig:
    dai: bool = False  # gd/lora: Rec2FTP, SimAOU, SimAM (Dai et al.) from hooked zero-shot/ICL/GD passes
    sparsity: bool = False  # gd: fraction of weight-update entries below each threshold, per layer and matrix
    sparsity_thresholds: list[float] = field(default_factory=lambda: [1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
    sparsity_relative: bool = False  # true: threshold |dw| / max |dw| of each matrix instead of |dw|


@dataclass
class EvalConfig:
    n_queries: int = 50
    top_k: int = 10
    batch_size: int = 8
    save_full_dist: bool = True
    prefix_cache: bool = True


def _typed(schema: type, node: DictConfig, group: str) -> DictConfig:
    """Merge `node` onto its dataclass schema: unknown keys and wrong types fail naming `group.key`."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", None)
        allowed = ", ".join(f.name for f in schema.__dataclass_fields__.values())
        raise ConfigError(
            f"{group}.{key}: {e.msg if hasattr(e, 'msg') else e}. Keys of `{group}` are: {allowed}. "
            f"Fix the override or the YAML file under conf/{group}/."
        ) from None


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}.")


def _positive(key: str, value: float, fix: str = "") -> None:
    if value is None or not value > 0:
        raise ConfigError(f"{key}={value!r} must be > 0.{(' ' + fix) if fix else ''}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_device(device: str) -> None:
    """model.device=cuda[:N] or mps must exist on this machine: say so before the model loads."""
    import torch  # noqa: PLC0415 -- only for this check; the rest of validation needs no torch

    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":", 1)[1]) if ":" in device and device.split(":", 1)[1].isdigit() else 0
        if index >= n:
            seen = f"{n} CUDA device(s)" if n else f"no CUDA device (torch {torch.__version__})"
            raise ConfigError(
                f"model.device={device} but this machine has {seen}: use model.device=cpu (or auto), or install "
                "a CUDA build of torch (make install TORCH=...) and check CUDA_VISIBLE_DEVICES."
            )
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device=mps but MPS (Apple GPU) is not available here: use model.device=cpu.")


def resolve_data_dir(cfg: DictConfig) -> Path:
    """The data folder: cfg.data_dir, else $ICL_GD_DATA, else ../shared/data beside the project root."""
    raw = cfg.get("data_dir") or os.environ.get(DATA_ENV)
    return Path(raw).expanduser() if raw else (PROJECT_ROOT.parent / "shared" / "data").resolve()


def validate_lm(cfg: DictConfig) -> None:
    """Check the language-model part of a config: types, choices and ranges."""
    model = _typed(ModelConfig, cfg.model, "model")
    dataset = _typed(DatasetConfig, cfg.dataset, "dataset")
    method = _typed(MethodConfig, cfg.method, "method")
    ev = _typed(EvalConfig, cfg.eval, "eval")
    an = _typed(AnalysisConfig, cfg.get("analysis") or {}, "analysis")

    _choice("model.dtype", model.dtype, DTYPES)
    if not (model.device in ("cpu", "auto") or model.device.startswith(("cuda", "mps"))):
        raise ConfigError(f"model.device={model.device!r}: use cpu, auto, cuda or cuda:N.")
    _check_device(model.device)
    if model.path is None and model.package is None and not model.random_init:
        raise ConfigError(f"model={model.name} names no weights: set model.path=<local folder or hub id>.")

    unset = [k for k in ("name", "path", "template") if OmegaConf.is_missing(dataset, k)]
    if unset:
        example = {
            "name": "dataset.name=my_set",
            "path": "dataset.path=/data/my.jsonl (a relative path is read from data_dir)",
            "template": "dataset.template='Q: {input}\\nA: {label}'",
        }[unset[0]]
        raise ConfigError(
            f"dataset.{unset[0]} is not set (??? in its conf/dataset/ file): give it, e.g. {example}."
        )
    _choice("dataset.kind", dataset.kind, DATASET_KINDS)
    if dataset.kind == "classification" and not dataset.label_words:
        raise ConfigError(
            f"dataset.label_words is empty for dataset={dataset.name}: give a map from each raw label to the word "
            "the model should say, e.g. dataset.label_words='{0: negative, 1: positive}'."
        )
    raw_words = cfg.dataset.get("label_words") or {}
    not_text = {k: v for k, v in raw_words.items() if not isinstance(v, str)}
    if not_text:
        k, v = next(iter(not_text.items()))
        raise ConfigError(
            f"dataset.label_words maps label {k!r} to {v!r}, a YAML {type(v).__name__}, not a word: quote it "
            f'({k!r}: "{str(v).lower() if isinstance(v, bool) else v}") so the model is scored on that text.'
        )
    if dataset.label_words:
        words = [str(w) for w in dataset.label_words.values()]
        empty = [k for k, w in dataset.label_words.items() if not str(w).strip()]
        if empty:
            raise ConfigError(
                f"dataset.label_words gives label(s) {empty} an empty word: give each label a word."
            )
        dup = sorted({w for w in words if words.count(w) > 1})
        if dup:
            raise ConfigError(
                f"dataset.label_words maps two labels to the same word {dup}: give each label its own word."
            )
    if not 0 < dataset.test_fraction < 1:
        raise ConfigError(f"dataset.test_fraction={dataset.test_fraction} must be in (0, 1).")
    from icl_gd.data.prompts import Template  # parsing the template is cheap and needs no model

    Template(dataset.template, list(dataset.text_fields))

    _choice("method", method.name, LM_METHODS)
    if not _is_int(cfg.get("seed")):
        raise ConfigError(
            f"seed={cfg.get('seed')!r} must be an integer (it fixes demos, queries, order, training)."
        )
    if cfg.get("order_seed") is not None and not _is_int(cfg.order_seed):
        raise ConfigError(f"order_seed={cfg.order_seed!r} must be null (the sampled order) or an integer.")
    if not _is_int(cfg.demos) or cfg.demos < 0:
        raise ConfigError(f"demos={cfg.demos!r} must be an integer >= 0 (the number of demonstrations).")
    _choice("demo_sampling", cfg.demo_sampling, SAMPLINGS)
    if cfg.demo_sampling == "balanced" and dataset.kind != "classification":
        raise ConfigError(
            "demo_sampling=balanced needs a classification dataset (labels to balance); use random."
        )
    if method.name in TRAINING_METHODS:
        if int(cfg.demos) == 0:
            raise ConfigError(
                f"method={method.name} with demos=0 has nothing to train on: set demos>=1 or method=zeroshot."
            )
        _choice("method.optimizer", method.optimizer, OPTIMIZERS)
        _positive("method.lr", method.lr, "Try 1e-4 for adam or 1e-3 for sgd.")
        if int(method.epochs) < 1:
            raise ConfigError(f"method.epochs={method.epochs} must be >= 1.")
        if method.batch_size != "all" and (not isinstance(method.batch_size, int) or method.batch_size < 1):
            raise ConfigError(
                f"method.batch_size={method.batch_size!r}: use a positive integer (1 = one demo a step) or all."
            )
        if method.grad_clip is not None:
            _positive("method.grad_clip", method.grad_clip, "Use null for no clipping.")
        if method.name == "gd":
            _choice("method.params", method.params, PARAM_SETS)
            if method.params == "layer_v" and method.layer is None:
                raise ConfigError(
                    "method.params=layer_v needs method.layer=<layer index> (negative counts from the end) "
                    "or method.layer=middle."
                )
            if method.layer is not None and not (_is_int(method.layer) or method.layer == "middle"):
                raise ConfigError(
                    f"method.layer={method.layer!r}: use an integer (negative counts from the end) or middle."
                )
        for lr in method.lr_grid:
            _positive("method.lr_grid", lr, "Give positive learning rates, e.g. method.lr_grid=[1e-3,1e-4].")
        if method.lr_grid and int(method.heldout) < 1:
            raise ConfigError(
                f"method.lr_grid needs held-out demonstrations to choose from: method.heldout={method.heldout} "
                "must be >= 1."
            )
        else:
            if int(method.r) < 1:
                raise ConfigError(f"method.r={method.r} must be >= 1 (the LoRA rank).")
            if not method.target_modules:
                raise ConfigError(
                    "method.target_modules is empty: name the modules LoRA adapts, e.g. [q_proj, v_proj]."
                )
    if (an.dai or an.sparsity) and method.name not in TRAINING_METHODS:
        which = "analysis.dai" if an.dai else "analysis.sparsity"
        raise ConfigError(
            f"{which}=true compares a trained model with ICL: it needs method=gd (or lora), not method={method.name}."
        )
    if an.sparsity and method.name != "gd":
        raise ConfigError(
            "analysis.sparsity=true measures the update of the model's own weights: use method=gd."
        )
    for t in an.sparsity_thresholds:
        _positive("analysis.sparsity_thresholds", t, "Use thresholds such as [1e-2, 1e-4, 1e-6].")
    for key in ("n_queries", "top_k", "batch_size"):
        if int(ev[key]) < 1:
            raise ConfigError(f"eval.{key}={ev[key]} must be >= 1.")


def validate(cfg: DictConfig) -> None:
    """Fail fast on a bad config, before any model or data loads. Raises ConfigError."""
    for group in ("model", "dataset", "method"):
        if group not in cfg or not isinstance(cfg[group], DictConfig):
            raise ConfigError(
                f"config has no `{group}` group: pick one, e.g. {group}=<option> (see conf/{group}/)."
            )
    if cfg.dataset.get("name") == "linreg":
        from icl_gd.linreg.config import validate as validate_linreg

        validate_linreg(cfg)
        return
    if cfg.model.get("name") in ("lsa", "h3", "gd_construction") or cfg.method.get("name") == "train":
        raise ConfigError(
            f"model={cfg.model.get('name')} method={cfg.method.get('name')} belong to the linear-regression lab: "
            "use them with dataset=linreg (e.g. experiment=linreg_theory)."
        )
    validate_lm(cfg)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain containers with every interpolation resolved."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def identity(cfg: DictConfig | dict) -> dict[str, Any]:
    """What a job computes: the resolved config minus where it writes and how it logs."""
    d = resolved(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    return {k: v for k, v in d.items() if k not in NON_IDENTITY_KEYS and k != "hydra"}


def config_hash(cfg: DictConfig | dict) -> str:
    """A stable hash of `identity(cfg)`: two jobs with the same hash compute the same thing."""
    blob = json.dumps(identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
