"""How cost grows: time per job against the number of demos and the model size, peak memory against the demos.

Three sweeps, bounded for a 2-core CPU (the sizes below; `make bench` runs them with the rest):

- **Demos** (SmolLM2, sst2, N = 1, 2, 4, ..., 128, `n_queries` queries): an ICL job's answering time with the
  prefix cache (the demos once, then the queries in batches) and the naive way (a full forward of demos + query
  per query, timed on `n_naive` of them and scaled), and a GD job's time (the fast step, `GD_EPOCHS` epoch of one
  demo a step, then the queries zero-shot; measured up to `GD_MAX_MEASURED` demos, beyond which the per-step
  fit is extrapolated and marked so). Where the prompt would pass the model's context, the ICL points stop.
- **Model size** (random-init architectures of SmolLM2-135M, -360M and -1.7B from their configs, no download):
  an ICL job of 8 demos and a few queries (cached), and one GD step (fast step; all parameters up to 360M, the
  key/value projections at 1.7B, whose all-parameter Adam job the memory plan refuses on this machine).
- **Memory** against N: the peak RSS of the ICL answering pass (the process's high-water mark reset before each
  N through /proc/self/clear_refs; every ICL point runs before any GD job, whose freed optimizer state glibc
  keeps), beside the memory plan's estimate.

The fitted growth is the log-log slope (time ~ N^k) over the measured points; the figure is scaling.png.

    python -m benchmarks.bench_scaling
"""

from __future__ import annotations

import contextlib
import logging
import math
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import compose, icl_inputs, timed

log = logging.getLogger("icl_gd.bench")

HERE = Path(__file__).resolve().parent
FIGURE = HERE / "scaling.png"
DATASET = "sst2"
DEMOS = (1, 2, 4, 8, 16, 32, 64, 128)
GD_EPOCHS = 1
GD_MAX_MEASURED = 8  # GD jobs above this many demos are extrapolated from the per-step fit
SIZES = {  # SmolLM2 configs (config.json of each hub repository), random init
    "135M": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
    },
    "360M": {
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "head_dim": 64,
    },
    "1.7B": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "head_dim": 64,
    },
}
GD_ALL_UP_TO = "360M"  # all-parameter GD in the size sweep up to this size; attn_kv beyond
SIZE_QUERIES = 4
SIZE_DEMOS = 8


def _hwm_reset() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _hwm_gib() -> float:
    try:
        with open("/proc/self/status") as f:
            kib = next(int(x.split()[1]) for x in f if x.startswith("VmHWM:"))
        return kib / 2**20
    except (OSError, StopIteration):
        return math.nan


def _answer(lm, inputs, cached: bool, subset: list[int] | None = None):
    from icl_gd.methods.predict import predict  # noqa: PLC0415

    idx = subset if subset is not None else list(range(len(inputs.prompts)))
    return predict(
        lm.model,
        lm.tokenizer,
        [inputs.prompts[i] for i in idx],
        [inputs.answers[i] for i in idx],
        inputs.label_words,
        10,
        8,
        False,
        prefix_cache=cached,
    )


def _gd_job(lm, cfg, batch, inputs) -> float:
    """Seconds of a gd job's work: train (fast step) then answer the queries zero-shot."""
    from icl_gd.methods import finetune  # noqa: PLC0415

    params = finetune.select_parameters(lm.model, cfg.method)

    def job():
        with finetune.restoring(params):
            finetune.train(lm.model, lm.tokenizer, batch, params, cfg.method, 0)
            zero = icl_inputs(DATASET, 0, len(inputs.prompts))
            _answer(lm, zero, True)

    return timed(job)[0]


def slope(xs: list[float], ys: list[float]) -> float:
    """The log-log slope of y against x (y ~ x^k)."""
    ok = [(x, y) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0 and math.isfinite(y)]
    if len(ok) < 2:
        return math.nan
    lx, ly = np.log([x for x, _ in ok]), np.log([y for _, y in ok])
    return float(np.polyfit(lx, ly, 1)[0])


def demos_sweep(n_queries: int = 8, n_naive: int = 1) -> dict:
    from benchmarks.common import gd_batch  # noqa: PLC0415
    from icl_gd import memory_plan  # noqa: PLC0415
    from icl_gd.methods.fast_step import AnswerLoss  # noqa: F401, PLC0415 -- the fast step is what GD times
    from icl_gd.models import load_model  # noqa: PLC0415
    from icl_gd.models.anatomy import context_length  # noqa: PLC0415

    cfg = compose([f"dataset={DATASET}", "method=gd", f"method.epochs={GD_EPOCHS}"])
    lm = load_model(cfg.model)
    context = context_length(lm.model)
    arch = memory_plan.architecture(lm.model.config)
    rows = []
    for n in DEMOS:
        inputs = icl_inputs(DATASET, n, n_queries)
        tokens = max(len(lm.tokenizer(p).input_ids) for p in inputs.prompts)
        row: dict = {"demos": n, "prompt_tokens": tokens, "fits_context": tokens <= context}
        if tokens <= context:
            _hwm_reset()
            row["icl_cached_s"], _ = timed(partial(_answer, lm, inputs, True))
            row["icl_peak_rss_gib"] = _hwm_gib()
            picks = [round(i * (n_queries - 1) / max(1, n_naive - 1)) for i in range(n_naive)]
            t_naive, _ = timed(partial(_answer, lm, inputs, False, picks))
            row["icl_naive_s"] = t_naive / n_naive * n_queries
            icl_cfg = compose([f"dataset={DATASET}", "method=icl", f"demos={n}"])
            row["icl_planned_gib"] = memory_plan.estimate(icl_cfg, tokens, 0, arch).total / memory_plan.GIB
        rows.append(row)
        log.info(
            "scaling N=%d: %s", n, {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
        )
    # GD after every ICL point: a GD job's freed optimizer state must not lift ICL's memory curve
    for row in rows:
        if row["demos"] <= GD_MAX_MEASURED:
            batch = gd_batch(DATASET, row["demos"], tokenizer=lm.tokenizer)
            row["gd_s"] = _gd_job(lm, cfg, batch, icl_inputs(DATASET, row["demos"], n_queries))
            log.info("scaling GD N=%d: %.1f s", row["demos"], row["gd_s"])
    measured = [r for r in rows if "gd_s" in r]
    per_demo = np.polyfit([r["demos"] for r in measured], [r["gd_s"] for r in measured], 1)  # s = a N + b
    for r in rows:
        if "gd_s" not in r:
            r["gd_s_extrapolated"] = float(np.polyval(per_demo, r["demos"]))
    fit = [r for r in rows if "icl_cached_s" in r]
    return {
        "rows": rows,
        "context_tokens": context,
        "context_ends_at_demos": next((r["demos"] for r in rows if not r["fits_context"]), None),
        "slope_icl_cached": slope([r["demos"] for r in fit], [r["icl_cached_s"] for r in fit]),
        "slope_icl_naive": slope([r["demos"] for r in fit], [r["icl_naive_s"] for r in fit]),
        "slope_gd": slope([r["demos"] for r in measured], [r["gd_s"] for r in measured]),
        "slope_icl_peak_rss": slope([r["demos"] for r in fit], [r["icl_peak_rss_gib"] for r in fit]),
        "gd_s_per_demo_epoch": float(per_demo[0]),
        "queries": n_queries,
        "naive_queries_measured": n_naive,
        "dataset": DATASET,
        "gd_epochs": GD_EPOCHS,
        "gd_max_measured": GD_MAX_MEASURED,
    }


def sizes_sweep() -> dict:
    from benchmarks.common import gd_batch  # noqa: PLC0415
    from icl_gd.methods import finetune  # noqa: PLC0415
    from icl_gd.models import clear_cache, load_model  # noqa: PLC0415

    rows = []
    for name, arch in SIZES.items():
        over = ["model=tiny_random", "model.name=smollm2_" + name.lower().replace(".", "_")]
        over.append(
            "model.arch={" + ",".join(f"{k}:{v}" for k, v in arch.items()) + "}"
        )  # merged over tiny's
        params_set = "all" if list(SIZES).index(name) <= list(SIZES).index(GD_ALL_UP_TO) else "attn_kv"
        cfg = compose([f"dataset={DATASET}", "method=gd", f"method.params={params_set}", *over])
        clear_cache()
        t_load, lm = timed(partial(load_model, cfg.model))
        n = sum(p.numel() for p in lm.model.parameters())
        inputs = icl_inputs(DATASET, SIZE_DEMOS, SIZE_QUERIES)
        _answer(lm, inputs, True, [0, 1])  # warm-up
        t_icl, _ = timed(partial(_answer, lm, inputs, True))
        batch = gd_batch(DATASET, 2, tokenizer=lm.tokenizer)
        params = finetune.select_parameters(lm.model, cfg.method)
        with finetune.restoring(params):
            finetune.train(lm.model, lm.tokenizer, batch, params, cfg.method, 0, steps=1)  # warm-up
            t_gd, _ = timed(
                partial(finetune.train, lm.model, lm.tokenizer, batch, params, cfg.method, 0, steps=2)
            )
        row = {
            "size": name,
            "params": n,
            "load_s": t_load,
            "icl_job_s": t_icl,
            "gd_params": params_set,
            "gd_2_steps_s": t_gd,
        }
        rows.append(row)
        log.info("scaling size %s: %s", name, row)
        lm = params = None  # free the model before the next size
        clear_cache()
    return {
        "rows": rows,
        "slope_icl_vs_params": slope([r["params"] for r in rows], [r["icl_job_s"] for r in rows]),
        "queries": SIZE_QUERIES,
        "demos": SIZE_DEMOS,
    }


def figure(demos: dict, sizes: dict, path: Path = FIGURE) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 3, figsize=(14.4, 4.0))
    rows = demos["rows"]
    ax = axes[0]
    for key, label, style in (
        ("icl_cached_s", "ICL, prefix cache", "o-"),
        ("icl_naive_s", "ICL, naive", "s-"),
        ("gd_s", f"GD ({demos['gd_epochs']} epoch, fast step)", "^-"),
    ):
        pts = [(r["demos"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*pts, strict=True), style, label=label)
    ext = [(r["demos"], r["gd_s_extrapolated"]) for r in rows if "gd_s_extrapolated" in r]
    if ext:
        last = [(r["demos"], r["gd_s"]) for r in rows if "gd_s" in r][-1:]
        ax.plot(
            *zip(*(last + ext), strict=True), "^:", color=ax.lines[-1].get_color(), label="GD, extrapolated"
        )
    if demos.get("context_ends_at_demos"):
        ax.axvline(demos["context_ends_at_demos"], color="grey", ls="--", lw=1)
        ax.text(demos["context_ends_at_demos"], ax.get_ylim()[0], " context ends", color="grey", va="bottom")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="demonstrations N",
        ylabel=f"seconds per job ({demos['queries']} queries)",
        title=f"Time per job vs N (SmolLM2, {demos['dataset']})",
    )
    ax.set_xticks(list(DEMOS), [str(d) for d in DEMOS])
    ax.legend(fontsize=8)
    ax = axes[1]
    srows = sizes["rows"]
    x = [r["params"] / 1e6 for r in srows]
    ax.plot(
        x,
        [r["icl_job_s"] for r in srows],
        "o-",
        label=f"ICL job ({sizes['demos']} demos, {sizes['queries']} q)",
    )
    ax.plot(
        x,
        [r["gd_2_steps_s"] for r in srows],
        "^-",
        label="GD, 2 steps (" + "/".join(r["gd_params"] for r in srows) + ")",
    )
    for r, xi in zip(srows, x, strict=True):
        ax.annotate(r["size"], (xi, r["icl_job_s"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="parameters (M), random init",
        ylabel="seconds",
        title="Time vs model size (SmolLM2 architectures)",
    )
    ax.legend(fontsize=8)
    ax = axes[2]
    pts = [(r["demos"], r["icl_peak_rss_gib"], r["icl_planned_gib"]) for r in rows if "icl_peak_rss_gib" in r]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="ICL peak RSS (measured)")
    ax.plot([p[0] for p in pts], [p[2] for p in pts], "x--", label="memory plan estimate")
    ax.set(xscale="log", xlabel="demonstrations N", ylabel="GiB", title="Peak memory vs N (ICL, SmolLM2)")
    ax.set_xticks(list(DEMOS), [str(d) for d in DEMOS])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def run() -> dict:
    torch.manual_seed(0)
    t_demos, demos = timed(demos_sweep)
    t_sizes, sizes = timed(sizes_sweep)
    path = figure(demos, sizes)
    return {
        "demos": demos,
        "sizes": sizes,
        "figure": str(path.relative_to(HERE)),
        "demos_s": t_demos,
        "sizes_s": t_sizes,
    }


if __name__ == "__main__":
    import json  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = run()
    print(json.dumps(out, indent=1, default=str)[:4000])
