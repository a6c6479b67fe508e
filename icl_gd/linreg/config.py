"""Typed view of a `dataset=linreg` job and its validation: every bad value fails here, before any training.

As on the language-model side (icl_gd/config.py), each group is merged onto its dataclass schema
(icl_gd/linreg/schemas.py), so a misspelled key or a wrong type fails naming `group.key`; then ranges, choices
and constraints across keys are checked here, with the value checks of icl_gd/linreg/checks.py. The YAML files
(conf/model/{lsa,h3,gd_construction}.yaml, conf/dataset/linreg.yaml, conf/method/train.yaml) hold every default.

`parse(cfg)` returns the typed job (the schema dataclasses, grid keys as lists); `validate(cfg)` is the check the
runner calls first; `icl_gd.linreg.lab.run_job` runs the job. Errors are `ConfigError`s whose message names the
key, the bad value, what is allowed and how to fix it. The lab reads only `seed`, `model`, `dataset` and
`method`; the language-model keys of the shared config (demos, eval, data_dir) are ignored.

Grid keys may be lists (`dataset.d`, `dataset.n`, `dataset.noise`, `dataset.rag_alpha`, `dataset.align_alpha`,
`model.rank`): one job then trains their product, every (d, n) pair as one batched group of members.

The schemas and the allowed choices are re-exported here, so `from icl_gd.linreg.config import LinregJob` works.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from icl_gd.errors import ConfigError
from icl_gd.linreg.checks import GROUP_FILES, choice, fail, grid_values, listify, number, typed
from icl_gd.linreg.data import COVARIANCE_KINDS
from icl_gd.linreg.schemas import (
    DTYPES,
    LORA_TARGETS,
    METHODS,
    MODEL_SCHEMAS,
    MODELS,
    PRECONDITIONERS,
    SENSITIVITY_MODELS,
    VALUE_INITS,
    ConstructionModelConfig,
    CovConfig,
    DataConfig,
    H3ModelConfig,
    LinregJob,
    LoRAConfig,
    LSAModelConfig,
    ModelConfig,
    SensitivityConfig,
    ShiftConfig,
    TrainConfig,
)

__all__ = [
    "DTYPES",
    "GROUP_FILES",
    "LORA_TARGETS",
    "METHODS",
    "MODEL_SCHEMAS",
    "MODELS",
    "POSITIVE_INTS",
    "PRECONDITIONERS",
    "SEED_MAX",
    "SENSITIVITY_MODELS",
    "VALUE_INITS",
    "ConstructionModelConfig",
    "CovConfig",
    "DataConfig",
    "H3ModelConfig",
    "LSAModelConfig",
    "LinregJob",
    "LoRAConfig",
    "ModelConfig",
    "SensitivityConfig",
    "ShiftConfig",
    "TrainConfig",
    "parse",
    "validate",
]

# seeds are stored as int64 (numpy, pandas/parquet columns, W&B); torch.manual_seed alone would take up to 2**64 - 1
SEED_MAX = 2**63 - 1
POSITIVE_INTS = (  # method keys that must be integers >= 1
    "seeds",
    "steps",
    "checkpoints",
    "log_every",
    "eval_tasks",
    "curve_tasks",
    "tune_tasks",
    "eval_chunk",
    "theory_mc_samples",
    "line_search_iters",
    "construction_tasks",
    "construction_stack",
    "figure_panels",
)


def _check_matrix(key: str, matrix: Any, dims: list[int]) -> None:
    """A kind=matrix covariance: a d x d symmetric positive definite nested list, for a single dataset.d."""
    if matrix is None:
        fail(key, None, "a d x d nested list", f"give {key} for kind=matrix")
    try:
        m = torch.as_tensor(matrix, dtype=torch.float64)
    except (TypeError, ValueError):
        fail(key, matrix, "a d x d nested list of numbers", "fix the matrix entries")
    if len(dims) != 1 or m.shape != (dims[0], dims[0]):
        fail(
            key,
            f"shape {tuple(m.shape)}",
            f"shape (d, d) with a single dataset.d={dims}",
            "match the matrix to dataset.d",
        )
    if not torch.allclose(m, m.T):
        fail(key, matrix, "a symmetric matrix", "symmetrise it")
    lam = torch.linalg.eigvalsh(m).min().item()
    if lam <= 0:
        fail(
            key,
            matrix,
            f"a positive definite matrix (smallest eigenvalue is {lam:.3g})",
            "use a symmetric positive definite covariance",
        )


def _check_cov(key: str, cov: CovConfig | None, dims: list[int]) -> None:
    """A covariance group (None: not given): its kind, its power and, for kind=matrix, the matrix."""
    if cov is None:
        return
    choice(f"{key}.kind", cov.kind, COVARIANCE_KINDS, f"set {key}.kind accordingly")
    number(f"{key}.power", cov.power, float, lo=0.0)
    if cov.kind == "matrix":
        _check_matrix(f"{key}.matrix", cov.matrix, dims)


def _data(node: DictConfig) -> DataConfig:
    """The typed `dataset` group: grid keys as checked lists, every covariance checked, `shift` always set."""
    data = typed(DataConfig, node, "dataset")
    data.d = grid_values("dataset.d", data.d, int, lo=1)
    data.n = grid_values("dataset.n", data.n, int, lo=1)
    data.noise = grid_values("dataset.noise", data.noise, float, lo=0.0)
    data.rag_alpha = grid_values("dataset.rag_alpha", data.rag_alpha, float, 0.0, 1.0)
    data.align_alpha = grid_values("dataset.align_alpha", data.align_alpha, float, 0.0, 1.0)
    data.shift = data.shift or ShiftConfig(feature_cov=None, task_cov=None)
    for key, cov in (
        ("dataset.feature_cov", data.feature_cov),
        ("dataset.task_cov", data.task_cov),
        ("dataset.shift.feature_cov", data.shift.feature_cov),
        ("dataset.shift.task_cov", data.shift.task_cov),
    ):
        _check_cov(key, cov, data.d)
    number("dataset.batch", data.batch, int, lo=1)
    return data


def _model(node: DictConfig, dims: list[int]) -> ModelConfig:
    """The typed `model` group, by model name; bounds that depend on the dataset.d grid use `dims`."""
    model = typed(MODEL_SCHEMAS[node.name], node, "model")
    if isinstance(model, H3ModelConfig):
        if model.hidden is not None:  # every d of the grid needs at least d channels
            number(
                "model.hidden",
                model.hidden,
                int,
                lo=max(dims),
                fix=f"set model.hidden >= max(dataset.d) = {max(dims)}, or null (= d + 1)",
            )
    else:
        number("model.layers", model.layers, int, lo=1)
    if not isinstance(model, ConstructionModelConfig):
        # 0 makes every weight (LSA's W_K, W_Q; all of H3) zero and every gradient zero: training never moves
        number("model.init_std", model.init_std, float, gt=0.0)
    if isinstance(model, LSAModelConfig):
        model.rank = [
            None
            if r is None
            else number(
                "model.rank",
                r,
                int,
                lo=1,
                hi=min(dims),
                fix="set model.rank in [1, min(dataset.d)] or null (full)",
            )
            for r in listify("model.rank", model.rank)
        ]
        choice("model.value_init", model.value_init, VALUE_INITS)
    if isinstance(model, ConstructionModelConfig):
        choice("model.preconditioner", model.preconditioner, PRECONDITIONERS)
        if model.preconditioner == "optimal" and model.layers != 1:
            fail(
                "model.layers",
                model.layers,
                "1 with model.preconditioner=optimal (W* is a one-step optimum)",
                "use preconditioner=identity for multi-step GD",
            )
        if model.lr is not None:
            number("model.lr", model.lr, float, gt=0.0, fix="set model.lr > 0, or null (line search)")
    return model


def _train(node: DictConfig, dims: list[int]) -> TrainConfig:
    """The typed `method` group, with its LoRA and (when set) sensitivity subgroups."""
    train = typed(TrainConfig, node, "method")
    for k in POSITIVE_INTS:
        number(f"method.{k}", getattr(train, k), int, lo=1)
    number("method.warmup", train.warmup, int, lo=0)
    number("method.lr", train.lr, float, gt=0.0)
    number("method.min_lr_ratio", train.min_lr_ratio, float, 0.0, 1.0)
    # on |w| / max|w| with a strict '<': 0 counts nothing, above 1 counts everything
    grid_values("method.sparsity_thresholds", train.sparsity_thresholds, float, hi=1.0, gt=0.0)
    choice("method.dtype", train.dtype, DTYPES)
    number("method.threads", train.threads, int, lo=0)
    lora = train.lora
    for r in lora.ranks:
        number("method.lora.ranks", r, int, 1, min(dims), fix="give ranks in [1, min(dataset.d)]")
    number("method.lora.steps", lora.steps, int, lo=1)
    # alpha = 0 scales the update to zero; init_std = 0 starts A and B both at zero, where both gradients vanish
    for k in ("lr", "alpha", "init_std"):
        number(f"method.lora.{k}", getattr(lora, k), float, gt=0.0)
    choice("method.lora.target", lora.target, LORA_TARGETS, "pick one (a rank-r update of W_K^T W_Q)")
    sens = train.sensitivity
    if sens is not None:
        if not sens.eps:
            fail(
                "method.sensitivity.eps",
                sens.eps,
                "a non-empty list",
                "give the noise scales, e.g. [0, 0.01, 0.1]",
            )
        for eps in sens.eps:
            number("method.sensitivity.eps", eps, float, lo=0.0)
        number("method.sensitivity.noise_seeds", sens.noise_seeds, int, lo=1)
        number("method.sensitivity.eval_tasks", sens.eval_tasks, int, lo=1)
        number("method.sensitivity.init_std", sens.init_std, float, gt=0.0)
        for m in sens.models:
            choice("method.sensitivity.models", m, SENSITIVITY_MODELS)
        choice("method.sensitivity.value_init", sens.value_init, VALUE_INITS)
    return train


def parse(cfg: DictConfig) -> LinregJob:
    """Typed, validated view of a linreg job; raises ConfigError naming the key on any bad value."""
    model_name, method_name = cfg.model.get("name"), cfg.method.get("name")
    if model_name not in MODELS:
        raise ConfigError(
            f"dataset=linreg needs model={'|'.join(MODELS)}, got model={model_name}; "
            "pick one of them (the language models run on the other datasets)"
        )
    if method_name not in METHODS:
        raise ConfigError(f"dataset=linreg needs method={'|'.join(METHODS)}, got method={method_name}")
    data = _data(cfg.dataset)
    model = _model(cfg.model, data.d)
    train = _train(cfg.method, data.d)
    seed = number("seed", cfg.get("seed"), int, 0, SEED_MAX)
    job = LinregJob(seed=seed, data=data, model=model, train=train)
    _cross_checks(job)
    return job


def _cross_checks(job: LinregJob) -> None:
    """Constraints that involve more than one key."""
    data, model, train, lora = job.data, job.model, job.train, job.train.lora
    if job.trainable:  # warm-up longer than training never reaches the peak lr nor decays
        number("method.warmup", train.warmup, int, 0, train.steps, fix="set method.warmup <= method.steps")
        if lora.ranks:  # the LoRA phase reuses the schedule
            number(
                "method.warmup",
                train.warmup,
                int,
                0,
                lora.steps,
                fix="set method.warmup <= method.lora.steps (the LoRA phase reuses it)",
            )
    if job.ranks != [None] and (any(data.rag_alpha) or any(data.align_alpha)):
        fail(
            "model.rank",
            job.ranks,
            "null with rag_alpha/align_alpha (the rank-r optimum is derived for i.i.d. designs)",
            "drop model.rank or the correlated design",
        )
    if not lora.ranks:
        return
    if not isinstance(model, LSAModelConfig) or model.layers != 1:
        fail(
            "method.lora.ranks",
            lora.ranks,
            "empty unless model=lsa with model.layers=1",
            "use model=lsa, layers=1 for the LoRA study",
        )
    if data.shift.feature_cov is None and data.shift.task_cov is None:
        fail(
            "method.lora.ranks",
            lora.ranks,
            "a shifted distribution to adapt to",
            "set dataset.shift.feature_cov or dataset.shift.task_cov",
        )
    if any(data.rag_alpha) or any(data.align_alpha) or job.ranks != [None]:
        fail(
            "method.lora.ranks",
            lora.ranks,
            "the i.i.d. design (rag_alpha = align_alpha = 0) and full rank",
            "run the LoRA study without rag_alpha/align_alpha/model.rank",
        )


def validate(cfg: DictConfig) -> None:
    """Reject a bad linreg config before any training (raises icl_gd.errors.ConfigError)."""
    parse(cfg)
