"""The structured configs: the types and key names of every group's knobs (conf/ holds the values).

config.py merges each group onto its schema (`typed`), so a misspelled key or a wrong type fails with the key's
name; the schemas are also in Hydra's ConfigStore (group `schema`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from icl_gd.threads import AUTO as AUTO_THREADS


@dataclass
class ModelConfig:
    """A language model; conf/model/*.yaml hold the values and say what each key does."""

    name: str = MISSING
    path: str | None = MISSING  # local folder or hub id; None = the folder of `package`
    package: str | None = MISSING  # a Python package whose folder holds the weights (found, never imported)
    gguf_file: str | None = MISSING
    dtype: str = MISSING
    device: str = MISSING
    revision: str | None = MISSING
    trust_remote_code: bool = MISSING
    random_init: bool = MISSING
    arch: dict[str, Any] = MISSING
    add_bos: bool | None = MISSING


@dataclass
class HubConfig:
    """Where a data set lives on the Hugging Face hub (used only when the local files are absent)."""

    path: str = MISSING
    name: str | None = MISSING
    train_split: str = MISSING
    test_split: str = MISSING
    columns: dict[str, str] = MISSING
    label_column: str = MISSING


@dataclass
class DatasetConfig:
    """A data set; conf/dataset/jsonl.yaml (classification) and wordpairs.yaml hold every default."""

    name: str = MISSING
    kind: str = MISSING
    path: str = MISSING
    test_path: str | None = MISSING
    text_fields: list[str] = MISSING
    label_field: str = MISSING
    label_words: dict[str, str] | None = MISSING
    template: str = MISSING
    separator: str = MISSING
    split_seed: int = MISSING
    test_fraction: float = MISSING
    hub: HubConfig | None = MISSING


@dataclass
class AnalysisConfig:
    """Extra measurements of a training job; conf/config.yaml `analysis:` holds the values."""

    dai: bool = MISSING
    sparsity: bool = MISSING
    sparsity_thresholds: list[float] = MISSING
    sparsity_relative: bool = MISSING


@dataclass
class EvalConfig:
    """How queries are evaluated; conf/config.yaml `eval:` holds the values."""

    n_queries: int = MISSING
    n_select: int = MISSING
    top_k: int = MISSING
    batch_size: int = MISSING
    save_full_dist: bool = MISSING
    prefix_cache: bool = MISSING
    overflow: str = MISSING


@dataclass
class StatsConfig:
    """Intervals and verdicts; conf/config.yaml `stats:` holds the values."""

    n_boot: int = MISSING
    level: float = MISSING
    seed: int = MISSING
    primary: str = MISSING


@dataclass
class JobConfig:
    """The top level of a job's config (conf/config.yaml): its knobs and its groups, each checked by its own schema.

    Only the key names are checked here (a `+typo=1` is an error naming the nearest key); the values are typed
    by the groups' schemas and `check_job`.
    """

    seed: Any = MISSING
    demos: Any = MISSING
    demo_sampling: Any = MISSING
    order_seed: Any = MISSING
    demo_labels: Any = MISSING
    demo_source: Any = MISSING
    other_task: Any = MISSING
    rerun: Any = MISSING
    allow_failures: Any = False  # a multirun with a failed job exits 0 (sweep-level: not in a job's identity)
    progress: Any = True  # progress bars / lines (icl_gd/progress.py); how a job reports, not in its identity
    memory_check: Any = True  # icl_gd/memory_plan.py: refuse, before the model loads, a job that cannot fit
    threads: Any = (
        AUTO_THREADS  # torch threads per job (icl_gd/threads.py); how a job runs, not in its identity
    )
    eval: Any = MISSING
    stats: Any = MISSING
    analysis: Any = MISSING
    collapse: Any = MISSING
    search: Any = MISSING
    data_dir: Any = MISSING
    output_dir: Any = MISSING
    model: Any = MISSING
    dataset: Any = MISSING
    method: Any = MISSING
    logger: Any = MISSING
    hydra: Any = MISSING


@dataclass
class CollapseConfig:
    """When fine-tuning collapsed the model; conf/config.yaml `collapse:` holds the values."""

    entropy_fraction: float = MISSING
    loss_rise: float = MISSING


SCHEMAS: dict[str, type] = {
    "job": JobConfig,
    "collapse": CollapseConfig,
    "stats": StatsConfig,
    "model": ModelConfig,
    "dataset": DatasetConfig,
    "eval": EvalConfig,
    "analysis": AnalysisConfig,
}


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore (group `schema`), e.g. for a YAML defaults list `/schema/model@_here_`."""
    from hydra.core.config_store import ConfigStore  # noqa: PLC0415

    cs = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        cs.store(group="schema", name=group, node=schema)


register_schemas()
