"""The sweep command line: one entry point for both steps, with the same arguments.

    python -m icl_gd.sweep compare <sweep folder> [--logger wandb|none]   # pairs, comparison.md, order sensitivity
    python -m icl_gd.sweep report <sweep folder> [--logger wandb|none]    # report.md and figures/ (after compare)

`--logger` overrides the jobs' logger for the step's W&B run; naming the jobs' own logger keeps its settings
(project, entity, tags), see `icl_gd.sweep.logger.pick_logger`. Without it the step logs where the jobs did.

Exit codes: 0 when the step wrote its files (jobs that failed or do not read back are left out, and a warning
line names them); 2 when the path is no folder or holds no job folder (or only regression-lab jobs); 1 when it
holds jobs but none finished, or a file the step needs does not read back (the message names it and the fix).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

from icl_gd.sweep.compare import compare_sweep
from icl_gd.sweep.jobs import (
    EmptySweepError,
    NoFinishedJobsError,
    SweepScan,
    failure_summary,
    scan_jobs,
    unfinished_note,
)
from icl_gd.sweep.loading import SweepFileError, require_folder
from icl_gd.sweep.report import build_report

log = logging.getLogger(__name__)

LOGGERS = ("wandb", "none")
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
COMMANDS = {
    "compare": "Compare the jobs of a sweep folder (ICL vs GD, order noise floor).",
    "report": "Write report.md and figures for a sweep folder (ICL vs GD).",
}


def parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and its one sub-parser per command (each takes the sweep folder and --logger)."""
    top = argparse.ArgumentParser(
        prog="python -m icl_gd.sweep", description="Compare and report a sweep folder."
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="{compare,report}")
    commands = {}
    for name, description in COMMANDS.items():
        p = sub.add_parser(name, help=description, description=description)
        p.add_argument("sweep_dir", type=Path, help="the sweep folder (hydra.sweep.dir) of a multirun")
        p.add_argument(
            "--logger", choices=LOGGERS, default=None, help=f"override the jobs' logger for the {name} run"
        )
        commands[name] = p
    return top, commands


def logger_override(name: str | None) -> dict[str, Any] | None:
    """The `logger` node that `--logger NAME` asks for; None leaves the jobs' own logger."""
    return {"name": name} if name else None


def fail(command: argparse.ArgumentParser, message: str) -> NoReturn:
    """Exit 1 with `prog: error: message` on stderr: the folder is right, but its jobs or files are not."""
    sys.stderr.write(f"{command.prog}: error: {message}\n")
    raise SystemExit(1)


def warn_left_out(scan: SweepScan) -> None:
    """A warning line naming the jobs the step left out (failed, unreadable, unfinished), when there are any."""
    for line in (failure_summary(scan), unfinished_note(scan)):
        if line:
            log.warning("%s", line)


def main(argv: list[str] | None = None) -> None:
    """Run one command on a sweep folder; see the module's docstring for the exit codes."""
    top, commands = parser()
    args = top.parse_args(argv)
    command = commands[args.command]
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logger_cfg = logger_override(args.logger)
    try:
        require_folder(args.sweep_dir)
        scan = scan_jobs(args.sweep_dir)
        if args.command == "compare":
            compare_sweep(args.sweep_dir, logger_cfg=logger_cfg, scan=scan)
        else:
            path = build_report(args.sweep_dir, logger_cfg=logger_cfg, scan=scan)
    except (NoFinishedJobsError, SweepFileError) as e:  # the right folder, but nothing in it to use
        fail(command, str(e))
    except (FileNotFoundError, EmptySweepError) as e:  # not a sweep folder, or e.g. a regression-lab sweep
        command.error(str(e))
    warn_left_out(scan)
    if args.command == "report":
        print(path, flush=True)
