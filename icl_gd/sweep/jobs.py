"""The finished jobs of a sweep folder, their labels, and the rules that pair them.

Two jobs form a pair when their resolved configs agree on everything but the method (a method pair), or when
both are ICL and differ only in `order_seed` (an order pair: the noise floor a GD-vs-ICL gap must clear).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from icl_gd import io
from icl_gd.config import config_hash, identity

log = logging.getLogger(__name__)

METHOD_ORDER = ("icl", "gd", "lora", "zeroshot")  # the first of a pair is the reference
ORDER_PAIR = "icl_vs_icl_order"
ORDER_KEY = "order_seed"  # the config key that only reorders the demonstrations
NO_LOGGER = {"name": "none"}


@dataclass
class Job:
    """One finished job: its folder, its resolved config and the labels it gets in tables."""

    folder: Path
    config: dict[str, Any]
    method_label: str = ""  # the method name plus what tells it apart from same-named methods of the sweep
    model_label: str = ""  # the model name, @revision when revisions vary, "(untrained)" for random_init

    def __post_init__(self) -> None:
        self.method_label = self.method_label or self.method
        self.model_label = self.model_label or model_label(self.config["model"], False)

    @property
    def method(self) -> str:
        """The method's name (gd, icl, ...), before any label."""
        return self.config["method"]["name"]

    def key(self, *drop: str) -> str:
        """The job's identity minus `drop` and minus `analysis` (extra measurements never change predictions)."""
        ident = identity(self.config)
        for k in (*drop, "analysis"):
            ident.pop(k, None)
        return json.dumps(ident, sort_keys=True, default=str)

    def order_rank(self) -> tuple[bool, int]:
        """Sort key within an order group: the sampled order (order_seed null) first, then by order_seed."""
        o = self.config.get(ORDER_KEY)
        return (o is not None, o or 0)

    def predictions(self, columns: list[str] | None = None) -> pd.DataFrame:
        """predictions.parquet, or only those of `columns` it has."""
        return io.read_parquet(self.folder / io.PREDICTIONS, columns)


def _fmt(v: Any) -> str:
    """A config value as a label shows it: floats in their shortest form (1e-3 -> "0.001")."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def method_label(method: dict[str, Any], varying: list[str]) -> str:
    """`tag` when set, else the name plus the `varying` keys that are set: "gd", "gd(lr=0.001)", "gd(batch_size=all)"."""
    if method.get("tag"):
        return str(method["tag"])
    shown = [
        f"{k}={_fmt(method[k])}" for k in varying if k not in ("name", "tag") and method.get(k) is not None
    ]
    return f"{method['name']}({','.join(shown)})" if shown else str(method["name"])


def model_label(model: dict[str, Any], show_revision: bool) -> str:
    """The model name, "@revision" when the sweep holds several revisions, " (untrained)" for random weights."""
    label = str(model["name"])
    if show_revision and model.get("revision"):
        label += f"@{model['revision']}"
    return label + (" (untrained)" if model.get("random_init") else "")


def base_label(label: str, revision: Any) -> str:
    """The model label without its "@revision": the model whose checkpoints a weight-evolution figure follows."""
    return label.replace(f"@{revision}", "") if isinstance(revision, str) and revision else label


def _varying(dicts: list[dict[str, Any]]) -> list[str]:
    """The keys whose values differ among the dicts (a key missing from some counts as varying)."""
    keys = sorted({k for d in dicts for k in d})
    return [k for k in keys if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) > 1]


def label_jobs(jobs: list[Job]) -> list[Job]:
    """Give each job its method and model label, from what varies among the sweep's same-named methods/models."""
    by_method: dict[str, list[Job]] = {}
    by_model: dict[str, list[Job]] = {}
    for j in jobs:
        by_method.setdefault(j.method, []).append(j)
        by_model.setdefault(j.config["model"]["name"], []).append(j)
    for group in by_method.values():
        varying = _varying([j.config["method"] for j in group])
        for j in group:
            j.method_label = method_label(j.config["method"], varying)
    for group in by_model.values():
        revisions = "revision" in _varying([j.config["model"] for j in group])
        for j in group:
            j.model_label = model_label(j.config["model"], revisions)
    return jobs


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every finished language-model job under the sweep folder, each counted once, labelled (`label_jobs`)."""
    jobs = []
    for status in sorted(Path(sweep_dir).rglob(io.STATUS)):
        folder = status.parent
        st = io.read_status(folder)
        if not st or st.get("status") != "done" or not (folder / io.PREDICTIONS).exists():
            continue
        jobs.append(Job(folder, yaml.safe_load((folder / io.CONFIG).read_text())))
    return label_jobs(unique_jobs(jobs))


def unique_jobs(jobs: list[Job]) -> list[Job]:
    """The jobs with distinct resolved configs (output_dir aside): a job run twice under two folder names (a sweep
    extended by a value equal to a default) is counted once, the first folder kept, with a warning naming both."""
    seen: dict[str, Job] = {}
    for j in jobs:
        key = config_hash(j.config)
        if key in seen:
            log.warning(
                "%s is the same job as %s (same resolved config): counted once", j.folder, seen[key].folder
            )
            continue
        seen[key] = j
    return list(seen.values())


def demo_order(job: Job) -> list[str] | None:
    """The ids of the demonstrations in the order the job used them (demos.jsonl); None when it has no such file."""
    path = job.folder / io.DEMOS
    if not path.exists():
        return None
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def jobs_logger(jobs: list[Job]) -> dict[str, Any]:
    """The jobs' `logger` node (the first job's): where a sweep-level run logs unless told otherwise."""
    return (jobs[0].config.get("logger") or NO_LOGGER) if jobs else NO_LOGGER


def find_pairs(jobs: list[Job]) -> list[tuple[str, Job, Job]]:
    """(pair type, reference job, other job): method pairs and ICL order pairs."""
    pairs = []
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    by_key: dict[str, list[Job]] = {}
    for j in jobs:
        by_key.setdefault(j.key("method"), []).append(j)
    for group in by_key.values():
        group.sort(key=lambda j: (rank.get(j.method, len(rank)), j.method_label))
        for a, b in itertools.combinations(group, 2):
            if a.method_label != b.method_label:
                pairs.append((f"{a.method_label}_vs_{b.method_label}", a, b))
    icl: dict[str, list[Job]] = {}
    for j in jobs:
        if j.method == "icl":
            icl.setdefault(j.key(ORDER_KEY), []).append(j)
    for group in icl.values():
        group.sort(key=Job.order_rank)
        for a, b in itertools.combinations(group, 2):
            order_a = demo_order(a)
            if order_a is not None and order_a == demo_order(b):  # the same realised order is no pair
                log.warning("no order pair: %s and %s used the same demo order", a.folder.name, b.folder.name)
                continue
            pairs.append((ORDER_PAIR, a, b))
    return pairs
