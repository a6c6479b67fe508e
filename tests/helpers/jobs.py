"""Hand-built finished jobs (no files) for the pairing rules: every realised order counts as different."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icl_gd.sweep.jobs import Job


def hand_job(name: str, method: str = "icl", dataset: str = "d", **cfg: Any) -> Job:
    """A Job at /nowhere/<name> whose config is a minimal language-model job's, with `cfg` on top."""
    base = {
        "model": {"name": "m"},
        "dataset": {"name": dataset},
        "demos": 4,
        "seed": 0,
        "order_seed": None,
        "demo_labels": "original",
        "method": {"name": method},
    }
    return Job(Path("/nowhere") / name, {**base, **cfg})
