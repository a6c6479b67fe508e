"""On a GPU: llama7b with random weights (model.random_init=true), bf16, ICL evaluation throughput and memory, and
the GD ratios of bench_gd_fast.py on it (`gd`: the fast step against the plain loop, the fused Adam step against
the memory floor, trajectory against retraining, a 4-lr grid against one by one). The GD step trains all
parameters when the memory plan says that fits the GPU (weights, float32 masters, Adam state, gradients and the
restore copy: ~120 GB for 7B), else the key/value projections (attn_kv); the choice is in the output.

Nothing is downloaded: the architecture comes from KNOWN_ARCHS (models/loading.py) and, without the Llama
tokenizer here, the bundled SmolLM2 tokenizer is borrowed. Runs the agnews 8-demo prompts through predict()
with the prefix cache and reports prompt tokens per second (every prompt token counted, as the naive way would
run them) and the peak GPU memory. Skipped without CUDA; no test depends on it.

    python -m benchmarks.bench_gpu
"""

from __future__ import annotations

import logging

import torch

from benchmarks.common import compose, icl_inputs, timed

log = logging.getLogger("icl_gd.bench")


def run(n_queries: int = 64, batch_size: int = 16) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine"}
    from icl_gd.methods.predict import predict  # noqa: PLC0415
    from icl_gd.models import load_model  # noqa: PLC0415

    torch.cuda.reset_peak_memory_stats()
    cfg = compose(["model=llama7b", "model.random_init=true", "model.dtype=bfloat16", "model.device=cuda"])
    t_load, lm = timed(lambda: load_model(cfg.model))
    inputs = icl_inputs("agnews", 8, n_queries)
    tokens = sum(len(lm.tokenizer(p).input_ids) for p in inputs.prompts)

    def go(cached: bool):
        out = predict(
            lm.model,
            lm.tokenizer,
            inputs.prompts,
            inputs.answers,
            inputs.label_words,
            10,
            batch_size,
            False,
            prefix_cache=cached,
        )
        torch.cuda.synchronize()
        return out

    go(True)  # warm-up
    t_cached, a = timed(lambda: go(True))
    t_naive, b = timed(lambda: go(False))  # the plain batched forward, for comparison
    out = {
        "device": torch.cuda.get_device_name(0),
        "load_s": t_load,
        "params": sum(p.numel() for p in lm.model.parameters()),
        "tokens_per_s": tokens / t_cached,
        "tokens_per_s_no_prefix_cache": tokens / t_naive,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
        "top1_agree": float((a.topk_ids[:, 0] == b.topk_ids[:, 0]).float().mean()),
    }
    log.info(
        "gpu llama7b random_init: %.0f tokens/s, peak %.1f GiB", out["tokens_per_s"], out["peak_gpu_gib"]
    )
    out["gd"] = gd()  # the same model, from load_model's cache
    return out


GPU_MODEL = ("model=llama7b", "model.random_init=true", "model.dtype=bfloat16", "model.device=cuda")


def gd() -> dict:
    """The GD ratios on the GPU model; each measure on its own, an error recorded instead of stopping the others."""
    from benchmarks import bench_gd_fast as B  # noqa: PLC0415
    from icl_gd import memory_plan  # noqa: PLC0415

    cfg = compose(["method=gd", *GPU_MODEL])
    fits = memory_plan.estimate(cfg, prompt_tokens=256, demo_tokens=32).fits
    params_set = "all" if fits else "attn_kv"
    model = [*GPU_MODEL, f"method.params={params_set}"]
    measures = {
        "gd_step_vs_plain": lambda: B.step(model=model),
        "gd_optimizer_vs_memory_floor": lambda: B.optimizer(model=list(GPU_MODEL), params_set=params_set),
        "gd_trajectory_vs_retrain": lambda: B.trajectory(model=list(GPU_MODEL), params_set=params_set),
        "gd_grid_vs_sequential": lambda: B.grid(model=list(GPU_MODEL)),
    }
    out: dict = {"params": params_set}
    for name, fn in measures.items():
        try:
            out[name] = fn()
        except Exception as e:  # one failing measure (memory) must not hide the others
            out[name] = {"error": f"{type(e).__name__}: {e}"}
        torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(run())
