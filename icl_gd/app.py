"""The Hydra app: compose the config and run one job (or, with -m, one job per sweep point).

One app behind every way in: `python run.py`, `python -m icl_gd` and the installed `icl-gd` console script.
The configs are found in the top-level conf/ of a source checkout (editable install or `python run.py`), and
otherwise in the package data of an installed wheel, through Hydra's `pkg://` search path (setup.py ships
conf/ into the wheel as icl_gd/conf). `--config-dir` adds a folder in front of either.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from icl_gd import io, progress, show_config, threads
from icl_gd.confdir import CONFIG_NAME, HYDRA_VERSION, hydra_config_path
from icl_gd.errors import EXIT_CONFIG, EXIT_FAILED, ConfigError, DataError, ModelNotFoundError
from icl_gd.runner import run
from icl_gd.tracking import sweep_group

log = logging.getLogger("icl_gd")

SHOWN_METRICS = ("label_accuracy", "accuracy")  # the first a job has is on its end line
METRIC_DIGITS = 3


def main() -> None:
    """The entry point: `--cfg job` prints the config with its types (icl_gd/show_config.py), all else is Hydra's."""
    request = show_config.requested(sys.argv[1:])
    code = show_config.show(request) if request is not None else None
    if code is None:
        hydra_app()
    else:
        sys.exit(code)


@hydra.main(version_base=HYDRA_VERSION, config_path=hydra_config_path(), config_name=CONFIG_NAME)
def hydra_app(cfg: DictConfig) -> None:
    """Run the composed job; errors end the process with one line each (the traceback is in status.json)."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    experiment = hc.runtime.choices.get("experiment")  # the preset, for W&B names, groups and tags
    folder = Path(hc.sweep.dir if multirun else hc.run.dir)
    progress.configure(bool(cfg.get("progress", True)))
    # parallel jobs share the cores, never oversubscribe them
    threads.apply(cfg.get("threads", threads.AUTO), hc.launcher)
    out = Path(cfg.output_dir)
    before = _status_time(out)
    started = time.monotonic()
    try:
        group = sweep_group(cfg.get("logger"), folder, experiment)
        metrics = run(cfg, group=group, raise_on_failure=not multirun, experiment=experiment)
    except (ConfigError, DataError, ModelNotFoundError) as e:  # a clear message, no traceback
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(EXIT_CONFIG)
    except Exception as e:  # recorded in status.json where a job folder exists; said here in any case
        log.error("%s: %s (see %s in the job folder for the traceback)", type(e).__name__, e, "status.json")
        sys.exit(EXIT_FAILED)
    # ran now (a skipped job's status.json is untouched, and the runner said it skipped it)
    if _status_time(out) != before and metrics:
        took = time.monotonic() - started
        if multirun:  # the job folder, relative to the sweep folder, is its short label
            log.info("%s done in %.1f s: %s%s", progress.job_tag(hc.job.num), took, out.name, _shown(metrics))
        else:
            log.info("job done in %.1f s: %s%s -> %s", took, job_label(cfg), _shown(metrics), out)


def job_label(cfg: DictConfig) -> str:
    """A short label of a job: method (its tag), dataset, N, seed, and the order seed / labels where set."""
    method = cfg.method.get("tag") or cfg.method.name
    parts = [str(method), str(cfg.dataset.name), f"N={cfg.get('demos')}", f"seed={cfg.get('seed')}"]
    if cfg.get("order_seed") is not None:
        parts.append(f"order_seed={cfg.order_seed}")
    if cfg.get("demo_labels") not in (None, "original"):
        parts.append(f"labels={cfg.demo_labels}")
    return " ".join(parts)


def _shown(metrics: dict) -> str:
    """The headline metric of a job's end line: label accuracy (else top-1 accuracy), nothing for other jobs."""
    key = next((k for k in SHOWN_METRICS if isinstance(metrics.get(k), int | float)), None)
    return f" ({key}={metrics[key]:.{METRIC_DIGITS}f})" if key else ""


def _status_time(out: Path) -> float | None:
    """When status.json was last written (None: none yet): a job that ran rewrites it, a skipped one does not."""
    try:
        return (out / io.STATUS).stat().st_mtime_ns
    except OSError:
        return None
