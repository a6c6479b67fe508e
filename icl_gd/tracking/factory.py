"""`make_tracker`: a tracker for one run from the Hydra `logger` node, and how its wandb run is started.

W&B never breaks a job: `logger.name=none` or mode "disabled" give a `NullTracker` without importing wandb; an
online `wandb.init` that fails is retried once offline (and every later run of the process starts offline);
if offline fails too, or `wandb` is missing, the job goes on with a `NullTracker` and a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from icl_gd.errors import ConfigError
from icl_gd.tracking.credentials import resolve_mode
from icl_gd.tracking.naming import DEFAULTS, TRAIN_PREFIX, TRAIN_STEP, _as_dict, _tags
from icl_gd.tracking.offline import _FALLBACK, _drop_superseded
from icl_gd.tracking.protocol import NullTracker, Tracker
from icl_gd.tracking.wandb_tracker import WandbTracker

log = logging.getLogger(__name__)

LOGGER_NAMES = ("wandb", "none")


def make_tracker(
    logger_cfg: Mapping[str, Any] | None,
    *,
    output_dir: str | Path,
    config: Mapping[str, Any],
    group: str | None,
    job_type: str,
    name: str | None = None,
    tags: Sequence[str] | None = None,
    run_id: str | None = None,
) -> Tracker:
    """A tracker for one run, from the Hydra `logger` node (`{name: none}` or `{name: wandb, project: ...}`).

    `config` is what the run's W&B config holds (a dict, or a DictConfig that is resolved here; `job_run` builds
    a job's); `group` the sweep's group (`sweep_group`); `job_type` the method (or "compare"); `tags` are added to
    `logger.tags`. `run_id`: a stable id (`stable_run_id`), resumed when it exists (resume="allow"); an older
    offline run of the same id in the same folder is removed (the new one supersedes it). The run is written
    under `<output_dir>/wandb/`. Raises ConfigError for an unknown `logger.name` or `logger.mode`; never raises
    because of wandb.
    """
    cfg = _logger_node(logger_cfg)
    if cfg is None:  # logger=none
        return NullTracker()
    mode = _wandb_mode(cfg)
    if mode is None:  # mode=disabled
        return NullTracker()

    try:
        import wandb
    except Exception as e:  # a broken install must not stop the job
        log.warning("W&B unavailable (%s: %s); logging to W&B is off for this job", type(e).__name__, e)
        return NullTracker()

    out = Path(output_dir).resolve()
    init_kwargs = dict(
        dir=str(out),
        config=_as_dict(config) if config is not None else {},
        group=group,
        job_type=job_type,
        name=name,
        project=cfg.get("project") or DEFAULTS["project"],
        entity=cfg.get("entity") or None,
        tags=_tags([*(cfg.get("tags") or []), *(tags or [])]),
        reinit="finish_previous",  # several jobs in one process (joblib/ray workers, compare) run one after another
    )
    if run_id is not None:
        init_kwargs.update(id=run_id, resume="allow")
    timeout = float(cfg.get("init_timeout_s") or DEFAULTS["init_timeout_s"])

    run = _start_run(wandb, mode, timeout, init_kwargs, out, run_id)
    if run is None:
        return NullTracker()
    _define_metrics(run)
    tracker = WandbTracker(run, out, cfg)
    log.debug(
        "W&B %s run %s in %s", tracker.mode, getattr(run, "id", "?"), tracker.run_dir
    )  # one sync hint a sweep
    return tracker


def _logger_node(logger_cfg: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The logger node as a plain dict, None for `logger.name=none` (or no node); ConfigError for another name."""
    cfg = _as_dict(logger_cfg) if logger_cfg is not None else {"name": "none"}
    kind = str(cfg.get("name") or "none").lower()
    if kind not in LOGGER_NAMES:
        raise ConfigError(
            f"logger.name={kind!r} is not one of {list(LOGGER_NAMES)}; use logger=wandb or logger=none"
        )
    return None if kind == "none" else cfg


def _wandb_mode(cfg: Mapping[str, Any]) -> str | None:
    """The mode to start wandb in (`resolve_mode`), None when disabled; offline at once when an online init
    failed earlier in this process."""
    mode = resolve_mode(cfg.get("mode"))
    if mode == "disabled":
        log.info("W&B disabled (mode=disabled): nothing is logged to W&B")
        return None
    if mode == "online" and _FALLBACK:
        log.debug("W&B offline: online init failed earlier in this process (%s)", _FALLBACK["reason"])
        mode = "offline"
    return mode


def _start_run(
    wandb: Any, mode: str, timeout: float, init_kwargs: dict[str, Any], out: Path, run_id: str | None
) -> Any | None:
    """`wandb.init` in `mode` under `out` (older offline runs of `run_id` removed first); a failed online init
    is retried offline (`_retry_offline`). None when no run could be started."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if run_id is not None:
            _drop_superseded(out, run_id)
        return wandb.init(mode=mode, settings=_settings(wandb, timeout), **init_kwargs)
    except Exception as e:
        if mode != "online":
            log.warning("W&B init failed (%s: %s); logging to W&B is off for this job", type(e).__name__, e)
            return None
        return _retry_offline(wandb, e, timeout, init_kwargs)


def _retry_offline(wandb: Any, error: Exception, timeout: float, init_kwargs: dict[str, Any]) -> Any | None:
    """After online init failed with `error`: remember it (every later run of the process starts offline) and
    start the run offline. None when that fails too."""
    _FALLBACK["reason"] = f"{type(error).__name__}: {error}"
    log.warning(
        "W&B online init failed (%s: %s); retrying offline, and every later W&B run of this process "
        "starts offline at once (no more waits; upload them later with wandb sync)",
        type(error).__name__,
        error,
    )
    try:
        return wandb.init(mode="offline", settings=_settings(wandb, timeout), **init_kwargs)
    except Exception as e2:
        log.warning("W&B offline init failed too (%s: %s); logging to W&B is off", type(e2).__name__, e2)
        return None


def _settings(wandb: Any, init_timeout: float) -> Any:
    wanted = {
        "init_timeout": init_timeout,
        "console": "off",  # Hydra already keeps the job's log; capturing stdout would duplicate it
        "quiet": True,  # no banners or run summary on stdout
        "silent": True,  # nor wandb's own offline notice: this package logs its errors and the sync hint itself
        "x_disable_stats": True,  # no system-metrics sampler for short jobs
        "_disable_stats": True,  # the same, before wandb 0.19
    }
    fields = getattr(wandb.Settings, "model_fields", None)
    if fields is not None:
        wanted = {k: v for k, v in wanted.items() if k in fields}
    else:
        wanted.pop("x_disable_stats")
    return wandb.Settings(**wanted)


def _define_metrics(run: Any) -> None:
    """train/* curves are drawn against train/step (not wandb's global _step)."""
    try:
        run.define_metric(TRAIN_STEP)
        run.define_metric(f"{TRAIN_PREFIX}*", step_metric=TRAIN_STEP)
    except Exception as e:  # W&B must never break a job
        log.warning("W&B define_metric failed (%s: %s)", type(e).__name__, e)
