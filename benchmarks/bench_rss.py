"""Peak resident memory of one SmolLM2 icl job (target < 2 GiB): `python run.py` in its own process.

agnews, 8 demonstrations (~500 shared tokens), `n_queries` queries in batches of eval.batch_size (8, the
default), prefix cache on, logger=none; the peak RSS of that process from os.wait4. The dequantised model cache
is warm (a first load on a machine dequantises the GGUF file and peaks higher; the bench_load entry reports it).

    python -m benchmarks.bench_rss
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from benchmarks.common import run_child

log = logging.getLogger("icl_gd.bench")


def run(n_queries: int = 50) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="icl_gd_job_") as tmp:
        args = [
            "run.py",
            "method=icl",
            "dataset=agnews",
            "demos=8",
            f"eval.n_queries={n_queries}",
            "logger=none",
        ]
        wall, usage, out = run_child([*args, f"hydra.run.dir={tmp}", f"output_dir={tmp}"])
        status = json.loads((Path(tmp) / "status.json").read_text())
        if status.get("status") != "done":
            raise AssertionError(f"the icl job did not finish: {status}\n{out[-2000:]}")
    result = {"peak_rss_gib": usage["peak_rss_gib"], "wall_s": wall, "job_wall_s": status["wall_s"]}
    log.info("icl job (agnews, 8 demos, %d queries): peak RSS %.2f GiB", n_queries, result["peak_rss_gib"])
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(run())
