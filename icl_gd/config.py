"""The config checks: the allowed values of every knob, checked before any model or data loads, and a job's identity.

The YAML files in conf/ hold the values; the dataclasses in schemas.py say what a value may be. `validate(cfg)`
merges each group onto its schema (so a misspelled key or a wrong type fails with the key's name) and then checks
ranges and choices, raising `ConfigError` with the key, the allowed values and the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import warnings
from dataclasses import fields
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from icl_gd.errors import ConfigError
from icl_gd.labels import raw_label_text
from icl_gd.schemas import (
    AnalysisConfig,
    CollapseConfig,
    DatasetConfig,
    EvalConfig,
    JobConfig,
    ModelConfig,
    StatsConfig,
)
from icl_gd.threads import AUTO as AUTO_THREADS

log = logging.getLogger(__name__)

SAMPLINGS = ("random", "balanced")
DTYPES = ("float32", "float16", "bfloat16", "float64")
DATASET_KINDS = ("classification", "wordpairs")
OVERFLOWS = ("error", "truncate")  # eval.overflow: a prompt longer than the model's context
# conf/hydra/launcher/{joblib,submitit_*,ray}.yaml carry the names of the plugins' own schemas, so Hydra 1.3 checks
# each against its schema and warns, in every process, that this matching is deprecated. The files are complete
# without it (tests/test_launchers.py checks them against the schemas): silence that one warning.
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema", category=UserWarning
)
# Keys that say where a job writes, not what it computes: left out of the job's identity hash.
# `search` is read by method=gd_search through its own keys (conf/method/gd_search.yaml interpolates it), so it is
# in that job's identity there and no other job's: narrowing the search never reruns ICL or zero-shot.
# `other_task` is read only through demo_source=other, which normalize() replaces by the task it names.
NON_IDENTITY_KEYS = (
    "output_dir",
    "logger",
    "rerun",
    "search",
    "allow_failures",
    "other_task",
    "progress",
    "memory_check",
    "threads",
)
OTHER_TASK = "other"  # demo_source=other: the data set's partner in `other_task:`
DEMO_LABELS = ("original", "shuffled")
# Keys added after jobs were run without them: at this value they are left out of the identity, so the jobs of an
# earlier sweep keep their hash (a resumed sweep skips them) and pair with new ones.
ABSENT_DEFAULTS: dict[str, Any] = {"demo_source": None}
# The same for keys of the method group (method.loss_on, method.layer_causal_lr came after gd jobs had run).
ABSENT_METHOD_DEFAULTS: dict[str, Any] = {
    "loss_on": "answer",
    "layer_causal_lr": None,
    "sensitivity": None,
    "fast_step": True,  # the same numbers as the plain loop (methods/fast_step.py): never a new job
}


DIRNAME_MAX = 200  # bytes of a job folder's name; file systems allow 255 per path component
DIRNAME_HASH = 12  # hex digits of the hash that keeps a shortened or rewritten name unique


def job_dirname(overrides: str) -> str:
    """A sweep job's folder name from its overrides: one path component, never too long, stable per job.

    `dataset.path=../../x.jsonl` would otherwise nest folders (or leave the sweep folder) and a long override
    list exceed the file system's limit. A name that had a "/" or was cut gets a hash of the full overrides.
    """
    name = overrides.replace("/", "_")
    if name == overrides and len(name.encode()) <= DIRNAME_MAX:
        return name or "default"
    digest = hashlib.sha256(overrides.encode()).hexdigest()[:DIRNAME_HASH]
    head = name.encode()[: DIRNAME_MAX - DIRNAME_HASH - 1].decode(errors="ignore")
    return f"{head}-{digest}"


def register_resolvers() -> None:
    """`${icl_gd_dirname:...}` (conf/config.yaml's hydra.sweep.subdir); registered once per process."""
    if not OmegaConf.has_resolver("icl_gd_dirname"):
        OmegaConf.register_new_resolver("icl_gd_dirname", job_dirname)
    from icl_gd import folders  # noqa: PLC0415 -- the sweep and job folder names (icl_gd_sweep, icl_gd_jobname)

    folders.register()


register_resolvers()


def nearest(key: str, known: list[str]) -> str:
    """' Did you mean `k`?' for the known key closest to a misspelt one, or '' when none is close."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" Did you mean `{close[0]}`?" if close else ""


def unknown_key_error(where: str, key: str, known: list[str], fix: str) -> ConfigError:
    """The error for a key that no schema knows: its name, the nearest known key, all keys and the fix."""
    path = f"{where}.{key}" if where else key
    return ConfigError(
        f"unknown key `{path}` (added with +{path}=... ?).{nearest(key, known)} "
        f"Keys {'of `' + where + '`' if where else 'at the top level'} are: {', '.join(known)}. {fix}"
    )


def check_top_level(cfg: DictConfig) -> None:
    """Every top-level key is one conf/config.yaml defines: `+order_sed=1` is an error, never silently ignored."""
    known = [f.name for f in fields(JobConfig)]
    for key in cfg:
        if key not in known:
            raise unknown_key_error(
                "", str(key), known, "Drop the `+` and fix the name: a key that exists is set as key=value."
            )


def typed(schema: type, node: DictConfig, group: str) -> DictConfig:
    """Merge `node` onto its dataclass schema: unknown keys, wrong types and unset keys fail naming `group.key`."""
    known = [f.name for f in fields(schema)]
    allowed = ", ".join(known)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", None)
        msg = (e.msg if hasattr(e, "msg") else str(e)).splitlines()[0]
        if "not in" in msg and key is not None and "." not in str(key):
            raise unknown_key_error(
                group, str(key), known, f"Fix the override or the YAML file under conf/{group}/."
            ) from None
        raise ConfigError(
            f"{group}.{key}: {msg}. Keys of `{group}` are: {allowed}. "
            f"Fix the override or the YAML file under conf/{group}/."
        ) from None
    unset = sorted(OmegaConf.missing_keys(merged))
    if unset and group != "dataset":  # the dataset's unset keys get their own message, with an example
        raise ConfigError(
            f"{group}.{unset[0]} is not set: give it in the YAML file under conf/{group}/ or on the command line "
            f"({group}.{unset[0]}=...). Keys of `{group}` are: {allowed}."
        )
    return merged


def require_choice(key: str, value: Any, allowed: tuple) -> None:
    """Fail naming `key` and the allowed values when `value` is not one of them."""
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}.")


def positive(key: str, value: float, fix: str = "") -> None:
    """Fail naming `key` unless `value` > 0; `fix` says what to use instead."""
    if value is None or not value > 0:
        raise ConfigError(f"{key}={value!r} must be > 0.{(' ' + fix) if fix else ''}")


def is_int(value: Any) -> bool:
    """An integer and not a bool (YAML's true/false are ints to Python)."""
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


def check_model(cfg: DictConfig) -> DictConfig:
    model = typed(ModelConfig, cfg.model, "model")
    require_choice("model.dtype", model.dtype, DTYPES)
    if not (model.device in ("cpu", "auto") or model.device.startswith(("cuda", "mps"))):
        raise ConfigError(f"model.device={model.device!r}: use cpu, auto, cuda or cuda:N.")
    _check_device(model.device)
    if model.path is None and model.package is None and not model.random_init:
        raise ConfigError(f"model={model.name} names no weights: set model.path=<local folder or hub id>.")
    return model


def normalize(cfg: DictConfig) -> None:
    """Bring `dataset.label_words` keys to the raw labels' text (and `demo_source=<its own dataset>` to null), in
    place, before the job is hashed or checked.

    `+dataset.label_words={0: objective, 1: subjective}` gives int keys (Hydra's grammar cannot quote them); a
    file's labels "0"/"1" are text. Integer and boolean keys stand for their text; a key given in both forms
    keeps the word given last, with a warning.
    """
    ds = cfg.get("dataset")
    if not isinstance(ds, DictConfig):
        return
    if cfg.get("demo_source") == OTHER_TASK:
        partners = cfg.get("other_task") or {}
        if ds.get("name") not in partners:
            raise ConfigError(
                f"demo_source={OTHER_TASK} takes dataset={ds.get('name')}'s partner from other_task, which names "
                f"none (it has: {', '.join(partners) or 'nothing'}). Add other_task.{ds.get('name')}=<a data set with "
                "the same text fields>, or give demo_source=<that data set> directly."
            )
        cfg.demo_source = partners[ds.get("name")]  # the job's identity holds the task, not the word "other"
    if cfg.get("demo_source") is not None and cfg.get("demo_source") == ds.get("name"):
        cfg.demo_source = None  # demos from the job's own task are no control: the plain job, one identity
    if OmegaConf.is_missing(ds, "label_words"):
        return
    words = ds.get("label_words")
    if not isinstance(words, DictConfig) or all(isinstance(k, str) for k in words):
        return
    out: dict[str, Any] = {}
    for k, v in words.items_ex(resolve=False):
        text = raw_label_text(k)
        if text in out and out[text] != v:
            log.warning(
                "dataset.label_words gives label %r twice (%r, then %r): using %r", text, out[text], v, v
            )
        out[text] = v
    with open_dict(ds):
        ds.label_words = out


def _check_label_words(cfg: DictConfig, dataset: DictConfig) -> None:
    if OmegaConf.is_missing(dataset, "label_words"):  # ??? in the YAML: the same as none given
        dataset.label_words = None
    if dataset.kind == "classification" and not dataset.label_words:
        raise ConfigError(
            f"dataset.label_words is empty for dataset={dataset.name}: give a map from each raw label to the word "
            "the model should say, e.g. dataset.label_words='{0: negative, 1: positive}'."
        )
    raw_words = (
        {} if OmegaConf.is_missing(cfg.dataset, "label_words") else cfg.dataset.get("label_words") or {}
    )
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
        if len(words) < 2:
            raise ConfigError(
                f"dataset.label_words={dict(dataset.label_words)} has a single label: a classification needs at "
                "least two (with one, every answer is right). Give each label of the data set its word."
            )


def check_dataset(cfg: DictConfig) -> DictConfig:
    """Types and values of the dataset group (the template is parsed by data/, see runner.validate)."""
    dataset = typed(DatasetConfig, cfg.dataset, "dataset")
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
    other = sorted(OmegaConf.missing_keys(dataset) - {"label_words"})  # label_words has its own message
    if other:
        raise ConfigError(
            f"dataset.{other[0]} is not set: give it in its conf/dataset/ file or on the command line."
        )
    require_choice("dataset.kind", dataset.kind, DATASET_KINDS)
    _check_label_words(cfg, dataset)
    if not 0 < dataset.test_fraction < 1:
        raise ConfigError(f"dataset.test_fraction={dataset.test_fraction} must be in (0, 1).")
    return dataset


def check_job(cfg: DictConfig, dataset: DictConfig) -> None:
    """The top-level knobs (seed, demos, order, sampling), eval and analysis; the method is checked by its class."""
    if not is_int(cfg.get("seed")):
        raise ConfigError(
            f"seed={cfg.get('seed')!r} must be an integer (it fixes demos, queries, order, training)."
        )
    if cfg.get("order_seed") is not None and not is_int(cfg.order_seed):
        raise ConfigError(f"order_seed={cfg.order_seed!r} must be null (the sampled order) or an integer.")
    if not is_int(cfg.demos) or cfg.demos < 0:
        raise ConfigError(f"demos={cfg.demos!r} must be an integer >= 0 (the number of demonstrations).")
    require_choice("demo_sampling", cfg.demo_sampling, SAMPLINGS)
    require_choice("demo_labels", cfg.get("demo_labels", "original"), DEMO_LABELS)
    if cfg.demo_sampling == "balanced" and dataset.kind != "classification":
        raise ConfigError(
            "demo_sampling=balanced needs a classification dataset (labels to balance); use random."
        )
    n_threads = cfg.get("threads", AUTO_THREADS)
    if n_threads != AUTO_THREADS and (not is_int(n_threads) or int(n_threads) < 1):
        raise ConfigError(
            f"threads={n_threads!r} must be auto (the cores shared among the jobs that run at once) or an "
            "integer >= 1 (torch threads per job)."
        )
    ev = typed(EvalConfig, cfg.eval, "eval")
    for key in ("n_queries", "top_k", "batch_size"):
        if int(ev[key]) < 1:
            raise ConfigError(f"eval.{key}={ev[key]} must be >= 1.")
    require_choice("eval.overflow", ev.overflow, OVERFLOWS)
    if int(ev.n_select) < 0:
        raise ConfigError(f"eval.n_select={ev.n_select} must be >= 0 (0 = no selection queries).")
    st = typed(StatsConfig, cfg.stats, "stats")
    if int(st.n_boot) < 100:
        raise ConfigError(
            f"stats.n_boot={st.n_boot} is too few replicates for an interval: use >= 100 (e.g. 2000)."
        )
    if not 0 < st.level < 1:
        raise ConfigError(f"stats.level={st.level} must be in (0, 1), e.g. 0.95.")
    if cfg.get("collapse") is not None:
        co = typed(CollapseConfig, cfg.collapse, "collapse")
        if not 0 < co.entropy_fraction <= 1:
            raise ConfigError(
                f"collapse.entropy_fraction={co.entropy_fraction} must be in (0, 1], e.g. 0.95."
            )
        if not co.loss_rise > 1:
            raise ConfigError(
                f"collapse.loss_rise={co.loss_rise} must be > 1 (a rise over the start), e.g. 2."
            )
    if cfg.get("analysis") is not None:
        an = typed(AnalysisConfig, cfg.analysis, "analysis")
        for t in an.sparsity_thresholds:
            positive("analysis.sparsity_thresholds", t, "Use thresholds such as [1e-2, 1e-4, 1e-6].")


def check_groups(cfg: DictConfig) -> None:
    """Only known top-level keys, and each of model, dataset and method is a chosen group."""
    check_top_level(cfg)
    for group in ("model", "dataset", "method"):
        if group not in cfg or not isinstance(cfg[group], DictConfig):
            raise ConfigError(
                f"config has no `{group}` group: pick one, e.g. {group}=<option> (see conf/{group}/)."
            )


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain containers with every interpolation resolved; one that cannot be is a ConfigError."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except InterpolationResolutionError as e:
        key = getattr(e, "full_key", "") or "?"
        raise ConfigError(
            f"{key}: {str(e.msg).splitlines()[0]}. An environment variable must be set (export NAME=...) or "
            "given a default (${oc.env:NAME,default}); a literal ${...} in a value (a template) is written "
            "\\${...}."
        ) from None


def identity(cfg: DictConfig | dict) -> dict[str, Any]:
    """What a job computes: the resolved config minus where it writes and how it logs."""
    d = resolved(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    if isinstance(d.get("method"), dict):
        d["method"] = {
            k: v
            for k, v in d["method"].items()
            if not (k in ABSENT_METHOD_DEFAULTS and v == ABSENT_METHOD_DEFAULTS[k])
        }
    return {
        k: v
        for k, v in d.items()
        if k not in NON_IDENTITY_KEYS and k != "hydra" and ABSENT_DEFAULTS.get(k, MISSING) != v
    }


def config_hash(cfg: DictConfig | dict) -> str:
    """A stable hash of `identity(cfg)`: two jobs with the same hash compute the same thing."""
    blob = json.dumps(identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
