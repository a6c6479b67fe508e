"""The dataclass schemas of a `dataset=linreg` job and the values its choice keys allow.

Each group of the job (`dataset`, `model`, `method`) is merged onto one of these schemas by
`icl_gd.linreg.checks.typed`, so a misspelled key or a wrong type fails naming `group.key`; the range and
cross-key checks are in `icl_gd.linreg.config`. The YAML files (conf/model/{lsa,h3,gd_construction}.yaml,
conf/dataset/linreg.yaml, conf/method/train.yaml) hold every default: the schemas say only what a value may be
(MISSING), except `CovConfig`, whose defaults serve a partial covariance such as
`dataset.shift.feature_cov={kind: powerlaw}`, which no YAML fills in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

MODELS = ("lsa", "h3", "gd_construction")
METHODS = ("train",)
PRECONDITIONERS = ("identity", "optimal")
VALUE_INITS = ("identity", "random")  # LSA's W_V, P start (models.LSALayer)
LORA_TARGETS = ("wq", "wk")
DTYPES = ("float32", "float64")
SENSITIVITY_MODELS = ("gd_construction", "lsa", "h3")  # method.sensitivity.models (linreg/sensitivity.py)


@dataclass
class CovConfig:
    """A covariance (dataset.feature_cov, dataset.task_cov and their shifted versions)."""

    kind: str = "isotropic"  # isotropic | powerlaw | matrix
    power: float = 1.0  # power-law decay lambda_k ∝ k^-power (kind=powerlaw), rescaled to trace d
    matrix: Any = None  # d x d symmetric positive definite nested list (kind=matrix); checked in config.py


@dataclass
class ShiftConfig:
    """dataset.shift: the distribution the LoRA phase adapts to."""

    feature_cov: CovConfig | None = MISSING  # S the LoRA phase adapts to; None = unchanged
    task_cov: CovConfig | None = MISSING  # S_beta the LoRA phase adapts to; None = unchanged


@dataclass
class DataConfig:
    """The `dataset` group: the task distribution and its grid axes."""

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
    """model=lsa: linear self-attention, trained."""

    name: str = MISSING
    layers: int = MISSING  # stacked layers
    rank: Any = MISSING  # (grid) key/query rank r, null = full; a list once parsed
    init_std: float = MISSING
    value_init: str = MISSING  # identity | random


@dataclass
class H3ModelConfig:
    """model=h3: the H3-style block of Li et al. (models.H3), trained."""

    name: str = MISSING
    hidden: int | None = MISSING  # channels; None = d + 1
    init_std: float = MISSING


@dataclass
class ConstructionModelConfig:
    """model=gd_construction: GD written into the weights by formula, not trained."""

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
    """method.lora: the low-rank adaptation phase on the shifted distribution."""

    ranks: list[int] = MISSING  # empty = no adaptation phase
    steps: int = MISSING
    lr: float = MISSING
    alpha: float = MISSING  # update scale alpha / r (Hu et al.)
    init_std: float = MISSING  # std of the A factor (B starts at zero)
    target: str = MISSING  # attention weight the update is added to


@dataclass
class SensitivityConfig:
    """method.sensitivity: the parameter-sensitivity job (weights perturbed by eps-scaled noise)."""

    eps: list[float] = MISSING  # relative noise scales (0 = unperturbed)
    noise_seeds: int = MISSING  # noise draws per eps > 0
    models: list[str] = MISSING  # of gd_construction, lsa, h3
    eval_tasks: int = MISSING  # fresh tasks per member for each risk
    init_std: float = MISSING  # the trained LSA's and H3's initial weights' std
    value_init: str = MISSING  # the trained LSA's W_V, P start (identity | random)


@dataclass
class TrainConfig:
    """The `method` group (method=train): training, evaluation and figure settings."""

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
    """A parsed, validated linreg job: what `icl_gd.linreg.lab.run_job` runs."""

    seed: int
    data: DataConfig
    model: ModelConfig
    train: TrainConfig

    @property
    def trainable(self) -> bool:
        """Whether the model is trained (every model but gd_construction)."""
        return self.model.name != "gd_construction"

    @property
    def ranks(self) -> list[int | None]:
        """The model.rank grid axis: [None] (full rank) for every model but lsa."""
        return self.model.rank if isinstance(self.model, LSAModelConfig) else [None]
