"""The report of a language-model sweep: S/report.md, S/figures/*.png and a W&B `report` run.

    python -m icl_gd.sweep report <sweep folder> [--logger none]        # also: make report SWEEP=<folder>

It reads the sweep folder (`icl_gd.sweep.loading`), builds each section (`icl_gd.sweep.sections`: a table from a
pure function of frames, a figure, its markdown) and writes the markdown. Every interval is a two-level cluster
bootstrap (demo sets, then queries; `icl_gd.sweep.stats`) at the jobs' `stats.level`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icl_gd import io
from icl_gd.sweep import stats
from icl_gd.sweep.jobs import SweepScan
from icl_gd.sweep.loading import Sweep, load_sweep
from icl_gd.sweep.logger import log_run, pick_logger
from icl_gd.sweep.sections import SECTIONS, Section
from icl_gd.sweep.wandb_plots import LineSeries, draw, line_series, log_line_series, write_manifest

if TYPE_CHECKING:
    from icl_gd.tracking import Tracker

log = logging.getLogger(__name__)


def header_md(sweep: Sweep) -> str:
    """The report's title and what it rests on: how many jobs ran, finished, failed."""
    s = sweep.status
    other = sum(n for k, n in s.items() if k not in ("done", "failed"))
    skipped = (
        f"; jobs left out because their files do not read back: {sweep.skipped} (see the log)"
        if sweep.skipped
        else ""
    )
    return (
        f"# ICL vs GD: report of {sweep.folder.name}\n\n"
        f"Sweep folder: `{sweep.folder}`\n\n"
        f"Jobs: {sum(s.values())} ({s.get('done', 0)} done, {s.get('failed', 0)} failed, {other} unfinished); "
        f"{len(sweep.jobs)} finished language-model jobs are reported{skipped}. Every ± is the half-width of a "
        f"{sweep.stats.level:.0%} two-level cluster-bootstrap interval (demo sets, then queries; with one demo set "
        "it covers query sampling only).\n\n"
    )


def _log(
    sweep: Sweep, sections: list[Section], report: Path, logger_cfg: Any, plots: list[LineSeries]
) -> None:
    """The W&B `report` run: each section's table and figure, the line plots a dashboard redraws, the job
    counts (`jobs_done`, `jobs_failed`, ...), report.md as an artifact."""

    def send(tracker: Tracker) -> None:
        for s in sections:
            tracker.log_table(f"report/{s.name}", s.table)
            if s.figure:
                tracker.log_image(f"report/{s.figure.stem}", s.figure)
        log_line_series(tracker, plots)
        tracker.summary({f"jobs_{k}": n for k, n in sweep.status.items()})
        tracker.log_artifact(report, name=f"report-{sweep.folder.name}", type="report")

    log_run(sweep.folder, "report", logger_cfg, send)


def build_report(sweep_dir: str | Path, logger_cfg: Any = None, scan: SweepScan | None = None) -> Path:
    """Write S/report.md and S/figures/*.png for a sweep folder, log them to W&B; returns report.md's path.

    logger_cfg: a `logger` node ({name: none} / {name: wandb, ...}); None = the jobs' own logger.
    scan: the folder's `icl_gd.sweep.jobs.scan_jobs`, when taken (else it is taken here).
    """
    sweep = load_sweep(Path(sweep_dir), scan)
    stats.use(sweep.stats)
    fig_dir = sweep.folder / io.FIGURES
    sections = [s for make in SECTIONS if (s := make(sweep, fig_dir)) is not None]
    path = sweep.folder / io.REPORT
    io.write_text(path, header_md(sweep) + "\n".join(s.markdown for s in sections))
    log.info("report of %s: %s (%d figures)", sweep.folder, path, sum(s.figure is not None for s in sections))
    plots = line_series(sweep)
    write_manifest(sweep.folder, plots)
    draw(plots, fig_dir / io.FIG_WANDB)
    _log(sweep, sections, path, pick_logger(logger_cfg, sweep.logger), plots)
    return path
