"""Weights & Biases tracking: the one module that imports `wandb` (lazily, inside functions).

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
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import netrc
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from icl_gd.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

LOGGER_NAMES = ("wandb", "none")
MODES = ("online", "offline", "disabled")
_ENV_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # old spellings wandb still accepts
# wandb's default server and the same one under its older name (wandb >= 0.31 defaults to the Forge address and
# reads a netrc entry for either)
_DEFAULT_HOSTS = {"api.forge.coreweave.com", "api.wandb.ai"}
_MAX_FAILURES = 3

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
SWEEP_FILE = "multirun.yaml"  # what Hydra writes at the top of a sweep folder
HYDRA_FILE = Path(".hydra") / "hydra.yaml"  # what Hydra writes in each job folder (runtime.choices)

# Process-wide state: the reason online init failed once (then every later run starts offline), and the folders
# whose sync hint was said.
_FALLBACK: dict[str, str] = {}
_HINTED: set[Path] = set()


@runtime_checkable
class Tracker(Protocol):
    """What the runner and the sweep steps log through; `make_tracker` returns one."""

    run_dir: Path | None  # the wandb run folder (offline-run-... / run-...), None when nothing is written

    def log(self, data: dict[str, Any], step: int | None = None) -> None: ...
    def summary(self, data: dict[str, Any]) -> None: ...
    def log_table(self, key: str, df: pd.DataFrame) -> None: ...
    def log_histogram(
        self, key: str, values: Sequence[float], bounds: tuple[float, float] | None = None
    ) -> None: ...
    def log_image(self, key: str, path: str | Path) -> None: ...
    def log_line_series(
        self,
        key: str,
        xs: Sequence[Sequence[float]],
        ys: Sequence[Sequence[float]],
        keys: Sequence[str],
        title: str,
        xname: str,
    ) -> None: ...
    def log_artifact(self, path: str | Path | Sequence[str | Path], name: str, type: str) -> None: ...
    def use_artifact(self, name: str, type: str) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


class _ContextManager:
    """`with make_tracker(...) as t:` finishes the run, with exit code 1 when the block raised."""

    def finish(self, exit_code: int = 0) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


class NullTracker(_ContextManager):
    """`logger=none` (or W&B disabled or broken): every call is a no-op and no file is written."""

    run_dir: Path | None = None
    mode: str | None = None
    run_id: str | None = None

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        pass

    def summary(self, data: dict[str, Any]) -> None:
        pass

    def log_table(self, key: str, df: pd.DataFrame) -> None:
        pass

    def log_histogram(
        self, key: str, values: Sequence[float], bounds: tuple[float, float] | None = None
    ) -> None:
        pass

    def log_image(self, key: str, path: str | Path) -> None:
        pass

    def log_line_series(
        self,
        key: str,
        xs: Sequence[Sequence[float]],
        ys: Sequence[Sequence[float]],
        keys: Sequence[str],
        title: str,
        xname: str,
    ) -> None:
        pass

    def log_artifact(self, path: str | Path | Sequence[str | Path], name: str, type: str) -> None:
        pass

    def use_artifact(self, name: str, type: str) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbTracker(_ContextManager):
    """A live wandb run. Every call catches its own errors, so tracking can never fail the job."""

    def __init__(
        self, run: Any, output_dir: Path | None = None, knobs: Mapping[str, Any] | None = None
    ) -> None:
        self._run = run
        self._failures = 0
        self.mode: str | None = "offline" if run.offline else "online"
        self.run_dir: Path | None = _run_dir(run)
        self.run_id: str | None = getattr(run, "id", None)
        self.output_dir = output_dir
        knobs = {**DEFAULTS, **(knobs or {})}
        self._bins = int(knobs["hist_bins"])
        self._max_rows = int(knobs["max_table_rows"])

    @property
    def run(self) -> Any:
        """The underlying `wandb.Run` (None once finished or given up on), for what this class lacks."""
        return self._run

    def _call(self, what: str, fn, *args, **kwargs) -> None:
        if self._run is None or self._failures >= _MAX_FAILURES:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # W&B must never break a job
            self._failures += 1
            log.warning("W&B %s failed (%s: %s); the job goes on", what, type(e).__name__, e)
            if self._failures == _MAX_FAILURES:
                log.warning("W&B failed %d times: no more logging to W&B in this run", _MAX_FAILURES)

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        self._call("log", lambda: self._run.log(dict(data), step=step))

    def summary(self, data: dict[str, Any]) -> None:
        self._call("summary", lambda: self._run.summary.update(dict(data)))

    def log_table(self, key: str, df: pd.DataFrame) -> None:
        """A W&B Table of `df`: list and array cells stay lists (top-K tokens, probabilities); at most
        `logger.max_table_rows` rows (the rest are in the job's files, as a warning says)."""

        def go() -> None:
            import wandb

            frame = df
            if len(frame) > self._max_rows:
                log.warning(
                    "W&B table %r: %d rows, logging the first %d (logger.max_table_rows); the files hold all",
                    key,
                    len(frame),
                    self._max_rows,
                )
                frame = frame.head(self._max_rows)
            self._run.log({key: wandb.Table(dataframe=_table_frame(frame))})

        self._call(f"log_table({key!r})", go)

    def log_histogram(
        self, key: str, values: Sequence[float], bounds: tuple[float, float] | None = None
    ) -> None:
        """A histogram of the finite values; with `bounds`, `logger.hist_bins` fixed bins on them (so the
        histograms of every run line up, e.g. PROB_RANGE for probabilities)."""

        def go() -> None:
            import numpy as np
            import wandb

            finite = [float(v) for v in _flat(values) if math.isfinite(float(v))]  # np.histogram rejects NaN
            if not finite:
                log.debug("W&B histogram %r skipped: no finite values", key)
                return
            if bounds is None:
                hist = wandb.Histogram(finite)
            else:
                hist = wandb.Histogram(np_histogram=np.histogram(finite, bins=self._bins, range=bounds))
            self._run.log({key: hist})

        self._call(f"log_histogram({key!r})", go)

    def log_image(self, key: str, path: str | Path) -> None:
        def go() -> None:
            import wandb

            self._run.log({key: wandb.Image(str(path))})

        self._call(f"log_image({key!r})", go)

    def log_line_series(
        self,
        key: str,
        xs: Sequence[Sequence[float]],
        ys: Sequence[Sequence[float]],
        keys: Sequence[str],
        title: str,
        xname: str,
    ) -> None:
        """A W&B line plot (`wandb.plot.line_series`, redrawn by the dashboard): one line per `keys` entry.
        Its data is the Table `<key>_table` of the run's summary."""

        def go() -> None:
            import wandb

            xs_, ys_ = [list(map(float, x)) for x in xs], [list(map(float, y)) for y in ys]
            chart = wandb.plot.line_series(xs=xs_, ys=ys_, keys=list(keys), title=title, xname=xname)
            self._run.log({key: chart})

        self._call(f"log_line_series({key!r})", go)

    def log_artifact(self, path: str | Path | Sequence[str | Path], name: str, type: str) -> None:
        """One artifact of the file(s) or folder at `path`, referenced in place (nothing is copied)."""

        def go() -> None:
            import wandb

            paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
            art = wandb.Artifact(artifact_name(name), type=type)
            # "immutable": reference the job's own files instead of copying them into wandb's staging
            # folder (predictions with full distributions are large); the output folder is not rewritten.
            for p in paths:
                if p.is_dir():
                    art.add_dir(str(p), policy="immutable")
                else:
                    art.add_file(str(p), policy="immutable")
            self._run.log_artifact(art)

        self._call(f"log_artifact({name!r})", go)

    def use_artifact(self, name: str, type: str) -> None:
        """Declare that this run read the latest version of artifact `name` (lineage on the W&B server). wandb
        has no lineage offline (use_artifact raises there): an offline run names its inputs in its config."""
        if self.mode != "online":
            return
        self._call(
            f"use_artifact({name!r})",
            lambda: self._run.use_artifact(f"{artifact_name(name)}:latest", type=type),
        )

    def finish(self, exit_code: int = 0) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as e:
            log.warning("W&B finish failed (%s: %s); the job's own files are complete", type(e).__name__, e)
        if self.mode == "offline" and self.run_dir is not None:
            _after_offline_run(self.run_dir, self.output_dir)


# ---------------------------------------------------------------------------------------------------------
# Construction


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
    cfg = _as_dict(logger_cfg) if logger_cfg is not None else {"name": "none"}
    kind = str(cfg.get("name") or "none").lower()
    if kind not in LOGGER_NAMES:
        raise ConfigError(
            f"logger.name={kind!r} is not one of {list(LOGGER_NAMES)}; use logger=wandb or logger=none"
        )
    if kind == "none":
        return NullTracker()

    mode = resolve_mode(cfg.get("mode"))
    if mode == "disabled":
        log.info("W&B disabled (mode=disabled): nothing is logged to W&B")
        return NullTracker()
    if mode == "online" and _FALLBACK:
        log.debug("W&B offline: online init failed earlier in this process (%s)", _FALLBACK["reason"])
        mode = "offline"

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

    try:
        out.mkdir(parents=True, exist_ok=True)
        if run_id is not None:
            _drop_superseded(out, run_id)
        run = wandb.init(mode=mode, settings=_settings(wandb, timeout), **init_kwargs)
    except Exception as e:
        if mode != "online":
            log.warning("W&B init failed (%s: %s); logging to W&B is off for this job", type(e).__name__, e)
            return NullTracker()
        _FALLBACK["reason"] = f"{type(e).__name__}: {e}"
        log.warning(
            "W&B online init failed (%s: %s); retrying offline, and every later W&B run of this process "
            "starts offline at once (no more waits; upload them later with wandb sync)",
            type(e).__name__,
            e,
        )
        try:
            run = wandb.init(mode="offline", settings=_settings(wandb, timeout), **init_kwargs)
        except Exception as e2:
            log.warning("W&B offline init failed too (%s: %s); logging to W&B is off", type(e2).__name__, e2)
            return NullTracker()
    _define_metrics(run)
    tracker = WandbTracker(run, out, cfg)
    log.info("W&B %s run %s in %s", tracker.mode, getattr(run, "id", "?"), tracker.run_dir)
    return tracker


def resolve_mode(cfg_mode: str | None) -> str:
    """The wandb mode to use: the config's, else env WANDB_MODE, else online iff an API key is available."""
    if cfg_mode is not None:
        mode = str(cfg_mode).lower()
        if mode not in MODES:
            raise ConfigError(f"logger.mode={cfg_mode!r} is not one of {list(MODES)} or null (auto)")
        return mode
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    env_mode = _ENV_MODE_ALIASES.get(env_mode, env_mode)
    if env_mode in MODES:
        return env_mode
    if env_mode:
        log.warning("ignoring WANDB_MODE=%r (not one of %s)", os.environ["WANDB_MODE"], list(MODES))
    return "online" if has_api_key() else "offline"


def has_api_key() -> bool:
    """Whether wandb would find credentials: env WANDB_API_KEY / WANDB_IDENTITY_TOKEN_FILE, or a netrc entry.

    Reads files only (no network) and never fails: an unreadable netrc counts as no key.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    hosts = {urlsplit(os.environ.get("WANDB_BASE_URL", "")).netloc} - {""}
    if not hosts or hosts & _DEFAULT_HOSTS:
        hosts |= _DEFAULT_HOSTS
    for path in _netrc_paths():
        try:
            rc = netrc.netrc(str(path))
        except Exception:  # FileNotFoundError, parse or permission errors
            continue
        if any((creds := rc.authenticators(h)) and creds[2] for h in sorted(hosts)):
            return True
    return False


def default_entity() -> str | None:
    """The logged-in user's default W&B entity (asks the server), None when it cannot be had."""
    try:
        import wandb

        return wandb.Api(timeout=DEFAULTS["init_timeout_s"]).default_entity
    except Exception as e:  # no key, no network
        log.warning("W&B: no default entity (%s: %s)", type(e).__name__, e)
        return None


def reset_process_state() -> None:
    """Forget the offline fallback and the sync hints said (a new sweep in the same process, or a test)."""
    _FALLBACK.clear()
    _HINTED.clear()


# ---------------------------------------------------------------------------------------------------------
# What a run is called: names, groups, tags, flat keys (pure functions of configs and folders; no wandb)


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


def sync_hint(folder: str | Path) -> None:
    """Log, once per process, how to upload the offline runs of a sweep folder (its own and its jobs')."""
    root = Path(folder).resolve()
    patterns = [
        str(root / p / "offline-run-*") for p in ("wandb", "*/wandb") if any(root.glob(f"{p}/offline-run-*"))
    ]
    if not patterns or root in _HINTED:
        return
    _HINTED.add(root)
    log.info("W&B offline runs of %s; upload them with: wandb sync %s", root, " ".join(patterns))


# ---------------------------------------------------------------------------------------------------------
# Helpers


def _after_offline_run(run_dir: Path, output_dir: Path | None) -> None:
    """The sync hint of a finished offline run: the sweep's (once) for a sweep step, none for a job of a sweep
    (the sweep's hint comes at its end), the run's own for a single job."""
    if output_dir is not None and (output_dir / SWEEP_FILE).exists():
        sync_hint(output_dir)
    elif output_dir is not None and (output_dir.parent / SWEEP_FILE).exists():
        return
    else:
        log.info("W&B offline run saved in %s; upload with: wandb sync %s", run_dir, run_dir)


def _drop_superseded(out: Path, run_id: str) -> None:
    """Remove older offline runs of `run_id` under out/wandb: the run about to start replaces them."""
    for old in (out / "wandb").glob(f"offline-run-*-{run_id}"):
        shutil.rmtree(old, ignore_errors=True)
        log.info("W&B: removed %s, superseded by this run of the same id", old)


def _define_metrics(run: Any) -> None:
    """train/* curves are drawn against train/step (not wandb's global _step)."""
    try:
        run.define_metric(TRAIN_STEP)
        run.define_metric(f"{TRAIN_PREFIX}*", step_metric=TRAIN_STEP)
    except Exception as e:  # W&B must never break a job
        log.warning("W&B define_metric failed (%s: %s)", type(e).__name__, e)


def _tags(tags: Sequence[Any]) -> list[str]:
    """Distinct non-empty tags, in order, cut to W&B's length limit."""
    out: list[str] = []
    for t in tags:
        s = str(t)[:_TAG_MAX]
        if s and s not in out:
            out.append(s)
    return out


def _netrc_paths() -> list[Path]:
    # the order wandb itself uses: $NETRC, then ~/.netrc, then ~/_netrc
    if env := os.environ.get("NETRC"):
        return [Path(env).expanduser()]
    return [Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()]


def _settings(wandb: Any, init_timeout: float) -> Any:
    wanted = {
        "init_timeout": init_timeout,
        "console": "off",  # Hydra already keeps the job's log; capturing stdout would duplicate it
        "quiet": True,  # no banners or run summary on stdout
        "silent": True,  # nor wandb's own offline notice: this module logs its errors and the sync hint itself
        "x_disable_stats": True,  # no system-metrics sampler for short jobs
        "_disable_stats": True,  # the same, before wandb 0.19
    }
    fields = getattr(wandb.Settings, "model_fields", None)
    if fields is not None:
        wanted = {k: v for k, v in wanted.items() if k in fields}
    else:
        wanted.pop("x_disable_stats")
    return wandb.Settings(**wanted)


def _run_dir(run: Any) -> Path | None:
    try:
        return Path(run.settings.sync_dir).resolve()
    except Exception:
        try:
            return Path(run.dir).resolve().parent
        except Exception:
            return None


def _as_dict(cfg: Any) -> dict[str, Any]:
    """A plain, resolved dict from a dict or an OmegaConf DictConfig."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def _flat(values: Any) -> list[Any]:
    if hasattr(values, "reshape") and hasattr(values, "tolist"):  # torch tensor or numpy array
        return list(values.reshape(-1).tolist())
    return list(values)


_SCALARS = (str, int, float, bool, type(None))


def _table_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose cells W&B tables accept: scalars kept, lists and arrays as lists (W&B list columns), numpy
    scalars as Python ones, anything else (dicts, bytes) as JSON text."""

    def cell(v: Any) -> Any:
        if isinstance(v, _SCALARS):
            return v
        if getattr(v, "ndim", None) == 0 and hasattr(v, "item"):  # numpy scalar, 0-d tensor
            return v.item()
        if hasattr(v, "tolist"):  # numpy array, tensor
            v = v.tolist()
        if isinstance(v, (list, tuple)) and all(isinstance(x, _SCALARS) for x in v):
            return list(v)
        return json.dumps(v, default=str)

    out = df.copy()
    out.columns = [str(c) for c in out.columns]
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(cell)
    return out


_ARTIFACT_BAD = re.compile(r"[^A-Za-z0-9._-]+")
_ARTIFACT_MAX = 128  # W&B's limit on an artifact name


def artifact_name(name: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.', up to 128 characters (a longer one keeps its
    start and a hash of the whole, so names stay distinct)."""
    clean = _ARTIFACT_BAD.sub("-", name).strip("-") or "artifact"
    if len(clean) <= _ARTIFACT_MAX:
        return clean
    digest = hashlib.sha1(clean.encode()).hexdigest()[:_ID_HASH]
    return f"{clean[: _ARTIFACT_MAX - _ID_HASH - 1]}-{digest}"
