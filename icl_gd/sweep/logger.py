"""The W&B runs of the sweep steps (job types `compare` and `report`): which logger, and one run's lifetime.

`icl_gd.tracking` (the only module that imports wandb) is imported when a run starts, so reading this module
costs nothing, and a test can replace `icl_gd.tracking.make_tracker`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icl_gd.tracking import Tracker


def pick_logger(override: Mapping[str, Any] | None, jobs_logger: Mapping[str, Any]) -> Any:
    """The step's logger: the jobs' own, or `override` filled in from the jobs' when both name the same
    logger (so `--logger wandb` keeps the sweep's project, entity and tags)."""
    if override is None:
        return jobs_logger
    if override.get("name") == jobs_logger.get("name"):
        return {**jobs_logger, **override}
    return override


def log_run(folder: Path, job_type: str, logger_cfg: Any, log: Callable[[Tracker], None]) -> None:
    """One W&B run of the sweep folder: `log(tracker)` sends its tables and summary; the run always finishes."""
    from icl_gd.tracking import make_tracker  # noqa: PLC0415

    tracker = make_tracker(
        logger_cfg,
        output_dir=folder,
        config={"sweep_dir": str(folder)},
        group=folder.name,
        job_type=job_type,
        name=f"{job_type}-{folder.name}",
    )
    try:
        log(tracker)
    finally:
        tracker.finish()
