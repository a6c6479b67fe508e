"""The W&B runs of the sweep steps (job types `compare` and `report`): which logger, and one run's lifetime.

`icl_gd.tracking` (the only module that imports wandb) is imported when a run starts, so reading this module
costs nothing, and a test can replace `icl_gd.tracking.make_tracker`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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


def log_run(
    folder: Path,
    job_type: str,
    logger_cfg: Any,
    log: Callable[[Tracker], None],
    config: Mapping[str, Any] | None = None,
) -> None:
    """The one W&B run of `job_type` of the sweep folder: `log(tracker)` sends its tables and summary; the run
    always finishes. Its id is stable (`stable_run_id`), so running the step again updates that run; it is in
    the jobs' group, named `<job_type>-<group>`. `config` is added to its W&B config."""
    from icl_gd import io  # noqa: PLC0415
    from icl_gd.tracking import (  # noqa: PLC0415
        ADHOC,
        make_tracker,
        stable_run_id,
        sweep_experiment,
        sweep_group,
    )

    experiment = sweep_experiment([st.parent for st in sorted(folder.glob(f"*/{io.STATUS}"))])
    group = sweep_group(logger_cfg if isinstance(logger_cfg, Mapping) else None, folder, experiment)
    tracker = make_tracker(
        logger_cfg,
        output_dir=folder,
        config={"sweep_dir": str(folder), "experiment": experiment or ADHOC, **(config or {})},
        group=group,
        job_type=job_type,
        name=f"{job_type}-{group}",
        tags=[t for t in (experiment, job_type) if t],
        run_id=stable_run_id(job_type, folder),
    )
    exit_code = 1
    try:
        log(tracker)
        exit_code = 0
    finally:
        tracker.finish(exit_code=exit_code)


def job_runs(
    folders: Iterable[Path], sweep: Path, jobs_logger: Mapping[str, Any]
) -> dict[Path, dict[str, Any]]:
    """Each job folder's W&B run id (None without a run) and predictions artifact name, as its job logged them."""
    from icl_gd.tracking import job_experiment, predictions_artifact, run_id_of, sweep_group  # noqa: PLC0415

    out = {}
    for f in folders:
        group = sweep_group(jobs_logger, sweep, job_experiment(f))
        out[Path(f)] = {"run_id": run_id_of(f), "artifact": predictions_artifact(group, Path(f).name)}
    return out
