"""Hydra callback: compare the jobs of a sweep once all of them have run (with any launcher).

Before anything runs it also checks what Hydra would otherwise report with a traceback: that the output folder
can be written, and that the chosen launcher's plugin is installed (`hydra/launcher=joblib` without the plugin
says what to install instead of Hydra's "Unknown plugin class"). Hydra turns a callback's exception into a
warning (and the multirun exits 0), so these checks exit with the message (SystemExit) instead.

At the end of a multirun it writes the comparison and the report of the jobs that finished, then, when a job of
the sweep folder failed (or its files do not read back) or a step failed, logs one ERROR line naming each and the
fix. It ends with one summary line (`sweep_line`: done / skipped / failed jobs with their folders) and the
`wandb sync` command of the sweep's offline W&B runs (once), and exits 1 (SystemExit, which Hydra lets through)
when a step failed, or a job did unless `allow_failures=true`: a multirun with a failure ends with exit 0 only
when asked to.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from icl_gd.errors import ConfigError

if TYPE_CHECKING:
    from icl_gd.sweep.jobs import SweepScan

log = logging.getLogger(__name__)

MAX_NAMED = 8  # failed or unfinished job folders named in the end-of-sweep line; the rest are counted
MAX_NAMED_DONE = 3  # done or skipped folders named there: more are only counted (the line stays short)

# plugin package -> (its PyPI name, this project's extra, the modules it needs at launch)
LAUNCHER_PLUGINS = {
    "hydra_plugins.hydra_joblib_launcher": ("hydra-joblib-launcher", "joblib", ("joblib",)),
    # the project's submitit launchers (submitit_slurm, slurm_a100, submitit_local) subclass the plugin's
    "hydra_plugins.icl_gd_launchers": (
        "hydra-submitit-launcher",
        "slurm",
        ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ),
    "hydra_plugins.hydra_submitit_launcher": ("hydra-submitit-launcher", "slurm", ("submitit",)),
    "hydra_plugins.hydra_ray_launcher": ("hydra-ray-launcher", "ray", ("ray",)),
}


class LauncherNotInstalled(ConfigError):
    """hydra/launcher names a plugin that is not installed."""


def _installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a module set to None in sys.modules
        return False


def check_launcher(config: DictConfig) -> None:
    """Raise LauncherNotInstalled when hydra.launcher names a plugin (or a module it needs) that is not installed,
    and ConfigError for a SLURM timeout_min / signal_delay_s pair that would kill jobs at random."""
    from icl_gd.sweep.launchers import check_signal_timing  # noqa: PLC0415

    launcher = config.hydra.launcher
    check_signal_timing({k: launcher.get(k) for k in ("timeout_min", "signal_delay_s") if k in launcher})
    target = str(config.hydra.launcher.get("_target_") or "")
    package = ".".join(target.split(".")[:2])
    if package not in LAUNCHER_PLUGINS:
        return
    dist, extra, needs = LAUNCHER_PLUGINS[package]
    missing = [m for m in (package, *needs) if not _installed(m)]
    if missing:
        choice = config.hydra.runtime.choices.get("hydra/launcher") or target
        raise LauncherNotInstalled(
            f"hydra/launcher={choice} needs the Hydra plugin {dist}, which is not installed in {sys.executable} "
            f"(missing: {', '.join(missing)}). Install it with: pip install -e '.[{extra}]' (or pip install {dist}), "
            "or leave out hydra/launcher to run the jobs one after another."
        )


def check_writable(folder: str, key: str) -> None:
    """Raise ConfigError unless `folder` can be created and written (Hydra's own failure is a traceback)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(
            f"output folder {folder} cannot be written ({type(e).__name__}: {e.strerror}): "
            f"set {key}=<a folder you can write to>."
        ) from None


class CompareOnMultirunEnd(Callback):
    """Checks the output folder and the launcher before a run; compares and reports a multirun at its end."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A single run: its output folder must be writable."""
        try:
            check_writable(config.hydra.run.dir, "hydra.run.dir")
        except ConfigError as e:
            raise SystemExit(f"ConfigError: {e}") from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A multirun: the launcher's plugin must be installed and the sweep folder writable."""
        self._started = time.time()  # a job done before this is one the sweep skipped
        try:  # before Hydra instantiates the launcher and makes the sweep folder
            check_launcher(config)
            check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
        except ConfigError as e:
            raise SystemExit(f"{type(e).__name__}: {e}") from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Compare the sweep's jobs, write its report, then say what failed and exit 1 if anything did."""
        from icl_gd.sweep.jobs import scan_jobs  # noqa: PLC0415 -- pandas and pyarrow, only at the end

        sweep = Path(config.hydra.sweep.dir)
        try:
            scan = scan_jobs(sweep)  # once: each step and the summary agree on which jobs finished
        except Exception as e:  # the multirun must not end with exit 0 all the same
            log.error("the jobs of %s could not be checked: %s: %s", sweep, type(e).__name__, e)
            raise SystemExit(1) from None
        failed_steps = run_steps(scan, config.get("logger"))
        failed_jobs = end_of_sweep(scan)
        log.log(
            logging.WARNING if failed_jobs else logging.INFO,
            "%s",
            sweep_line(scan, getattr(self, "_started", None)),
        )
        from icl_gd.tracking import sync_hint  # noqa: PLC0415

        sync_hint(sweep)  # once per sweep (the compare and report runs may have said it already)
        if failed_jobs and config.get("allow_failures", False) and not failed_steps:
            log.warning("exit 0 although jobs failed: allow_failures=true")
            return
        if failed_jobs or failed_steps:
            raise SystemExit(1)  # after the comparison and report of the finished jobs are written


def run_steps(scan: SweepScan, logger_cfg: Any) -> list[str]:
    """Compare the sweep, then write its report; each failure is logged (one line, with the command that reruns
    the step) and the other step still runs. Returns the steps that failed."""
    from icl_gd.sweep.compare import compare_sweep  # noqa: PLC0415 -- torch and pandas, only at the end
    from icl_gd.sweep.jobs import EmptySweepError, NoFinishedJobsError  # noqa: PLC0415
    from icl_gd.sweep.report import build_report  # noqa: PLC0415

    sweep = scan.folder
    failed = []
    for what, step, rerun in (
        ("comparison", compare_sweep, "python -m icl_gd.sweep compare {}"),
        ("report", build_report, "make report SWEEP={}"),
    ):
        try:
            step(sweep, logger_cfg=logger_cfg, scan=scan)
        except NoFinishedJobsError:  # no job finished: the end-of-sweep line names each failure
            log.info("no %s of %s: no job finished", what, sweep)
        except EmptySweepError as e:  # e.g. a regression-lab sweep: its jobs write their own figures
            log.info("no %s for %s: %s", what, sweep, e)
        except Exception as e:  # the jobs' own files are the record; both steps can be rerun from them
            log.error(
                "%s of %s failed: %s: %s (rerun it with: %s)",
                what,
                sweep,
                type(e).__name__,
                e,
                rerun.format(sweep),
            )
            failed.append(what)
    return failed


def end_of_sweep(scan: SweepScan) -> bool:
    """Log, at the end of a multirun, which jobs of the sweep folder failed (ERROR) or have not finished
    (WARNING), each with its error and the fix; True when a job failed or does not read back."""
    from icl_gd import io  # noqa: PLC0415
    from icl_gd.sweep.jobs import failure_summary, unfinished_note  # noqa: PLC0415

    summary, unfinished = failure_summary(scan), unfinished_note(scan)
    if unfinished:
        log.warning("%s", unfinished)
    if summary:
        written = [
            scan.folder / name for name in (io.COMPARISON_MD, io.REPORT) if (scan.folder / name).exists()
        ]
        if scan.jobs and written:
            summary += (
                f" The {len(scan.jobs)} finished jobs are compared without them in "
                + " and ".join(map(str, written))
                + "."
            )
        log.error("%s", summary)
    return summary is not None


def _named(folders: list[Path], sweep: Path, most: int = MAX_NAMED) -> str:
    """The folders as ": a, b" (relative to the sweep folder, `most` at most, then a count); "" for none."""
    names = [str(f.relative_to(sweep)) if f.is_relative_to(sweep) else str(f) for f in folders]
    more = f", and {len(names) - most} more" if len(names) > most else ""
    return ": " + ", ".join(names[:most]) + more if names else ""


def sweep_line(scan: SweepScan, started: float | None) -> str:
    """One line for the end of a multirun: how many jobs are done (this run), skipped (done before it started,
    their status.json older than `started`), failed (or unreadable) and unfinished, each with its folders (done and
    skipped ones only up to MAX_NAMED_DONE: the failed are what the user must find)."""
    from icl_gd import io  # noqa: PLC0415

    done = sorted([j.folder for j in scan.jobs] + list(scan.other_done))
    skipped = [f for f in done if started is not None and (f / io.STATUS).stat().st_mtime < started]
    ran = [f for f in done if f not in skipped]
    failed = sorted([f.folder for f in scan.failed] + [u.folder for u in scan.unreadable])
    unfinished = sorted(f.folder for f in scan.unfinished)
    parts = [
        f"{len(ran)} done{_named(ran, scan.folder, MAX_NAMED_DONE)}",
        f"{len(skipped)} skipped (done before){_named(skipped, scan.folder, MAX_NAMED_DONE)}",
        f"{len(failed)} failed{_named(failed, scan.folder)}",
    ]
    if unfinished:
        parts.append(f"{len(unfinished)} unfinished{_named(unfinished, scan.folder)}")
    return f"sweep {scan.folder}: {scan.n_jobs} jobs; " + "; ".join(parts)
