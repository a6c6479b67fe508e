"""Model load in a new process: from the dequantised safetensors cache versus from the GGUF file.

Each measure is a fresh Python process that loads the default model (SmolLM2) with `load_model` and reports the
time of that call, after importing the transformers modules both ways use (about 2.5 s here, the same with or
without the cache); the process's whole wall time (imports included) is reported beside it. Without the cache
(ICL_GD_CACHE=off) the GGUF file is dequantised and its tokenizer converted, as every process did before; with
it, a second process reads what the first one wrote. The cache folder is a fresh temporary one, filled by a
first process (its time is reported: dequantising + writing). Both loads must give the same weights (a checksum
printed by each child).

    python -m benchmarks.bench_load
"""

from __future__ import annotations

import json
import logging
import tempfile

from benchmarks.common import run_child

log = logging.getLogger("icl_gd.bench")

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import torch
from hydra import compose, initialize_config_dir
from icl_gd.models import load_model
with initialize_config_dir(version_base="1.3", config_dir=sys.argv[1]):
    cfg = compose(config_name="config", overrides=["output_dir=/tmp/icl_gd_bench"])
# the library code both ways run, imported first: its import time is the same either way and is not loading
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
import transformers.core_model_loading
t1 = time.perf_counter()
lm = load_model(cfg.model)
t2 = time.perf_counter()
ids = torch.tensor([lm.tokenizer("input: Stocks fell.\\ntype:").input_ids])
with torch.no_grad():
    s = float(sum(p.double().sum() for p in lm.model.parameters())) + float(lm.model(input_ids=ids).logits.sum())
print("RESULT " + json.dumps({"load_s": t2 - t1, "setup_s": t1 - t0, "checksum": s, "ids": ids.tolist()}))
"""


def _child(env: dict[str, str]) -> dict:
    from benchmarks.common import ROOT  # noqa: PLC0415

    wall, usage, out = run_child(["-c", CHILD, str(ROOT / "conf")], env=env)
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return {**json.loads(line[len("RESULT ") :]), "wall_s": wall, **usage}


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="icl_gd_cache_") as tmp:
        plain = _child({"ICL_GD_CACHE": "off"})
        first = _child({"ICL_GD_CACHE": tmp})  # dequantises and writes the cache
        second = _child({"ICL_GD_CACHE": tmp})  # the measure: a later process
    if plain["ids"] != second["ids"] or abs(plain["checksum"] - second["checksum"]) > 1e-6 * abs(
        plain["checksum"]
    ):
        raise AssertionError(f"cached load differs: {plain['checksum']} vs {second['checksum']}")
    out = {
        "ratio": plain["load_s"] / second["load_s"],
        "ratio_process_wall": plain["wall_s"] / second["wall_s"],
        "load_gguf_s": plain["load_s"],
        "load_cached_s": second["load_s"],
        "first_load_writing_cache_s": first["load_s"],
        "process_wall_gguf_s": plain["wall_s"],
        "process_wall_cached_s": second["wall_s"],
        "peak_rss_gib_gguf": plain["peak_rss_gib"],
        "peak_rss_gib_cached": second["peak_rss_gib"],
    }
    log.info(
        "model load: GGUF %.1fs, cached %.2fs -> x%.1f (process wall %.1fs vs %.1fs)",
        out["load_gguf_s"],
        out["load_cached_s"],
        out["ratio"],
        out["process_wall_gguf_s"],
        out["process_wall_cached_s"],
    )
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(run())
