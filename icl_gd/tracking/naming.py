"""What a W&B run is called and holds: names, groups, tags, flat config keys, stable ids, artifact names.

Pure functions of configs and folders (no wandb), kept apart from the tracker so the sweep steps and the
dashboard can name runs without starting one, and every run of a sweep reads alike on a dashboard.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from icl_gd.errors import ConfigError

# What every job run's config holds flat, beside the full tree (CONFIG_TREE): what a dashboard groups and filters by
FLAT_KEYS = (
    "method",
    "method_label",
    "dataset",
    "model",
    "demos",
    "seed",
    "order_seed",
    "demo_labels",
    "experiment",
)
CONFIG_TREE = "cfg"  # the job's whole resolved config, under this key of the W&B config
ADHOC = "adhoc"  # the experiment of a run started without experiment=...
ORDER_SUFFIX = (
    "_order"  # job_type of a job run on another demo order (order_seed set): icl_order is the ICL floor
)
ORDER_TAG = "order_floor"
SHUFFLED_TAG = "shuffled_labels"
PREDICTIONS_ARTIFACT = "predictions"  # artifact type of a job's predictions.parquet and demos.jsonl
PROB_RANGE = (0.0, 1.0)  # histogram bounds of probabilities: the same bins in every run
TRAIN_STEP = "train/step"  # the x axis of every train/* curve
TRAIN_PREFIX = "train/"
# Defaults of the logger knobs (conf/logger/wandb.yaml sets them; these apply to a logger node without them)
DEFAULTS = {
    "project": "icl-gd",
    "group": "{experiment}-{sweep}",
    "run_name": "{method_label}-{dataset}-N{demos}-s{seed}{order}{shuffled}",
    "init_timeout_s": 30,
    "hist_bins": 20,
    "max_table_rows": 20000,
}
GROUP_FIELDS = ("experiment", "sweep")
NAME_FIELDS = (*FLAT_KEYS, "order", "shuffled", "job_type", "job")
_TAG_MAX = 64  # W&B's limit on a tag's length
_ID_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_ID_HASH = 12  # hex digits of the sweep folder's hash in a stable run id
_SWEEP_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # Hydra's default sweep folder: .../<date>/<time>
_RUN_FOLDER = re.compile(r"^(?:offline-)?run-(?P<time>\d{8}_\d{6})-(?P<id>.+)$")  # wandb's run folders
_ARTIFACT_BAD = re.compile(r"[^A-Za-z0-9._-]+")
_ARTIFACT_MAX = 128  # W&B's limit on an artifact name
SWEEP_FILE = "multirun.yaml"  # what Hydra writes at the top of a sweep folder
HYDRA_FILE = Path(".hydra") / "hydra.yaml"  # what Hydra writes in each job folder (runtime.choices)


def knob(logger_cfg: Mapping[str, Any] | None, key: str) -> Any:
    """A logger knob: the node's value, else DEFAULTS[key]."""
    value = (logger_cfg or {}).get(key) if logger_cfg is not None else None
    return DEFAULTS[key] if value is None else value


def flat_keys(config: Mapping[str, Any], experiment: str | None) -> dict[str, Any]:
    """FLAT_KEYS of a resolved job config: what dashboards group and filter by (scalars only)."""
    method = config.get("method") or {}
    dataset = config.get("dataset") or {}
    model = config.get("model") or {}
    return {
        "method": str(method.get("name")),
        "method_label": str(method.get("tag") or method.get("name")),
        "dataset": str(dataset.get("name")),
        "model": str(model.get("name")),
        "demos": config.get("demos"),
        "seed": config.get("seed"),
        "order_seed": config.get("order_seed"),
        "demo_labels": str(config.get("demo_labels") or "original"),
        "experiment": experiment or ADHOC,
    }


def job_type_of(flat: Mapping[str, Any]) -> str:
    """The method, with ORDER_SUFFIX for a job on another demo order (the noise floor: icl_order)."""
    return f"{flat['method']}{ORDER_SUFFIX}" if flat.get("order_seed") is not None else str(flat["method"])


def _fill(template: str, fields: Mapping[str, Any], key: str, allowed: Sequence[str]) -> str:
    """`template` with its {fields} filled; ConfigError naming `logger.<key>` and the allowed fields."""
    try:
        return str(template).format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"logger.{key}={template!r} cannot be filled ({type(e).__name__}: {e}); its fields are "
            + ", ".join(f"{{{f}}}" for f in allowed)
        ) from None


def run_name(template: str, flat: Mapping[str, Any], job: str) -> str:
    """`logger.run_name` filled in: e.g. "gd-sst2-N8-s0", "icl-sst2-N8-s0-o1" (order_seed 1)."""
    fields = {
        **flat,
        "order": "" if flat.get("order_seed") is None else f"-o{flat['order_seed']}",
        "shuffled": "-shuffled" if flat.get("demo_labels") == "shuffled" else "",
        "job_type": job_type_of(flat),
        "job": job,
    }
    return _fill(template, fields, "run_name", NAME_FIELDS)


def run_tags(flat: Mapping[str, Any]) -> list[str]:
    """Tags that say what a job run is: experiment, dataset, method (and its label), model, floor/control marks."""
    tags = [flat["experiment"], flat["dataset"], flat["method"], flat["method_label"], flat["model"]]
    if flat.get("order_seed") is not None:
        tags.append(ORDER_TAG)
    if flat.get("demo_labels") == "shuffled":
        tags.append(SHUFFLED_TAG)
    return _tags(tags)


def sweep_label(folder: str | Path) -> str:
    """The sweep's start time for Hydra's default folder (.../<date>/<time> -> "<date>_<time>"), else its name.

    Derived from the folder alone, so every job, worker process and rerun of a sweep agrees on it."""
    p = Path(folder)
    if _SWEEP_TIME.match(p.parent.name):
        return f"{p.parent.name}_{p.name}"
    return p.name


def sweep_group(logger_cfg: Mapping[str, Any] | None, folder: str | Path, experiment: str | None) -> str:
    """The W&B group of every run of a sweep folder: `logger.group` with {experiment} (or "adhoc") and {sweep}."""
    fields = {"experiment": experiment or ADHOC, "sweep": sweep_label(folder)}
    return _fill(knob(logger_cfg, "group"), fields, "group", GROUP_FIELDS)


def job_experiment(folder: str | Path) -> str | None:
    """The experiment=... a job folder was run with (Hydra's .hydra/hydra.yaml), None when none or unreadable."""
    import yaml  # noqa: PLC0415

    try:
        choices = yaml.safe_load((Path(folder) / HYDRA_FILE).read_text())["hydra"]["runtime"]["choices"]
    except Exception:  # no Hydra folder (a hand-built job, a test): no experiment
        return None
    value = choices.get("experiment")
    return None if value in (None, "null") else str(value)


def sweep_experiment(folders: Sequence[str | Path]) -> str | None:
    """The experiment of a sweep's jobs: the one they share, else their names joined by "+", None when none."""
    names = sorted({e for f in folders if (e := job_experiment(f))})
    return "+".join(names) if names else None


def job_run(
    config: Mapping[str, Any],
    logger_cfg: Mapping[str, Any] | None,
    *,
    experiment: str | None,
    group: str | None,
    job: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """make_tracker's keyword arguments for a job: config (FLAT_KEYS, the tree under CONFIG_TREE, `extra`),
    group, job_type, name and tags. ConfigError when `logger.run_name` has an unknown field."""
    tree = _as_dict(config)
    flat = flat_keys(tree, experiment)
    return {
        "config": {**flat, CONFIG_TREE: tree, **(extra or {})},
        "group": group,
        "job_type": job_type_of(flat),
        "name": run_name(knob(logger_cfg, "run_name"), flat, job),
        "tags": run_tags(flat),
    }


def stable_run_id(kind: str, folder: str | Path) -> str:
    """`<kind>-<hash of the sweep folder's absolute path>`: the one run of that kind a sweep folder has,
    resumed (not duplicated) when the step runs again."""
    digest = hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:_ID_HASH]
    return f"{_ID_BAD.sub('-', kind)}-{digest}"


def predictions_artifact(group: str | None, job: str) -> str:
    """The name of a job's predictions artifact: unique per (sweep group, job folder), the same for the compare
    run that uses it."""
    return artifact_name(
        f"{PREDICTIONS_ARTIFACT}-{group}-{job}" if group else f"{PREDICTIONS_ARTIFACT}-{job}"
    )


def run_id_of(folder: str | Path) -> str | None:
    """The id of the latest W&B run written under a job folder (the newest of its wandb/*run-<time>-<id>
    folders), None when it has none."""
    runs = [
        m for p in (Path(folder) / "wandb").glob("*run-*") if p.is_dir() and (m := _RUN_FOLDER.match(p.name))
    ]
    return max(runs, key=lambda m: m.group("time")).group("id") if runs else None


def artifact_name(name: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.', up to 128 characters (a longer one keeps its
    start and a hash of the whole, so names stay distinct)."""
    clean = _ARTIFACT_BAD.sub("-", name).strip("-") or "artifact"
    if len(clean) <= _ARTIFACT_MAX:
        return clean
    digest = hashlib.sha1(clean.encode()).hexdigest()[:_ID_HASH]
    return f"{clean[: _ARTIFACT_MAX - _ID_HASH - 1]}-{digest}"


def _tags(tags: Sequence[Any]) -> list[str]:
    """Distinct non-empty tags, in order, cut to W&B's length limit."""
    out: list[str] = []
    for t in tags:
        s = str(t)[:_TAG_MAX]
        if s and s not in out:
            out.append(s)
    return out


def _as_dict(cfg: Any) -> dict[str, Any]:
    """A plain, resolved dict from a dict or an OmegaConf DictConfig."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)
