"""Weights & Biases tracking: the one package that imports `wandb` (lazily, inside functions).

The files a job writes are the record; W&B mirrors them. So W&B never breaks a job (DESIGN.md, "Conventions"):
- `logger.name=none` gives a `NullTracker` (no-ops, no files);
- `logger.mode` null means auto: "online" when an API key is available (env `WANDB_API_KEY`, an identity
  token file, or a netrc entry for the W&B host), else "offline"; an explicit env `WANDB_MODE` beats auto and
  a `mode` in the config beats both. "disabled" gives a `NullTracker` without importing wandb;
- an online `wandb.init` that fails (no network, bad key, timeout) is retried once offline, so the local files
  still get written, and every later run of the same process starts offline at once (an unreachable server
  costs one `init_timeout_s` per process, said once); if offline fails too, or `wandb` is missing, the tracker
  degrades to no-ops with a warning;
- any later error in a log call is caught and logged as a warning; after `_MAX_FAILURES` of them the tracker
  stops calling wandb (but still finishes the run);
- the `wandb sync` command that uploads offline runs is logged once: per run for a single job, once per sweep
  folder (every run of the sweep) for a multirun (`sync_hint`).

What a run is called and holds is decided here, so every run of a sweep reads alike on a dashboard (README, "W&B"):
- one metric namespace: the same summary keys for every method (`accuracy`, `label_accuracy`, ...); training
  curves are `train/loss` against `train/step` (`define_metric`);
- flat config keys (`FLAT_KEYS`: method, method_label, dataset, model, demos, seed, order_seed, demo_labels,
  experiment) beside the full resolved tree under `cfg`;
- the name from `logger.run_name`, the group from `logger.group` (the experiment, or "adhoc", and the sweep's
  start time), tags (experiment, dataset, method, model), job_type = the method (`icl_order` for the ICL job of
  another demo order: the noise floor);
- the sweep steps (`compare`, `report`) get a stable id from the sweep folder (`stable_run_id`) and resume it.

Offline runs land in `<output_dir>/wandb/offline-run-<time>-<id>/` (online: `run-<time>-<id>`), whose
`run-<id>.wandb` file holds everything logged (history, summary, config, group, job type); wandb 0.31 writes
`files/config.yaml` and `files/wandb-summary.json` only for online runs, media (tables, images) under `files/media`.

The modules, one job each (this file only re-exports them, so `from icl_gd.tracking import X` is the API):
- `protocol`: the `Tracker` protocol and `NullTracker`;
- `wandb_tracker`: `WandbTracker`, a live run whose every call catches its own errors;
- `factory`: `make_tracker`, from the `logger` node to a started run;
- `credentials`: the mode (`resolve_mode`), API key lookup, the default entity;
- `naming`: run names, groups, tags, flat keys, stable ids, artifact names (no wandb);
- `offline`: the process-wide offline fallback, sync hints, superseded offline runs.
"""

from icl_gd.tracking.credentials import MODES, default_entity, has_api_key, resolve_mode
from icl_gd.tracking.factory import LOGGER_NAMES, make_tracker
from icl_gd.tracking.naming import (
    ADHOC,
    CONFIG_TREE,
    DEFAULTS,
    FLAT_KEYS,
    GROUP_FIELDS,
    HYDRA_FILE,
    NAME_FIELDS,
    ORDER_SUFFIX,
    ORDER_TAG,
    PREDICTIONS_ARTIFACT,
    PROB_RANGE,
    SHUFFLED_TAG,
    SWEEP_FILE,
    TRAIN_PREFIX,
    TRAIN_STEP,
    artifact_name,
    flat_keys,
    job_experiment,
    job_run,
    job_type_of,
    knob,
    predictions_artifact,
    run_id_of,
    run_name,
    run_tags,
    stable_run_id,
    sweep_experiment,
    sweep_group,
    sweep_label,
)
from icl_gd.tracking.offline import reset_process_state, sync_hint
from icl_gd.tracking.protocol import NullTracker, Tracker
from icl_gd.tracking.wandb_tracker import _MAX_FAILURES as _MAX_FAILURES
from icl_gd.tracking.wandb_tracker import WandbTracker

__all__ = [
    "ADHOC",
    "CONFIG_TREE",
    "DEFAULTS",
    "FLAT_KEYS",
    "GROUP_FIELDS",
    "HYDRA_FILE",
    "LOGGER_NAMES",
    "MODES",
    "NAME_FIELDS",
    "ORDER_SUFFIX",
    "ORDER_TAG",
    "PREDICTIONS_ARTIFACT",
    "PROB_RANGE",
    "SHUFFLED_TAG",
    "SWEEP_FILE",
    "TRAIN_PREFIX",
    "TRAIN_STEP",
    "NullTracker",
    "Tracker",
    "WandbTracker",
    "artifact_name",
    "default_entity",
    "flat_keys",
    "has_api_key",
    "job_experiment",
    "job_run",
    "job_type_of",
    "knob",
    "make_tracker",
    "predictions_artifact",
    "reset_process_state",
    "resolve_mode",
    "run_id_of",
    "run_name",
    "run_tags",
    "stable_run_id",
    "sweep_experiment",
    "sweep_group",
    "sweep_label",
    "sync_hint",
]
