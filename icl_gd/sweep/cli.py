"""The sweep command line: one entry point for both steps, with the same arguments.

    python -m icl_gd.sweep compare <sweep folder> [--logger wandb|none]   # pairs, comparison.md, order sensitivity
    python -m icl_gd.sweep report <sweep folder> [--logger wandb|none]    # report.md and figures/ (after compare)

`--logger` overrides the jobs' logger for the step's W&B run; naming the jobs' own logger keeps its settings
(project, entity, tags), see `icl_gd.sweep.logger.pick_logger`. Without it the step logs where the jobs did.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from icl_gd.sweep.compare import compare_sweep
from icl_gd.sweep.loading import EmptySweepError, require_folder
from icl_gd.sweep.report import build_report

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


def main(argv: list[str] | None = None) -> None:
    """Run one command on a sweep folder; a wrong folder or an empty sweep is a usage error (exit code 2)."""
    top, commands = parser()
    args = top.parse_args(argv)
    command = commands[args.command]
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logger_cfg = logger_override(args.logger)
    try:
        require_folder(args.sweep_dir)
    except FileNotFoundError as e:
        command.error(str(e))
    if args.command == "compare":
        compare_sweep(args.sweep_dir, logger_cfg=logger_cfg)
        return
    try:
        path = build_report(args.sweep_dir, logger_cfg=logger_cfg)
    except (FileNotFoundError, EmptySweepError) as e:  # e.g. a regression-lab sweep: no language-model job
        command.error(str(e))
    print(path, flush=True)
