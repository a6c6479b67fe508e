"""Offline-run housekeeping: the process-wide fallback to offline, the `wandb sync` hints, superseded runs.

An online init that fails once makes every later run of the process start offline (`_FALLBACK`); the command
that uploads offline runs is logged once per run for a single job, once per sweep folder for a multirun
(`_HINTED`). `reset_process_state` forgets both (a new sweep in the same process, or a test).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from icl_gd.tracking.naming import SWEEP_FILE

log = logging.getLogger(__name__)

# Process-wide state: the reason online init failed once (then every later run starts offline), and the folders
# whose sync hint was said.
_FALLBACK: dict[str, str] = {}
_HINTED: set[Path] = set()


def reset_process_state() -> None:
    """Forget the offline fallback and the sync hints said (a new sweep in the same process, or a test)."""
    _FALLBACK.clear()
    _HINTED.clear()


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
        log.debug("W&B: removed %s, superseded by this run of the same id", old)
