"""Typed view of a `dataset=linreg` job and its validation: every bad value fails here, before any training.

As on the language-model side (icl_gd/config.py), each group is merged onto its dataclass schema, so a misspelled
key or a wrong type fails naming `group.key`; then ranges, choices and constraints across keys are checked. The
YAML files (conf/model/{lsa,h3,gd_construction}.yaml, conf/dataset/linreg.yaml, conf/method/train.yaml) hold
every default: the schemas say only what a value may be (MISSING), except `CovConfig`, whose defaults serve a
partial covariance such as `dataset.shift.feature_cov={kind: powerlaw}`, which no YAML fills in.

`parse(cfg)` returns the typed job (the schema dataclasses, grid keys as lists); `validate(cfg)` is the check the
runner calls first; `icl_gd.linreg.lab.run_job` runs the job. Errors are `ConfigError`s whose message names the
key, the bad value, what is allowed and how to fix it. The lab reads only `seed`, `model`, `dataset` and
`method`; the language-model keys of the shared config (demos, eval, data_dir) are ignored.

Grid keys may be lists (`dataset.d`, `dataset.n`, `dataset.noise`, `dataset.rag_alpha`, `dataset.align_alpha`,
`model.rank`): one job then trains their product, every (d, n) pair as one batched group of members.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from icl_gd.errors import ConfigError
from icl_gd.linreg.data import COVARIANCE_KINDS

MODELS = ("lsa", "h3", "gd_construction")
METHODS = ("train",)
PRECONDITIONERS = ("identity", "optimal")
VALUE_INITS = ("identity", "random")
LORA_TARGETS = ("wq", "wk")
DTYPES = ("float32", "float64")
# seeds are stored as int64 (numpy, pandas/parquet columns, W&B); torch.manual_seed alone would take up to 2**64 - 1
SEED_MAX = 2**63 - 1


@dataclass
class CovConfig:
    kind: str = "isotropic"  # isotropic | powerlaw | matrix
    power: float = 1.0  # power-law decay lambda_k ∝ k^-power (kind=powerlaw), rescaled to trace d
    matrix: Any = None  # d x d symmetric positive definite nested list (kind=matrix); checked by hand below


@dataclass
class ShiftConfig:
    feature_cov: CovConfig | None = MISSING  # S the LoRA phase adapts to; None = unchanged
    task_cov: CovConfig | None = MISSING  # S_beta the LoRA phase adapts to; None = unchanged


@dataclass
class DataConfig:
    name: str = MISSING
    d: Any = MISSING  # (grid) a value or a list; a list of ints once parsed
    n: Any = MISSING  # (grid)
    noise: Any = MISSING  # (grid)
    feature_cov: CovConfig = MISSING
    task_cov: CovConfig = MISSING
    rag_alpha: Any = MISSING  # (grid)
    align_alpha: Any = MISSING  # (grid)
    shift: ShiftConfig | None = MISSING  # None (or both covariances None) = no shifted distribution
    batch: int = MISSING


@dataclass
class LSAModelConfig:
    name: str = MISSING
    layers: int = MISSING  # stacked layers
    rank: Any = MISSING  # (grid) key/query rank r, null = full; a list once parsed
    init_std: float = MISSING
    value_init: str = MISSING  # identity | random


@dataclass
class H3ModelConfig:
    name: str = MISSING
    hidden: int | None = MISSING  # channels; None = d + 1
    init_std: float = MISSING


@dataclass
class ConstructionModelConfig:
    name: str = MISSING
    layers: int = MISSING  # GD steps
    preconditioner: str = MISSING  # identity (von Oswald GD) | optimal (W*, Li et al.)
    lr: float | None = MISSING  # GD step size; None = line search on fresh tasks


ModelConfig = LSAModelConfig | H3ModelConfig | ConstructionModelConfig
MODEL_SCHEMAS: dict[str, type] = {
    "lsa": LSAModelConfig,
    "h3": H3ModelConfig,
    "gd_construction": ConstructionModelConfig,
}


@dataclass
class LoRAConfig:
    ranks: list[int] = MISSING  # empty = no adaptation phase
    steps: int = MISSING
    lr: float = MISSING
    alpha: float = MISSING  # update scale alpha / r (Hu et al.)
    init_std: float = MISSING  # std of the A factor (B starts at zero)
    target: str = MISSING  # attention weight the update is added to


@dataclass
class SensitivityConfig:
    eps: list[float] = MISSING  # relative noise scales (0 = unperturbed)
    noise_seeds: int = MISSING  # noise draws per eps > 0
    models: list[str] = MISSING  # of gd_construction, lsa, h3
    eval_tasks: int = MISSING  # fresh tasks per member for each risk
    init_std: float = MISSING  # the trained LSA's and H3's initial weights' std
    value_init: str = MISSING  # the trained LSA's W_V, P start (identity | random)


@dataclass
class TrainConfig:
    name: str = MISSING
    seeds: int = MISSING
    steps: int = MISSING
    lr: float = MISSING
    warmup: int = MISSING
    min_lr_ratio: float = MISSING
    checkpoints: int = MISSING
    log_every: int = MISSING
    eval_tasks: int = MISSING
    curve_tasks: int = MISSING
    tune_tasks: int = MISSING
    eval_chunk: int = MISSING
    theory_mc_samples: int = MISSING
    line_search_iters: int = MISSING
    construction_tasks: int = MISSING
    construction_stack: int = MISSING
    sparsity_thresholds: list[float] = MISSING
    figure_panels: int = MISSING
    lora: LoRAConfig = MISSING
    dtype: str = MISSING
    device: str = MISSING
    threads: int = MISSING  # torch threads while the job runs (0 = leave as is)
    sensitivity: SensitivityConfig | None = None  # set: the parameter-sensitivity job (linreg/sensitivity.py)


@dataclass
class LinregJob:
    seed: int
    data: DataConfig
    model: ModelConfig
    train: TrainConfig

    @property
    def trainable(self) -> bool:
        return self.model.name != "gd_construction"

    @property
    def ranks(self) -> list[int | None]:
        """The model.rank grid axis: [None] (full rank) for every model but lsa."""
        return self.model.rank if isinstance(self.model, LSAModelConfig) else [None]


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
SENSITIVITY_MODELS = ("gd_construction", "lsa", "h3")  # method.sensitivity.models (linreg/sensitivity.py)
VALUE_INITS = ("identity", "random")  # LSA's W_V, P start (models.LSALayer)
GROUP_FILES = {
    "model": "conf/model/{name}.yaml",
    "dataset": "conf/dataset/linreg.yaml",
    "method": "conf/method/train.yaml",
}


def _fail(key: str, value: Any, allowed: str, fix: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}. {fix}")


def _fields(schema: Any) -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}


def _typed(schema: type, node: Any, group: str) -> Any:
    """`node` merged onto its dataclass schema, as dataclass instances; errors name `group.key` and the fix."""
    where = GROUP_FILES[group].format(name=node.get("name"))
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except ConfigKeyError as e:
        parent, _, leaf = f"{group}.{e.full_key}".rpartition(".")
        allowed = sorted(set(_fields(e.object_type) or _fields(schema)) - {"name"})
        raise ConfigError(
            f"{parent} has unknown key(s) {[leaf]} for {group}={node.get('name')}; allowed: {allowed}. "
            f"Remove them (a preset's {group}.<key> survives a command-line {group}=<other option>)."
        ) from None
    except MissingMandatoryValue as e:
        raise ConfigError(
            f"{group}.{e.full_key} is not set: expected a value (the default is in {where}). "
            f"Give it there or as {group}.{e.full_key}=<value>."
        ) from None
    except OmegaConfBaseException as e:
        kind = _fields(e.object_type).get(str(e.key), "the type of the schema")
        reason = str(e.msg).splitlines()[0]
        raise ConfigError(
            f"{group}.{e.full_key}={e.value!r} is not allowed: expected {kind} ({reason}). "
            f"Fix the override or {where}."
        ) from None


def _listify(key: str, value: Any) -> list:
    """A grid key as a non-empty list (a scalar is a one-value grid)."""
    if isinstance(value, ListConfig | list | tuple):
        out = list(value)
        if not out:
            _fail(key, out, "a value or a non-empty list", f"give {key} at least one value")
        return out
    return [value]


def _show(bound: float) -> str:
    """A bound as written in a message: 0, 1, 0.5, 9223372036854775807 (no '0.0', no exponent for an int)."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _bounds(lo: float | None, hi: float | None, gt: float | None) -> str:
    """The allowed range in words: '> 0', '>= 1', 'in [0, 1]', 'in (0, 1]' ('' when unbounded)."""
    low = gt if gt is not None else lo
    if low is not None and hi is not None:
        return f"in {'(' if gt is not None else '['}{_show(low)}, {_show(hi)}]"
    if low is not None:
        return f"{'>' if gt is not None else '>='} {_show(low)}"
    return "" if hi is None else f"<= {_show(hi)}"


def _number(
    key: str,
    value: Any,
    kind: type,
    lo: float | None = None,
    hi: float | None = None,
    *,
    gt: float | None = None,
    fix: str | None = None,
) -> Any:
    """`value` as a finite `kind` within lo <= value <= hi (both inclusive) and value > gt (strict), else ConfigError.

    `fix` replaces the default advice ("set <key> <range>") where the bound comes from another key.
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and isinstance(value, float):  # no nan/inf; an integer kind takes 3.0, never 3.5
        ok = math.isfinite(value) and (kind is not int or value.is_integer())
    rng = _bounds(lo, hi, gt)
    what = f"a{'n integer' if kind is int else ' finite number'}{' ' + rng if rng else ''}"
    bad = ok and (
        (lo is not None and value < lo)
        or (hi is not None and value > hi)
        or (gt is not None and not value > gt)
    )
    if not ok or bad:
        _fail(key, value, what, fix or f"set {key} {rng or 'to such a value'}")
    return kind(value)


def _grid(
    key: str,
    value: Any,
    kind: type,
    lo: float | None = None,
    hi: float | None = None,
    *,
    gt: float | None = None,
    fix: str | None = None,
) -> list:
    """A grid key as a list, each value checked as `_number` checks one."""
    return [_number(key, v, kind, lo, hi, gt=gt, fix=fix) for v in _listify(key, value)]


def _choice(key: str, value: Any, allowed: tuple, fix: str = "pick one") -> None:
    if value not in allowed:
        _fail(key, value, f"one of {allowed}", fix)


def _check_matrix(key: str, matrix: Any, dims: list[int]) -> None:
    if matrix is None:
        _fail(key, None, "a d x d nested list", f"give {key} for kind=matrix")
    try:
        m = torch.as_tensor(matrix, dtype=torch.float64)
    except (TypeError, ValueError):
        _fail(key, matrix, "a d x d nested list of numbers", "fix the matrix entries")
    if len(dims) != 1 or m.shape != (dims[0], dims[0]):
        _fail(
            key,
            f"shape {tuple(m.shape)}",
            f"shape (d, d) with a single dataset.d={dims}",
            "match the matrix to dataset.d",
        )
    if not torch.allclose(m, m.T):
        _fail(key, matrix, "a symmetric matrix", "symmetrise it")
    lam = torch.linalg.eigvalsh(m).min().item()
    if lam <= 0:
        _fail(
            key,
            matrix,
            f"a positive definite matrix (smallest eigenvalue is {lam:.3g})",
            "use a symmetric positive definite covariance",
        )


def _check_cov(key: str, cov: CovConfig | None, dims: list[int]) -> None:
    if cov is None:
        return
    _choice(f"{key}.kind", cov.kind, COVARIANCE_KINDS, f"set {key}.kind accordingly")
    _number(f"{key}.power", cov.power, float, lo=0.0)
    if cov.kind == "matrix":
        _check_matrix(f"{key}.matrix", cov.matrix, dims)


def _data(node: DictConfig) -> DataConfig:
    data = _typed(DataConfig, node, "dataset")
    data.d = _grid("dataset.d", data.d, int, lo=1)
    data.n = _grid("dataset.n", data.n, int, lo=1)
    data.noise = _grid("dataset.noise", data.noise, float, lo=0.0)
    data.rag_alpha = _grid("dataset.rag_alpha", data.rag_alpha, float, 0.0, 1.0)
    data.align_alpha = _grid("dataset.align_alpha", data.align_alpha, float, 0.0, 1.0)
    data.shift = data.shift or ShiftConfig(feature_cov=None, task_cov=None)
    for key, cov in (
        ("dataset.feature_cov", data.feature_cov),
        ("dataset.task_cov", data.task_cov),
        ("dataset.shift.feature_cov", data.shift.feature_cov),
        ("dataset.shift.task_cov", data.shift.task_cov),
    ):
        _check_cov(key, cov, data.d)
    _number("dataset.batch", data.batch, int, lo=1)
    return data


def _model(node: DictConfig, dims: list[int]) -> ModelConfig:
    model = _typed(MODEL_SCHEMAS[node.name], node, "model")
    if isinstance(model, H3ModelConfig):
        if model.hidden is not None:  # every d of the grid needs at least d channels
            _number(
                "model.hidden",
                model.hidden,
                int,
                lo=max(dims),
                fix=f"set model.hidden >= max(dataset.d) = {max(dims)}, or null (= d + 1)",
            )
    else:
        _number("model.layers", model.layers, int, lo=1)
    if not isinstance(model, ConstructionModelConfig):
        # 0 makes every weight (LSA's W_K, W_Q; all of H3) zero and every gradient zero: training never moves
        _number("model.init_std", model.init_std, float, gt=0.0)
    if isinstance(model, LSAModelConfig):
        model.rank = [
            None
            if r is None
            else _number(
                "model.rank",
                r,
                int,
                lo=1,
                hi=min(dims),
                fix="set model.rank in [1, min(dataset.d)] or null (full)",
            )
            for r in _listify("model.rank", model.rank)
        ]
        _choice("model.value_init", model.value_init, VALUE_INITS)
    if isinstance(model, ConstructionModelConfig):
        _choice("model.preconditioner", model.preconditioner, PRECONDITIONERS)
        if model.preconditioner == "optimal" and model.layers != 1:
            _fail(
                "model.layers",
                model.layers,
                "1 with model.preconditioner=optimal (W* is a one-step optimum)",
                "use preconditioner=identity for multi-step GD",
            )
        if model.lr is not None:
            _number("model.lr", model.lr, float, gt=0.0, fix="set model.lr > 0, or null (line search)")
    return model


def _train(node: DictConfig, dims: list[int]) -> TrainConfig:
    train = _typed(TrainConfig, node, "method")
    for k in POSITIVE_INTS:
        _number(f"method.{k}", getattr(train, k), int, lo=1)
    _number("method.warmup", train.warmup, int, lo=0)
    _number("method.lr", train.lr, float, gt=0.0)
    _number("method.min_lr_ratio", train.min_lr_ratio, float, 0.0, 1.0)
    # on |w| / max|w| with a strict '<': 0 counts nothing, above 1 counts everything
    _grid("method.sparsity_thresholds", train.sparsity_thresholds, float, hi=1.0, gt=0.0)
    _choice("method.dtype", train.dtype, DTYPES)
    _number("method.threads", train.threads, int, lo=0)
    lora = train.lora
    for r in lora.ranks:
        _number("method.lora.ranks", r, int, 1, min(dims), fix="give ranks in [1, min(dataset.d)]")
    _number("method.lora.steps", lora.steps, int, lo=1)
    # alpha = 0 scales the update to zero; init_std = 0 starts A and B both at zero, where both gradients vanish
    for k in ("lr", "alpha", "init_std"):
        _number(f"method.lora.{k}", getattr(lora, k), float, gt=0.0)
    _choice("method.lora.target", lora.target, LORA_TARGETS, "pick one (a rank-r update of W_K^T W_Q)")
    sens = train.sensitivity
    if sens is not None:
        if not sens.eps:
            _fail(
                "method.sensitivity.eps",
                sens.eps,
                "a non-empty list",
                "give the noise scales, e.g. [0, 0.01, 0.1]",
            )
        for eps in sens.eps:
            _number("method.sensitivity.eps", eps, float, lo=0.0)
        _number("method.sensitivity.noise_seeds", sens.noise_seeds, int, lo=1)
        _number("method.sensitivity.eval_tasks", sens.eval_tasks, int, lo=1)
        _number("method.sensitivity.init_std", sens.init_std, float, gt=0.0)
        for m in sens.models:
            _choice("method.sensitivity.models", m, SENSITIVITY_MODELS)
        _choice("method.sensitivity.value_init", sens.value_init, VALUE_INITS)
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
    seed = _number("seed", cfg.get("seed"), int, 0, SEED_MAX)
    job = LinregJob(seed=seed, data=data, model=model, train=train)
    _cross_checks(job)
    return job


def _cross_checks(job: LinregJob) -> None:
    """Constraints that involve more than one key."""
    data, model, train, lora = job.data, job.model, job.train, job.train.lora
    if job.trainable:  # warm-up longer than training never reaches the peak lr nor decays
        _number("method.warmup", train.warmup, int, 0, train.steps, fix="set method.warmup <= method.steps")
        if lora.ranks:  # the LoRA phase reuses the schedule
            _number(
                "method.warmup",
                train.warmup,
                int,
                0,
                lora.steps,
                fix="set method.warmup <= method.lora.steps (the LoRA phase reuses it)",
            )
    if job.ranks != [None] and (any(data.rag_alpha) or any(data.align_alpha)):
        _fail(
            "model.rank",
            job.ranks,
            "null with rag_alpha/align_alpha (the rank-r optimum is derived for i.i.d. designs)",
            "drop model.rank or the correlated design",
        )
    if not lora.ranks:
        return
    if not isinstance(model, LSAModelConfig) or model.layers != 1:
        _fail(
            "method.lora.ranks",
            lora.ranks,
            "empty unless model=lsa with model.layers=1",
            "use model=lsa, layers=1 for the LoRA study",
        )
    if data.shift.feature_cov is None and data.shift.task_cov is None:
        _fail(
            "method.lora.ranks",
            lora.ranks,
            "a shifted distribution to adapt to",
            "set dataset.shift.feature_cov or dataset.shift.task_cov",
        )
    if any(data.rag_alpha) or any(data.align_alpha) or job.ranks != [None]:
        _fail(
            "method.lora.ranks",
            lora.ranks,
            "the i.i.d. design (rag_alpha = align_alpha = 0) and full rank",
            "run the LoRA study without rag_alpha/align_alpha/model.rank",
        )


def validate(cfg: DictConfig) -> None:
    """Reject a bad linreg config before any training (raises icl_gd.errors.ConfigError)."""
    parse(cfg)
