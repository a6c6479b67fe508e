"""`make bench`: every performance measure against the naive way, in one run, on this machine.

Writes benchmarks/results.json ({"machine": {...}, "ratios": {NAME: number}, "details": {NAME: {...}}, ...})
after each measure, and the table in benchmarks/README.md at the end. Each measure checks that both ways give
the same outputs and raises if not. Sizes are chosen so the whole run takes ~5-15 minutes on 2 CPU cores.

    python -m benchmarks.run                       # everything
    python -m benchmarks.run --only icl_prefix_cache_8_demos,gd_restore_vs_reload   # some, merged into results
    python -m benchmarks.run --full                # the naive ICL way on every query instead of a subset
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, compose, machine, machine_line, timed

log = logging.getLogger("icl_gd.bench")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
README = HERE / "README.md"

# name: (target, direction, what it measures)
MEASURES: dict[str, tuple[float | None, str | None, str]] = {
    "icl_prefix_cache_8_demos": (
        5,
        ">=",
        "ICL eval, prefix KV cache + batches of 8 vs naive per-query full forward (SmolLM2, agnews, 8 demos, "
        "200 queries)",
    ),
    "icl_prefix_cache_32_demos": (
        None,
        None,
        "the same at 32 demos (reported; grows with the prefix length)",
    ),
    "gd_restore_vs_reload": (
        20,
        ">=",
        "GD job setup: in-memory restore vs reloading the model (GGUF) from disk",
    ),
    "model_load_dequant_cache": (5, ">=", "second-process model load: dequantised safetensors cache vs GGUF"),
    "multirun_wall_vs_compute": (1.3, "<=", "24-job multirun wall time / sum of the jobs' own wall_s"),
    "linreg_batched_vs_loop": (4, ">=", "regression lab: batched seeds and tasks vs a Python loop"),
    "forward_flops_fraction": (None, None, "forward FLOP/s / measured matmul FLOP/s (reported; aim >= 0.5)"),
    "peak_rss_gib_icl_job": (2, "<=", "peak resident memory of a SmolLM2 icl job, GiB"),
    "gd_step_vs_plain": (
        2,
        ">=",
        "GD training (SmolLM2, present_past 8 demos, gd defaults): plain loop (Adam default, .item() a step) vs the "
        "fast step (methods/fast_step.py), same weights",
    ),
    "gd_optimizer_vs_memory_floor": (
        2.5,
        "<=",
        "one fused Adam step over SmolLM2's parameters / streaming params, grads and moments once at copy bandwidth",
    ),
    "gd_trajectory_vs_retrain": (
        3,
        ">=",
        "the model at 4 steps (gd_search's scoring): 4 plain trainings vs one fast training scored along the way",
    ),
    "gd_grid_vs_sequential": (
        2,
        ">=",
        "4 learning rates (attn_kv): one by one (fast step) vs trained together on stacked copies, same weights",
    ),
}


def _lm():
    from icl_gd.models import load_model  # noqa: PLC0415

    return load_model(compose([]).model)


def _icl(n_demos: int, n_naive: int | None) -> Callable[[], dict]:
    def measure() -> dict:
        from benchmarks.bench_icl import IclBench  # noqa: PLC0415
        from benchmarks.bench_icl import run as icl_run  # noqa: PLC0415

        return icl_run(_lm(), IclBench(n_demos, n_queries=200, n_naive=n_naive))

    return measure


def _gd() -> dict:
    from benchmarks.bench_gd import run as gd_run  # noqa: PLC0415

    return gd_run()


def _load() -> dict:
    from benchmarks.bench_load import run as load_run  # noqa: PLC0415

    return load_run()


def _multirun() -> dict:
    from benchmarks.bench_multirun import run as multirun_run  # noqa: PLC0415

    return multirun_run()


def _flops() -> dict:
    from benchmarks.bench_flops import run as flops_run  # noqa: PLC0415

    return flops_run(_lm())


def _rss() -> dict:
    from benchmarks.bench_rss import run as rss_run  # noqa: PLC0415

    out = rss_run()
    return {"ratio": out["peak_rss_gib"], **out}


def _linreg() -> dict:
    if importlib.util.find_spec("benchmarks.bench_linreg") is None:
        return {"skipped": "benchmarks/bench_linreg.py is not there"}
    from benchmarks import bench_linreg  # noqa: PLC0415

    out = bench_linreg.run()
    return {"ratio": out["linreg_batched_vs_loop"], **out}


def _gd_fast(name: str) -> Callable[[], dict]:
    def measure() -> dict:
        from benchmarks import bench_gd_fast  # noqa: PLC0415

        return bench_gd_fast.MEASURES[name]()

    return measure


def _scaling() -> dict:
    from benchmarks import bench_scaling  # noqa: PLC0415

    return bench_scaling.run()


def _gpu() -> dict:
    from benchmarks.bench_gpu import run as gpu_run  # noqa: PLC0415

    return gpu_run()


def plan(full: bool) -> dict[str, Callable[[], dict]]:
    """In order: the in-process measures share one loaded model; the child processes come last."""
    return {
        "icl_prefix_cache_8_demos": _icl(8, None if full else 50),
        "icl_prefix_cache_32_demos": _icl(32, None if full else 12),
        "gd_restore_vs_reload": _gd,
        "forward_flops_fraction": _flops,
        "linreg_batched_vs_loop": _linreg,
        "model_load_dequant_cache": _load,
        "gd_step_vs_plain": _gd_fast("step"),
        "gd_optimizer_vs_memory_floor": _gd_fast("optimizer"),
        "gd_trajectory_vs_retrain": _gd_fast("trajectory"),
        "gd_grid_vs_sequential": _gd_fast("grid"),
        "scaling": _scaling,  # curves and figure (details only)
        "peak_rss_gib_icl_job": _rss,
        "multirun_wall_vs_compute": _multirun,
        "gpu_llama7b_random_init": _gpu,  # details only; skipped without CUDA
    }


def _load_results() -> dict[str, Any]:
    try:
        return json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        return {}


def _write(results: dict[str, Any]) -> None:
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, RESULTS)


def _met(name: str, value: float | None) -> str:
    target, direction, _ = MEASURES.get(name, (None, None, ""))
    if value is None:
        return "missing"
    if target is None:
        return "reported"
    ok = value >= target if direction == ">=" else value <= target
    return "yes" if ok else "**no**"


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def write_readme(results: dict[str, Any]) -> None:
    m = results.get("machine", {})
    ratios = results.get("ratios", {})
    details = results.get("details", {})
    rows = []
    for name, (target, direction, what) in MEASURES.items():
        t = f"{direction} {target}" if target is not None else "report"
        rows.append(
            f"| `{name}` | {what} | **{_fmt(ratios.get(name))}** | {t} | {_met(name, ratios.get(name))} |"
        )
    d = details
    notes = []
    if "icl_prefix_cache_8_demos" in d:
        x = d["icl_prefix_cache_8_demos"]
        notes.append(
            f"- ICL, 8 demos: prefix {x['prefix_tokens']} tokens of ~{x['mean_prompt_tokens']:.0f} per prompt; cached "
            f"{x['cached_s']:.1f} s for {x['queries']} queries; naive {x['naive_s_per_query']:.2f} s per query, "
            f"measured on {x['naive_queries_measured']} queries and scaled to {x['queries']}; max |d log p| "
            f"{x['max_abs_dlogp']:.1e}."
        )
    if "icl_prefix_cache_32_demos" in d:
        x = d["icl_prefix_cache_32_demos"]
        notes.append(
            f"- ICL, 32 demos: prefix {x['prefix_tokens']} tokens; cached {x['cached_s']:.1f} s for {x['queries']} "
            f"queries; naive {x['naive_s_per_query']:.2f} s per query ({x['naive_queries_measured']} measured); "
            f"max |d log p| {x['max_abs_dlogp']:.1e}."
        )
    if "gd_restore_vs_reload" in d:
        x = d["gd_restore_vs_reload"]
        notes.append(
            f"- GD setup: restore {x['restore_s']:.3f} s ({x['params_restored'] / 1e6:.0f}M parameters copied and "
            f"written back); reload {x['reload_gguf_s']:.1f} s from the GGUF file, {x['reload_cached_s']:.2f} s from "
            f"the dequantised cache (x{x['ratio_vs_cached_reload']:.1f}; that file is mapped lazily, so most of its "
            "reading happens later, when the weights are first used)."
        )
    if "model_load_dequant_cache" in d:
        x = d["model_load_dequant_cache"]
        notes.append(
            f"- Model load in a new process: {x['load_gguf_s']:.1f} s from GGUF vs {x['load_cached_s']:.2f} s from "
            f"the cache (`load_model` call, transformers imported first); whole process {x['process_wall_gguf_s']:.1f}"
            f" s vs {x['process_wall_cached_s']:.1f} s (x{x['ratio_process_wall']:.1f})."
        )
    if "multirun_wall_vs_compute" in d:
        x = d["multirun_wall_vs_compute"]
        notes.append(
            f"- Multirun: {x['jobs']} jobs, wall {x['wall_s']:.0f} s, jobs' own {x['sum_job_wall_s']:.0f} s "
            f"(overhead {x['overhead_s']:.1f} s: interpreter, imports, Hydra, the comparison)."
        )
    if "forward_flops_fraction" in d:
        x = d["forward_flops_fraction"]
        notes.append(
            f"- FLOPs: forward {x['forward_gflops']:.0f} GFLOP/s on {x['tokens']} tokens vs matmul "
            f"{x['matmul_gflops']:.0f} GFLOP/s."
        )
    if "peak_rss_gib_icl_job" in d:
        x = d["peak_rss_gib_icl_job"]
        notes.append(
            f"- ICL job (agnews, 8 demos, 50 queries): peak RSS {x['peak_rss_gib']:.2f} GiB, {x['wall_s']:.0f} s."
        )
    notes += _gd_notes(d)
    gpu = d.get("gpu_llama7b_random_init", {})
    if gpu and "skipped" not in gpu:
        notes.append(
            f"- GPU, llama7b random_init bf16: {gpu.get('tokens_per_s', 0):.0f} tokens/s, peak GPU memory "
            f"{gpu.get('peak_gpu_gib', 0):.1f} GiB ({gpu.get('device')})."
        )
    else:
        notes.append(f"- GPU run (llama7b, random_init, bf16): {gpu.get('skipped', 'not run')}.")
    text = f"""# Benchmarks

`make bench` (`python -m benchmarks.run`) measures each optimisation against the naive way in the same run,
checks that both give the same outputs, and writes `results.json`. Ratios, not seconds, are what carry over
between machines. Written by `benchmarks/run.py`; do not edit by hand.

Machine: {machine_line(m) if m else "-"}; run took {results.get("elapsed_s", 0):.0f} s.

| name | measure | value | target | met |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

{chr(10).join(notes)}

Sizes: the ICL measures run the cached way on all 200 queries and the naive way on an evenly spaced subset
(50 queries at 8 demos, 12 at 32), scaled per query to 200; `--full` runs the naive way on all 200 (about
10 more minutes here). The multirun uses demos 1 and 2 with 20 queries per job so that its 24 jobs fit in about a
minute. Scripts: `bench_icl.py`, `bench_gd.py`, `bench_load.py`, `bench_multirun.py`, `bench_flops.py`,
`bench_rss.py`, `bench_linreg.py`, `bench_gd_fast.py`, `bench_scaling.py`, `bench_gpu.py`; each runs alone with
`python -m benchmarks.<name>`.

The calibrated comparison narrowed for a CPU (`experiment=calibrated dataset=present_past demos=4 seed=0,1
eval.n_queries=8 eval.n_select=8 search.optimizer=[sgd,adam] search.lr=[1e-3] search.params=[attn_kv]
search.eval_at=[1,2,4]`, SmolLM2): 68 s for its 16 jobs on a quiet machine (2026-12-02); the other-task control
added since makes it 20 jobs (two more gd_search), which at load 9 here did not finish in 660 s (2026-12-03).
{_scaling_section(d.get("scaling", {}))}"""
    README.write_text(text)


def _gd_notes(d: dict[str, Any]) -> list[str]:
    """The README lines of the GD measures (bench_gd_fast.py)."""
    notes = []
    x = d.get("gd_step_vs_plain", {})
    if "plain_s" in x:
        notes.append(
            f"- GD step: {x['steps']} steps of the gd defaults (Adam, all {x['params'] / 1e6:.0f}M parameters, one demo "
            f"a step, clip 1.0) in {x['plain_s']:.1f} s plain ({x['plain_s_per_step']:.2f} s a step) vs "
            f"{x['fast_s']:.1f} s fast ({x['fast_s_per_step']:.2f} s a step); max |d w| {x['max_abs_dweight']:.1e}. "
            "Untied embedding rows no demo touches keep a zero gradient and zero Adam state, so their update is "
            "exactly zero both ways (weight_decay 0); the fused kernel still streams them."
        )
    x = d.get("gd_optimizer_vs_memory_floor", {})
    if "fused_step_s" in x:
        notes.append(
            f"- Adam step over {x['params'] / 1e6:.0f}M parameters: fused {x['fused_step_s']:.3f} s, default "
            f"{x['default_step_s']:.3f} s; streaming 28 bytes a parameter once at the measured copy bandwidth "
            f"({x['copy_gb_per_s']:.1f} GB/s) takes {x['floor_s']:.3f} s."
        )
    x = d.get("gd_trajectory_vs_retrain", {})
    if "trajectory_s" in x:
        notes.append(
            f"- Trajectory (eval_at {x['eval_at']}, full batch, {x['selection_queries']} selection queries a point): "
            f"4 plain trainings {x['retrain_plain_s']:.1f} s, 4 fast {x['retrain_fast_s']:.1f} s, one fast training "
            f"scored along the way {x['trajectory_s']:.1f} s (x{x['ratio_same_step']:.2f} from the trajectory "
            f"alone, the rest from the fast step); max |d log p| {x['max_abs_dlogp_vs_plain']:.1e}."
        )
    x = d.get("gd_grid_vs_sequential", {})
    if "grid_s" in x:
        notes.append(
            f"- Grid: lrs {x['lrs']} on {x['params']}, {x['steps']} full-batch steps: one by one (fast step) "
            f"{x['sequential_s']:.1f} s, together {x['grid_s']:.1f} s; max |d w| {x['max_abs_dweight']:.1e}."
        )
    return notes


def _scaling_section(x: dict[str, Any]) -> str:
    """The scaling curves' figure and table (bench_scaling.py), or a line saying they were not run."""
    if "demos" not in x:
        return "\n## Scaling: how cost grows\n\nNot run yet (`python -m benchmarks.run --only scaling`).\n"
    dm, sz = x["demos"], x["sizes"]

    def cell(r: dict, k: str) -> str:
        if k in r:
            return _fmt(r[k])
        return f"({_fmt(r[k + '_extrapolated'])})" if k + "_extrapolated" in r else "-"

    rows = "\n".join(
        f"| {r['demos']} | {r['prompt_tokens']} | {cell(r, 'icl_cached_s')} | {cell(r, 'icl_naive_s')} | "
        f"{cell(r, 'gd_s')} | {cell(r, 'icl_peak_rss_gib')} | {cell(r, 'icl_planned_gib')} |"
        for r in dm["rows"]
    )
    sizes = "\n".join(
        f"| {r['size']} | {r['params'] / 1e6:.0f}M | {_fmt(r['load_s'])} | {_fmt(r['icl_job_s'])} | "
        f"{_fmt(r['gd_2_steps_s'])} ({r['gd_params']}) |"
        for r in sz["rows"]
    )
    ends = dm.get("context_ends_at_demos")
    first, last = dm["rows"][0], dm["rows"][-1]
    per_demo = (last["prompt_tokens"] - first["prompt_tokens"]) / max(1, last["demos"] - first["demos"])
    at = (dm["context_tokens"] - first["prompt_tokens"]) / per_demo + first["demos"]
    where = (
        f"the prompt passes the model's context ({dm['context_tokens']} tokens) at N = {ends}"
        if ends
        else f"every N up to {last['demos']} fits the model's context ({dm['context_tokens']} tokens); at "
        f"{per_demo:.0f} tokens a demo it ends near N = {at:.0f}"
    )
    return f"""
## Scaling: how cost grows

![scaling curves: time and memory against demos and model size](scaling.png)

`bench_scaling.py` ({x.get("demos_s", 0) + x.get("sizes_s", 0):.0f} s here). SmolLM2 on {dm["dataset"]},
{dm["queries"]} queries a job (the naive way timed on {dm["naive_queries_measured"]} and scaled); GD: the fast step,
{dm["gd_epochs"]} epoch of one demo a step then the queries zero-shot, measured up to N = {dm.get("gd_max_measured")}
(beyond: the per-demo fit, in parentheses). Peak RSS: the answering pass's high-water mark, beside the memory plan.

Fitted growth (log-log slope, time ~ N^k): ICL cached k = {dm["slope_icl_cached"]:.2f}, ICL naive
k = {dm["slope_icl_naive"]:.2f}, GD k = {dm["slope_gd"]:.2f} ({dm["gd_s_per_demo_epoch"]:.2f} s per demo and epoch),
ICL peak RSS k = {dm["slope_icl_peak_rss"]:.2f}. Expected: the cached way pays the prefix once (~ linear in
the prefix length, plus the queries' attention to it: k <= 1), the naive way pays it per query (~ queries x
prefix, k >= 1 as each forward grows with its length); GD is linear in N (one step a demo, k ~ 1) on top of the
fixed cost of answering the queries. {where[0].upper() + where[1:]}.

| N | prompt tokens | ICL cached s | ICL naive s | GD s | ICL peak RSS GiB | planned GiB |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

Model size (random-init SmolLM2 architectures, {sz["demos"]} demos, {sz["queries"]} queries; ICL time ~
params^{sz["slope_icl_vs_params"]:.2f}):

| size | parameters | load s | ICL job s | GD 2 steps s |
| --- | --- | --- | --- | --- |
{sizes}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated measure names (merged into results.json)")
    parser.add_argument("--full", action="store_true", help="naive ICL way on every query")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "transformers", "icl_gd.models.loading", "icl_gd.models.cache"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.chdir(ROOT)
    todo = plan(args.full)
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in todo]
    if unknown:
        parser.error(f"unknown measure(s) {unknown}; choose from {list(todo)}")
    results = _load_results() if only else {}
    results["machine"] = machine()
    print("machine:", machine_line(results["machine"]), flush=True)
    results.setdefault("ratios", {})
    results.setdefault("details", {})
    results["targets"] = {k: {"target": t, "direction": d} for k, (t, d, _) in MEASURES.items()}
    started = time.perf_counter()
    failed = []
    for name, measure in todo.items():
        if only and name not in only:
            continue
        log.info("== %s", name)
        try:
            seconds, out = timed(measure)
        except Exception as e:  # one broken measure must not hide the others
            log.exception("%s failed", name)
            results["details"][name] = {"error": f"{type(e).__name__}: {e}"}
            results["ratios"].pop(name, None)
            failed.append(name)
            continue
        out["bench_s"] = seconds
        results["details"][name] = out
        if "ratio" in out and name in MEASURES:
            results["ratios"][name] = round(float(out["ratio"]), 4)
        results["elapsed_s"] = time.perf_counter() - started
        _write(results)
    results["machine"]["load_avg_1m_end"] = (
        round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    )
    results["elapsed_s"] = time.perf_counter() - started
    _write(results)
    write_readme(results)
    print("\nmachine:", machine_line(results["machine"]))
    for name in MEASURES:
        v = results["ratios"].get(name)
        print(f"  {name:28s} {_fmt(v):>8s}  {_met(name, v)}")
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
