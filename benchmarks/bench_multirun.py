"""A 24-job multirun: its wall time against the sum of the jobs' own compute.

One `python run.py -m ...` process (Hydra's basic launcher, SmolLM2, logger=none) runs 24 jobs:
method = zeroshot, icl, gd x dataset = present_past, country_capital x demos = 1, 2 x seed = 0, 1. Each job's
own compute is the `wall_s` in its status.json (from the start of `runner.run` to its end: data, model (loaded
once, by the first job), method, files). The ratio wall / sum(wall_s) is what the sweep costs beyond the jobs:
interpreter start and imports, Hydra's per-job setup, and the comparison at the end of the sweep. The dequantised
model cache is warm (as in any sweep after the first on a machine).

    python -m benchmarks.bench_multirun
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from benchmarks.common import run_child

log = logging.getLogger("icl_gd.bench")

SWEEP = [
    "method=zeroshot,icl,gd",
    "dataset=present_past,country_capital",
    "demos=1,2",
    "seed=0,1",
    "eval.n_queries=20",
    "logger=none",
]


def run(overrides: list[str] | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="icl_gd_sweep_") as tmp:
        wall, usage, out = run_child(
            ["run.py", "-m", *(overrides or SWEEP), f"hydra.sweep.dir={tmp}"], timeout=1800
        )
        statuses = [json.loads(p.read_text()) for p in Path(tmp).glob("*/status.json")]
        done = [s for s in statuses if s.get("status") == "done"]
        if len(done) != len(statuses) or not done:
            raise AssertionError(
                f"{len(statuses) - len(done)} of {len(statuses)} jobs not done:\n{out[-2000:]}"
            )
        compared = (Path(tmp) / "comparison.parquet").exists()
    compute = sum(float(s["wall_s"]) for s in done)
    result = {
        "ratio": wall / compute,
        "wall_s": wall,
        "sum_job_wall_s": compute,
        "jobs": len(done),
        "overhead_s": wall - compute,
        "comparison_written": float(compared),
        "peak_rss_gib": usage["peak_rss_gib"],
    }
    log.info(
        "multirun: %d jobs, wall %.1fs, jobs' own %.1fs -> x%.2f", len(done), wall, compute, result["ratio"]
    )
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(run())
