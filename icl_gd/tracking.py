"""Weights & Biases tracking: the one module that imports `wandb` (lazily, inside functions).

The files a job writes are the record; W&B mirrors them. So W&B never breaks a job (DESIGN.md, "Conventions"):
- `logger.name=none` gives a `NullTracker` (no-ops, no files);
- `logger.mode` null means auto: "online" when an API key is available (env `WANDB_API_KEY`, an identity
  token file, or a netrc entry for the W&B host), else "offline"; an explicit env `WANDB_MODE` beats auto and
  a `mode` in the config beats both. "disabled" gives a `NullTracker` without importing wandb;
- an online `wandb.init` that fails (no network, bad key, timeout) is retried once offline, so the local files
  still get written; if that fails too, or `wandb` is missing, the tracker degrades to no-ops with a warning;
- any later error in a log call is caught and logged as a warning; after `_MAX_FAILURES` of them the tracker
  stops calling wandb (but still finishes the run);
- an offline run logs where its folder is and the `wandb sync` command that uploads it.

Keys are passed through as given (callers use slash-prefixed keys such as "icl/accuracy").
Offline runs land in `<output_dir>/wandb/offline-run-<time>-<id>/` (online: `run-<time>-<id>`), whose
`run-<id>.wandb` file holds everything logged (history, summary, config, group, job type); wandb 0.31 writes
`files/config.yaml` and `files/wandb-summary.json` only for online runs, media (tables, images) under `files/media`.
"""

from __future__ import annotations

import logging
import math
import netrc
import os
import re
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


@runtime_checkable
class Tracker(Protocol):
    """What the runner and `compare` log through; `make_tracker` returns one."""

    run_dir: Path | None  # the wandb run folder (offline-run-... / run-...), None when nothing is written

    def log(self, data: dict[str, float], step: int | None = None) -> None: ...
    def summary(self, data: dict[str, Any]) -> None: ...
    def log_table(self, key: str, df: pd.DataFrame) -> None: ...
    def log_histogram(self, key: str, values: Sequence[float]) -> None: ...
    def log_image(self, key: str, path: str | Path) -> None: ...
    def log_artifact(self, path: str | Path, name: str, type: str) -> None: ...
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

    def log(self, data: dict[str, float], step: int | None = None) -> None:
        pass

    def summary(self, data: dict[str, Any]) -> None:
        pass

    def log_table(self, key: str, df: pd.DataFrame) -> None:
        pass

    def log_histogram(self, key: str, values: Sequence[float]) -> None:
        pass

    def log_image(self, key: str, path: str | Path) -> None:
        pass

    def log_artifact(self, path: str | Path, name: str, type: str) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbTracker(_ContextManager):
    """A live wandb run. Every call catches its own errors, so tracking can never fail the job."""

    def __init__(self, run: Any) -> None:
        self._run = run
        self._failures = 0
        self.mode: str | None = "offline" if run.offline else "online"
        self.run_dir: Path | None = _run_dir(run)

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

    def log(self, data: dict[str, float], step: int | None = None) -> None:
        self._call("log", lambda: self._run.log(dict(data), step=step))

    def summary(self, data: dict[str, Any]) -> None:
        self._call("summary", lambda: self._run.summary.update(dict(data)))

    def log_table(self, key: str, df: pd.DataFrame) -> None:
        def go() -> None:
            import wandb

            self._run.log({key: wandb.Table(dataframe=_scalar_frame(df))})

        self._call(f"log_table({key!r})", go)

    def log_histogram(self, key: str, values: Sequence[float]) -> None:
        def go() -> None:
            import wandb

            finite = [float(v) for v in _flat(values) if math.isfinite(float(v))]  # np.histogram rejects NaN
            if not finite:
                log.debug("W&B histogram %r skipped: no finite values", key)
                return
            self._run.log({key: wandb.Histogram(finite)})

        self._call(f"log_histogram({key!r})", go)

    def log_image(self, key: str, path: str | Path) -> None:
        def go() -> None:
            import wandb

            self._run.log({key: wandb.Image(str(path))})

        self._call(f"log_image({key!r})", go)

    def log_artifact(self, path: str | Path, name: str, type: str) -> None:
        def go() -> None:
            import wandb

            p = Path(path)
            art = wandb.Artifact(_artifact_name(name), type=type)
            # "immutable": reference the job's own files instead of copying them into wandb's staging
            # folder (predictions with full distributions are large); the output folder is not rewritten.
            if p.is_dir():
                art.add_dir(str(p), policy="immutable")
            else:
                art.add_file(str(p), policy="immutable")
            self._run.log_artifact(art)

        self._call(f"log_artifact({name!r})", go)

    def finish(self, exit_code: int = 0) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as e:
            log.warning("W&B finish failed (%s: %s); the job's own files are complete", type(e).__name__, e)
        if self.mode == "offline" and self.run_dir is not None:
            log.info("W&B offline run saved in %s; upload with: wandb sync %s", self.run_dir, self.run_dir)


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
) -> Tracker:
    """A tracker for one job, from the Hydra `logger` node (`{name: none}` or `{name: wandb, project: ...}`).

    `config` is the resolved config (a dict, or a DictConfig that is resolved here); `group` the sweep;
    `job_type` the method (or "compare"). The run is written under `<output_dir>/wandb/`.
    Raises ConfigError for an unknown `logger.name` or `logger.mode`; never raises because of wandb.
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
        project=cfg.get("project") or "icl-gd",
        entity=cfg.get("entity") or None,
        tags=[str(t) for t in (cfg.get("tags") or [])],
        reinit="finish_previous",  # several jobs in one process (joblib/ray workers, compare) run one after another
    )
    timeout = float(cfg.get("init_timeout_s") or 30)

    try:
        out.mkdir(parents=True, exist_ok=True)
        run = wandb.init(mode=mode, settings=_settings(wandb, timeout), **init_kwargs)
    except Exception as e:
        if mode != "online":
            log.warning("W&B init failed (%s: %s); logging to W&B is off for this job", type(e).__name__, e)
            return NullTracker()
        log.warning("W&B online init failed (%s: %s); retrying offline", type(e).__name__, e)
        try:
            run = wandb.init(mode="offline", settings=_settings(wandb, timeout), **init_kwargs)
        except Exception as e2:
            log.warning("W&B offline init failed too (%s: %s); logging to W&B is off", type(e2).__name__, e2)
            return NullTracker()
    tracker = WandbTracker(run)
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


# ---------------------------------------------------------------------------------------------------------
# Helpers


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


def _scalar_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose cells W&B tables accept: scalars kept, lists/arrays/dicts/tensors written as str."""

    def cell(v: Any) -> Any:
        if isinstance(v, _SCALARS):
            return v
        if getattr(v, "ndim", None) == 0 and hasattr(v, "item"):  # numpy scalar, 0-d tensor
            return v.item()
        return str(v.tolist() if hasattr(v, "tolist") else v)

    out = df.copy()
    out.columns = [str(c) for c in out.columns]
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(cell)
    return out


_ARTIFACT_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def _artifact_name(name: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.', up to 128 characters."""
    return _ARTIFACT_BAD.sub("-", name).strip("-")[:128] or "artifact"
