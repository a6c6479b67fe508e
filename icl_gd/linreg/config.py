"""Typed view of a `dataset=linreg` job and its validation: every bad value fails here, before any training.

The runner calls `validate(cfg)` first, then `icl_gd.linreg.lab.run_job`. Errors are `ConfigError`s whose message
names the key, the bad value, what is allowed and how to fix it. The lab reads only `seed`, `model`, `dataset` and
`method`; the language-model keys of the shared config (demos, eval, data_dir) are ignored.

Grid keys may be lists (`dataset.d`, `dataset.n`, `dataset.noise`, `dataset.rag_alpha`, `dataset.align_alpha`,
`model.rank`): one job then trains their product, every (d, n) pair as one batched group of members.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from icl_gd.errors import ConfigError
from icl_gd.linreg.data import COVARIANCE_KINDS, TaskSpec, covariance

MODELS = ("lsa", "h3", "gd_construction")
METHODS = ("train",)
PRECONDITIONERS = ("identity", "optimal")
VALUE_INITS = ("identity", "random")
LORA_TARGETS = ("wq", "wk")
DTYPES = ("float32", "float64")
GRID_KEYS = ("d", "n", "noise", "rag_alpha", "align_alpha", "rank")  # list-valued keys expand into a grid


@dataclass
class CovConfig:
    kind: str = "isotropic"  # isotropic | powerlaw | matrix
    power: float = 1.0  # power-law decay lambda_k ∝ k^-power (kind=powerlaw), rescaled to trace d
    matrix: list | None = None  # d x d symmetric positive definite matrix (kind=matrix)


@dataclass
class ShiftConfig:
    feature_cov: CovConfig | None = None  # S the LoRA phase adapts to; None = unchanged
    task_cov: CovConfig | None = None  # S_beta the LoRA phase adapts to; None = unchanged


@dataclass
class DataConfig:
    d: list[int] = field(default_factory=lambda: [5])
    n: list[int] = field(default_factory=lambda: [10])
    noise: list[float] = field(default_factory=lambda: [0.0])
    feature_cov: CovConfig = field(default_factory=CovConfig)
    task_cov: CovConfig = field(default_factory=CovConfig)
    rag_alpha: list[float] = field(default_factory=lambda: [0.0])
    align_alpha: list[float] = field(default_factory=lambda: [0.0])
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    batch: int = 512


@dataclass
class ModelConfig:
    name: str = "lsa"
    layers: int = 1  # lsa / gd_construction: stacked layers (GD steps for the construction)
    rank: list[int | None] = field(default_factory=lambda: [None])  # lsa: key/query rank r (None = full)
    hidden: int | None = None  # h3: channels (None = d + 1)
    init_std: float = 0.1  # lsa / h3: std of the initial weights
    value_init: str = "identity"  # lsa: W_V and P start at identity + noise (identity) or pure noise (random)
    preconditioner: str = "identity"  # gd_construction: identity (von Oswald GD) | optimal (W*, Li et al.)
    lr: float | None = None  # gd_construction: GD step size; None = line search on fresh tasks


@dataclass
class LoRAConfig:
    ranks: list[int] = field(default_factory=list)  # LoRA ranks; empty = no adaptation phase
    steps: int = 2000
    lr: float = 0.05
    alpha: float = 1.0  # update scale alpha / r (Hu et al.)
    init_std: float = 0.1  # std of the A factor (B starts at zero)
    target: str = "wq"  # attention weight the update is added to


@dataclass
class TrainConfig:
    seeds: int = 2
    steps: int = 2000
    lr: float = 0.02
    warmup: int = 100
    min_lr_ratio: float = 0.01
    checkpoints: int = 10
    log_every: int = 50
    eval_tasks: int = 65536
    curve_tasks: int = 4096
    tune_tasks: int = 16384
    eval_chunk: int = 8192
    theory_mc_samples: int = 200000
    line_search_iters: int = 40
    construction_tasks: int = 64
    construction_stack: int = 3
    sparsity_thresholds: list[float] = field(default_factory=lambda: [1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
    figure_panels: int = 4
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    dtype: str = "float32"
    device: str = "cpu"
    threads: int = 1  # torch threads while the job runs (0 = leave as is); tiny tensors run best on one


@dataclass
class LinregJob:
    seed: int
    data: DataConfig
    model: ModelConfig
    train: TrainConfig

    @property
    def trainable(self) -> bool:
        return self.model.name != "gd_construction"


DATA = DataConfig()  # defaults of the list-valued fields (dataclass fields with factories)

# keys each config group may hold (besides `name`); anything else is a typo or an option of another model
MODEL_KEYS = {
    "lsa": {"layers", "rank", "init_std", "value_init"},
    "h3": {"hidden", "init_std"},
    "gd_construction": {"layers", "preconditioner", "lr"},
}


def _fail(key: str, value: Any, allowed: str, fix: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}. {fix}")


def _listify(key: str, value: Any) -> list:
    """A grid key as a non-empty list (a scalar is a one-value grid)."""
    if isinstance(value, ListConfig | list | tuple):
        out = list(value)
        if not out:
            _fail(key, out, "a value or a non-empty list", f"give {key} at least one value")
        return out
    return [value]


def _number(key: str, value: Any, kind: type, lo: float | None = None, hi: float | None = None) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    if not ok:
        _fail(
            key, value, f"a{'n integer' if kind is int else ' number'} in {rng}", f"set {key} to such a value"
        )
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        _fail(key, value, f"a value in {rng}", f"set {key} inside that range")
    return kind(value)


def _check_keys(group: str, node: DictConfig, allowed: set[str]) -> None:
    extra = sorted(set(node.keys()) - allowed - {"name"})
    if extra:
        raise ConfigError(
            f"{group} has unknown key(s) {extra} for {group}={node.get('name')}; allowed: {sorted(allowed)}. "
            f"Remove them (a preset's {group}.<key> survives a command-line {group}=<other option>)."
        )


def _cov(key: str, node: Any, dims: list[int]) -> CovConfig:
    if not isinstance(node, DictConfig):
        _fail(key, node, "a mapping {kind, power, matrix}", f"set {key}.kind to one of {COVARIANCE_KINDS}")
    _check_keys(key, node, {"kind", "power", "matrix"})
    cov = CovConfig(
        kind=str(node.get("kind", CovConfig.kind)),
        power=float(node.get("power", CovConfig.power)),
        matrix=OmegaConf.to_container(node.matrix) if node.get("matrix") is not None else None,
    )
    if cov.kind not in COVARIANCE_KINDS:
        _fail(f"{key}.kind", cov.kind, f"one of {', '.join(COVARIANCE_KINDS)}", f"set {key}.kind accordingly")
    _number(f"{key}.power", cov.power, float, lo=0.0)
    if cov.kind == "matrix":
        if cov.matrix is None:
            _fail(f"{key}.matrix", None, "a d x d nested list", f"give {key}.matrix for kind=matrix")
        try:
            m = torch.as_tensor(cov.matrix, dtype=torch.float64)
        except (TypeError, ValueError):
            _fail(f"{key}.matrix", cov.matrix, "a d x d nested list of numbers", "fix the matrix entries")
        if len(dims) != 1 or m.shape != (dims[0], dims[0]):
            _fail(
                f"{key}.matrix",
                f"shape {tuple(m.shape)}",
                f"shape (d, d) with a single dataset.d={dims}",
                "match the matrix to dataset.d",
            )
        if not torch.allclose(m, m.T):
            _fail(f"{key}.matrix", cov.matrix, "a symmetric matrix", "symmetrise it")
        lam = torch.linalg.eigvalsh(m).min().item()
        if lam <= 0:
            _fail(
                f"{key}.matrix",
                cov.matrix,
                f"a positive definite matrix (smallest eigenvalue is {lam:.3g})",
                "use a symmetric positive definite covariance",
            )
    return cov


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
    ds, md, mt = cfg.dataset, cfg.model, cfg.method

    _check_keys("dataset", ds, {f.name for f in dataclasses.fields(DataConfig)})
    dims = [_number("dataset.d", v, int, lo=1) for v in _listify("dataset.d", ds.get("d", DATA.d))]
    shift = ds.get("shift") or {}
    if shift:
        _check_keys("dataset.shift", shift, {"feature_cov", "task_cov"})
    data = DataConfig(
        d=dims,
        n=[_number("dataset.n", v, int, lo=1) for v in _listify("dataset.n", ds.get("n", DATA.n))],
        noise=[
            _number("dataset.noise", v, float, lo=0.0)
            for v in _listify("dataset.noise", ds.get("noise", DATA.noise))
        ],
        feature_cov=_cov("dataset.feature_cov", ds.get("feature_cov", OmegaConf.create({})), dims),
        task_cov=_cov("dataset.task_cov", ds.get("task_cov", OmegaConf.create({})), dims),
        rag_alpha=[
            _number("dataset.rag_alpha", v, float, 0.0, 1.0)
            for v in _listify("dataset.rag_alpha", ds.get("rag_alpha", DATA.rag_alpha))
        ],
        align_alpha=[
            _number("dataset.align_alpha", v, float, 0.0, 1.0)
            for v in _listify("dataset.align_alpha", ds.get("align_alpha", DATA.align_alpha))
        ],
        shift=ShiftConfig(
            feature_cov=_cov("dataset.shift.feature_cov", shift["feature_cov"], dims)
            if shift.get("feature_cov")
            else None,
            task_cov=_cov("dataset.shift.task_cov", shift["task_cov"], dims)
            if shift.get("task_cov")
            else None,
        ),
        batch=_number("dataset.batch", ds.get("batch", DATA.batch), int, lo=1),
    )

    _check_keys("model", md, MODEL_KEYS[model_name])
    ranks = _listify("model.rank", md.get("rank", None))
    for r in ranks:
        if r is not None:
            _number("model.rank", r, int, lo=1, hi=min(dims))
    model = ModelConfig(
        name=model_name,
        layers=_number("model.layers", md.get("layers", ModelConfig.layers), int, lo=1),
        rank=[None if r is None else int(r) for r in ranks],
        hidden=None if md.get("hidden") is None else _number("model.hidden", md.hidden, int, lo=min(dims)),
        init_std=_number("model.init_std", md.get("init_std", ModelConfig.init_std), float, lo=0.0),
        value_init=str(md.get("value_init", ModelConfig.value_init)),
        preconditioner=str(md.get("preconditioner", ModelConfig.preconditioner)),
        lr=None if md.get("lr") is None else _number("model.lr", md.lr, float, lo=0.0),
    )
    if model.value_init not in VALUE_INITS:
        _fail("model.value_init", model.value_init, f"one of {VALUE_INITS}", "pick one")
    if model.preconditioner not in PRECONDITIONERS:
        _fail("model.preconditioner", model.preconditioner, f"one of {PRECONDITIONERS}", "pick one")
    if model.preconditioner == "optimal" and model.layers != 1:
        _fail(
            "model.layers",
            model.layers,
            "1 with model.preconditioner=optimal (W* is a one-step optimum)",
            "use preconditioner=identity for multi-step GD",
        )
    if model.lr is not None and model.lr == 0:
        _fail("model.lr", model.lr, "a positive step size or null (line search)", "set model.lr > 0 or null")

    _check_keys("method", mt, {f.name for f in dataclasses.fields(TrainConfig)})
    lo = mt.get("lora") or {}
    if lo:
        _check_keys("method.lora", lo, {f.name for f in dataclasses.fields(LoRAConfig)})
    defaults = TrainConfig()
    ints = (
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
    train_kw: dict[str, Any] = {
        k: _number(f"method.{k}", mt.get(k, getattr(defaults, k)), int, lo=1) for k in ints
    }
    train_kw["warmup"] = _number("method.warmup", mt.get("warmup", defaults.warmup), int, lo=0)
    train_kw["lr"] = _number("method.lr", mt.get("lr", defaults.lr), float, lo=0.0)
    train_kw["min_lr_ratio"] = _number(
        "method.min_lr_ratio", mt.get("min_lr_ratio", defaults.min_lr_ratio), float, 0.0, 1.0
    )
    train_kw["sparsity_thresholds"] = [
        _number("method.sparsity_thresholds", t, float, lo=0.0)
        for t in _listify(
            "method.sparsity_thresholds", mt.get("sparsity_thresholds", defaults.sparsity_thresholds)
        )
    ]
    train_kw["dtype"] = str(mt.get("dtype", defaults.dtype))
    if train_kw["dtype"] not in DTYPES:
        _fail("method.dtype", train_kw["dtype"], f"one of {DTYPES}", "pick one")
    train_kw["device"] = str(mt.get("device", defaults.device))
    train_kw["threads"] = _number("method.threads", mt.get("threads", defaults.threads), int, lo=0)
    lora_ranks = [_number("method.lora.ranks", r, int, lo=1, hi=min(dims)) for r in (lo.get("ranks") or [])]
    lora = LoRAConfig(
        ranks=lora_ranks,
        steps=_number("method.lora.steps", lo.get("steps", LoRAConfig.steps), int, lo=1),
        lr=_number("method.lora.lr", lo.get("lr", LoRAConfig.lr), float, lo=0.0),
        alpha=_number("method.lora.alpha", lo.get("alpha", LoRAConfig.alpha), float, lo=0.0),
        init_std=_number("method.lora.init_std", lo.get("init_std", LoRAConfig.init_std), float, lo=0.0),
        target=str(lo.get("target", LoRAConfig.target)),
    )
    if lora.target not in LORA_TARGETS:
        _fail(
            "method.lora.target",
            lora.target,
            f"one of {LORA_TARGETS} (a rank-r update of W_K^T W_Q)",
            "pick one",
        )
    train = TrainConfig(**train_kw, lora=lora)

    job = LinregJob(seed=_number("seed", cfg.get("seed", 0), int, lo=0), data=data, model=model, train=train)
    _cross_checks(job)
    return job


def _cross_checks(job: LinregJob) -> None:
    """Constraints that involve more than one key."""
    data, model, lora = job.data, job.model, job.train.lora
    if model.name != "lsa" and model.rank != [None]:
        _fail("model.rank", model.rank, "null unless model=lsa", "drop model.rank")
    if model.rank != [None] and (any(data.rag_alpha) or any(data.align_alpha)):
        _fail(
            "model.rank",
            model.rank,
            "null with rag_alpha/align_alpha (the rank-r optimum is derived for i.i.d. designs)",
            "drop model.rank or the correlated design",
        )
    if lora.ranks:
        if model.name != "lsa" or model.layers != 1:
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
        if any(data.rag_alpha) or any(data.align_alpha) or model.rank != [None]:
            _fail(
                "method.lora.ranks",
                lora.ranks,
                "the i.i.d. design (rag_alpha = align_alpha = 0) and full rank",
                "run the LoRA study without rag_alpha/align_alpha/model.rank",
            )


def covariances(cov: CovConfig, d: int) -> torch.Tensor:
    """The d x d covariance a CovConfig describes (float64)."""
    return covariance(cov.kind, d, cov.power, cov.matrix)


def point_spec(job: LinregJob, point: dict[str, Any], shifted: bool = False) -> TaskSpec:
    """The task distribution of one grid point (E = 1); `shifted` swaps in dataset.shift's covariances."""
    d = point["d"]
    fc, tc = job.data.feature_cov, job.data.task_cov
    if shifted:
        fc = job.data.shift.feature_cov or fc
        tc = job.data.shift.task_cov or tc

    def one(v: float) -> torch.Tensor:
        return torch.tensor([float(v)], dtype=torch.float64)

    return TaskSpec(
        covariances(fc, d)[None],
        covariances(tc, d)[None],
        one(point["noise"]),
        one(point["rag_alpha"]),
        one(point["align_alpha"]),
    )


def grid_points(job: LinregJob) -> list[dict[str, Any]]:
    """Every grid point (a dict over GRID_KEYS), in a stable order: d and n outermost so groups are contiguous."""
    axes = [job.data.d, job.data.n, job.data.noise, job.data.rag_alpha, job.data.align_alpha, job.model.rank]
    return [dict(zip(GRID_KEYS, vals, strict=True)) for vals in itertools.product(*axes)]


def varying_keys(job: LinregJob) -> list[str]:
    """Grid keys with more than one value (they label metrics and form figure axes)."""
    axes = {
        "d": job.data.d,
        "n": job.data.n,
        "noise": job.data.noise,
        "rag_alpha": job.data.rag_alpha,
        "align_alpha": job.data.align_alpha,
        "rank": job.model.rank,
    }
    return [k for k in GRID_KEYS if len(axes[k]) > 1]


def validate(cfg: DictConfig) -> None:
    """Reject a bad linreg config before any training (raises icl_gd.errors.ConfigError)."""
    parse(cfg)
