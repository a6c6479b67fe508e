"""The W&B dashboard of a sweep as code: a saved Workspace and a Report, built with `wandb-workspaces`.

    python -m icl_gd.dashboard <sweep folder or W&B group> [--entity E] [--project P] [--dry-run]
    make dashboard GROUP=<sweep folder or group> [DASHBOARD_ARGS=--dry-run]

The Workspace has a section per question: accuracy against demos by method; agreement against demos by pair with
the noise floor; the training loss; then one section per dataset; its runs are the sweep's group, grouped by method.
The Report has the same plots, a panel grid per dataset whose runs are that dataset's jobs. `--dry-run` writes the
spec as JSON (S/dashboard.json for a sweep folder, else --out) and prints its path, without touching the network.

Every key a panel names is one the runs log: the job runs' summary keys (read from the jobs' metrics.json, which
the runner logs as the summary), `train/loss` against `train/step` when a job trained, the flat config keys
(`tracking.FLAT_KEYS`) and the report run's line plots (S/wandb_plots.json lists them). Given a group name instead
of a folder, the spec holds the panels every sweep has (the keys of `tracking.FLAT_KEYS` and DEFAULT_METRICS).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from icl_gd import io
from icl_gd.tracking import DEFAULTS, TRAIN_PREFIX, TRAIN_STEP, sweep_experiment, sweep_group

log = logging.getLogger(__name__)

PANEL_METRICS = (
    "label_accuracy",
    "accuracy",
    "gold_prob",
)  # the job summary keys the panels draw, when logged
DEFAULT_METRICS = ("label_accuracy",)  # what a spec built from a group name alone assumes every job logs
TRAIN_LOSS = f"{TRAIN_PREFIX}loss"
GROUP_BY = "method"  # the flat config key runs are grouped by
LINE_SERIES_CHART = "wandb/lineseries/v0"  # the Vega spec wandb.plot.line_series logs with
LINE_SERIES_FIELDS = {"step": "step", "lineKey": "lineKey", "lineVal": "lineVal"}
COMPARISON_TABLE = "comparison"  # the compare run's Table (icl_gd.sweep.compare)
EXIT_USAGE = 2


@dataclass
class SweepKeys:
    """What a sweep's runs log, as far as the dashboard draws it (read from the sweep folder, no W&B)."""

    group: str
    entity: str | None = None
    project: str = DEFAULTS["project"]
    datasets: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    trained: bool = False  # a job logged train/loss
    compared: bool = False  # the compare run logged the comparison Table
    plots: list[dict[str, Any]] = field(default_factory=list)  # S/wandb_plots.json


def read_sweep(folder: Path) -> SweepKeys:
    """The group, project, datasets, summary metrics and plots of a sweep folder's W&B runs."""
    from icl_gd.sweep.wandb_plots import read_manifest  # noqa: PLC0415 -- pandas, only with a folder

    jobs = [st.parent for st in sorted(folder.glob(f"*/{io.STATUS}"))]
    if not jobs:
        raise FileNotFoundError(f"{folder} holds no job folder (*/{io.STATUS}): is it a sweep folder?")
    configs = {f: yaml.safe_load((f / io.CONFIG).read_text()) for f in jobs if (f / io.CONFIG).exists()}
    logger = next((c.get("logger") for c in configs.values() if c.get("logger")), {}) or {}
    metrics: set[str] = set()
    for f in jobs:
        st = io.read_status(f) or {}
        if st.get("status") == "done" and (f / io.METRICS).exists():
            metrics |= set(io.read_json(f / io.METRICS))
    return SweepKeys(
        group=sweep_group(logger, folder, sweep_experiment(jobs)),
        entity=logger.get("entity"),
        project=logger.get("project") or DEFAULTS["project"],
        datasets=sorted({str(c["dataset"]["name"]) for c in configs.values()}),
        metrics=[m for m in PANEL_METRICS if m in metrics],
        trained=any((f / io.TRAIN_CURVE).exists() for f in jobs),
        compared=(folder / io.COMPARISON_QUERIES).exists(),
        plots=read_manifest(folder),
    )


def panel_keys(keys: SweepKeys) -> dict[str, list[str]]:
    """Every key the spec's panels name, by where the runs log it."""
    plots = [p["table_key"] for p in keys.plots] + ([COMPARISON_TABLE] if keys.compared else [])
    return {
        "config": ["demos", GROUP_BY, "dataset"],
        "summary": list(keys.metrics),
        "history": [TRAIN_STEP, TRAIN_LOSS] if keys.trained else [],
        "tables": plots,
    }


def _chart(wr: Any, plot: dict[str, Any]) -> Any:
    """A panel that redraws one of the report run's line plots from its Table."""
    return wr.CustomChart(
        query={"summaryTable": {"tableKey": plot["table_key"]}},
        chart_name=LINE_SERIES_CHART,
        chart_fields=dict(LINE_SERIES_FIELDS),
        chart_strings={"title": plot["title"], "xname": "demos"},
    )


def _run_panels(wr: Any, keys: SweepKeys) -> list[Any]:
    """Panels over the job runs: each metric against demos (one point per run) and by method (bars)."""
    panels = []
    for m in keys.metrics:
        panels.append(wr.ScatterPlot(title=f"{m} vs demos", x=wr.Config("demos"), y=wr.SummaryMetric(m)))
    if keys.metrics:
        panels.append(
            wr.BarPlot(
                title=f"by {GROUP_BY}",
                metrics=[wr.SummaryMetric(m) for m in keys.metrics],
                groupby=wr.Config(GROUP_BY),
                groupby_aggfunc="mean",
                groupby_rangefunc="stderr",
            )
        )
    return panels


def _train_panels(wr: Any, keys: SweepKeys) -> list[Any]:
    if not keys.trained:
        return []
    return [wr.LinePlot(title="training loss", x=TRAIN_STEP, y=[TRAIN_LOSS], groupby=wr.Config(GROUP_BY))]


def workspace(keys: SweepKeys, entity: str, project: str) -> Any:
    """The saved Workspace (wandb_workspaces.workspaces.Workspace) of the sweep's group."""
    import wandb_workspaces.reports.v2 as wr  # noqa: PLC0415 -- the optional extra
    import wandb_workspaces.workspaces as ws  # noqa: PLC0415

    acc = [p for p in keys.plots if p["kind"] == "accuracy"]
    agr = [p for p in keys.plots if p["kind"] == "agreement"]
    sections = [
        ws.Section(
            name="Accuracy vs demos, by method",
            panels=[*map(lambda p: _chart(wr, p), acc), *_run_panels(wr, keys)],
        ),
        ws.Section(
            name="Agreement vs demos, by pair (dashed: the noise floor)",
            panels=[*(_chart(wr, p) for p in agr)]
            + ([wr.WeavePanelSummaryTable(table_name=COMPARISON_TABLE)] if keys.compared else []),
        ),
    ]
    if keys.trained:
        sections.append(ws.Section(name="Training loss", panels=_train_panels(wr, keys)))
    for ds in keys.datasets:
        mine = [_chart(wr, p) for p in keys.plots if p["dataset"] == ds]
        sections.append(ws.Section(name=f"Dataset: {ds}", panels=mine))
    for s in sections:
        s.is_open = True
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"icl-gd {keys.group}",
        sections=[s for s in sections if s.panels],
        runset_settings=ws.RunsetSettings(
            filters=[ws.Metric("Group") == keys.group], groupby=[ws.Config(GROUP_BY)]
        ),
    )


def report(keys: SweepKeys, entity: str, project: str) -> Any:
    """The Report (wandb_workspaces.reports.v2.Report) of the sweep: its plots, then a panel grid per dataset."""
    import wandb_workspaces.reports.v2 as wr  # noqa: PLC0415
    import wandb_workspaces.workspaces as ws  # noqa: PLC0415

    def runset(name: str, *filters: Any) -> Any:
        return wr.Runset(
            entity=entity,
            project=project,
            name=name,
            filters=[ws.Metric("Group") == keys.group, *filters],
            groupby=[GROUP_BY],
        )

    blocks: list[Any] = [
        wr.H1(f"ICL vs GD: {keys.group}"),
        wr.P(
            "Accuracy against the number of demonstrations by method, and each method pair's agreement with ICL "
            "against the ICL-vs-ICL order noise floor (dashed). Built by python -m icl_gd.dashboard."
        ),
    ]
    if keys.plots:
        blocks.append(
            wr.PanelGrid(
                runsets=[runset("report run", ws.Metric("JobType") == "report")],
                panels=[_chart(wr, p) for p in keys.plots],
            )
        )
    for ds in keys.datasets or [None]:
        blocks.append(wr.H2(f"Dataset: {ds}" if ds else "Jobs"))
        extra = [ws.Config("dataset") == ds] if ds else []
        blocks.append(
            wr.PanelGrid(
                runsets=[runset(ds or "jobs", *extra)],
                panels=[*_run_panels(wr, keys), *_train_panels(wr, keys)],
            )
        )
    return wr.Report(project=project, entity=entity, title=f"icl-gd {keys.group}", blocks=blocks)


def spec(keys: SweepKeys, entity: str, project: str) -> dict[str, Any]:
    """The dashboard as JSON: the Workspace and the Report (wandb-workspaces' own fields), and the keys they use."""
    from pydantic import TypeAdapter  # noqa: PLC0415 -- wandb-workspaces' dependency

    w, r = workspace(keys, entity, project), report(keys, entity, project)
    return {
        "group": keys.group,
        "entity": entity,
        "project": project,
        "panel_keys": panel_keys(keys),
        "workspace": TypeAdapter(type(w)).dump_python(w, mode="json"),
        "report": TypeAdapter(type(r)).dump_python(r, mode="json"),
    }


def _keys(target: str) -> tuple[SweepKeys, Path | None]:
    """A sweep folder's keys, or those of a group name (a target that names no path)."""
    folder = Path(target)
    if folder.is_dir():
        return read_sweep(folder), folder
    if folder.exists() or "/" in target:
        raise FileNotFoundError(
            f"{target} is no sweep folder (give a sweep folder, or the name of a W&B group)"
        )
    return SweepKeys(group=target), None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icl_gd.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="a sweep folder, or the W&B group of a sweep")
    parser.add_argument(
        "--entity", default=None, help="W&B entity (default: the jobs' logger.entity, else yours)"
    )
    parser.add_argument("--project", default=None, help="W&B project (default: the jobs' logger.project)")
    parser.add_argument("--dry-run", action="store_true", help="write the spec as JSON, touch no network")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"the JSON of --dry-run (default: S/{io.DASHBOARD})"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import wandb_workspaces  # noqa: F401, PLC0415
    except ImportError:
        log.error("the dashboard needs wandb-workspaces: pip install -e '.[dashboard]' (make install has it)")
        return EXIT_USAGE
    try:
        keys, folder = _keys(args.target)
    except (FileNotFoundError, OSError, ValueError) as e:
        log.error("%s", e)
        return EXIT_USAGE
    project = args.project or keys.project
    entity = args.entity or keys.entity
    if args.dry_run:
        out = args.out or (folder / io.DASHBOARD if folder else Path(f"dashboard-{keys.group}.json"))
        io.write_text(out, json.dumps(spec(keys, entity or "", project), indent=1))
        print(out.resolve(), flush=True)  # the one output: where the spec is
        return 0
    from icl_gd.tracking import default_entity  # noqa: PLC0415

    entity = entity or default_entity()
    if not entity:
        log.error("no W&B entity: pass --entity, set logger.entity, or wandb login (or use --dry-run)")
        return EXIT_USAGE
    w, r = workspace(keys, entity, project), report(keys, entity, project)
    w.save()
    r.save()
    print(f"workspace: {w.url}\nreport: {r.url}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
