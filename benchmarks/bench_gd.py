"""GD job setup: restoring the trained parameters from the in-memory copy versus reloading the model.

A gd job trains the shared model in place; `finetune.restoring` copies the trained parameters before and writes
them back after (what every gd job pays: the copy and the write-back, params=all, the default; the parameters
are changed in between, untimed, so the write-back has work to do). The naive way
gives each job a fresh model: `clear_cache(); load_model(cfg)` in the same process. Two reloads are timed: from
the model's source as it ships (the GGUF file, dequantised: the on-disk cache turned off) and from the
dequantised safetensors cache (models/cache.py; safetensors maps the file, so most of the reading happens later,
when the weights are first used). Each time is the best of `repeats`; after the restore the weights must be
bit-identical to the originals, and the reloaded model's weights equal to them too.

    python -m benchmarks.bench_gd
"""

from __future__ import annotations

import logging
import os

import torch

from benchmarks.common import compose, timed

log = logging.getLogger("icl_gd.bench")


def run(repeats: int = 3) -> dict[str, float]:
    from icl_gd.methods import finetune  # noqa: PLC0415
    from icl_gd.models import cache, clear_cache, load_model  # noqa: PLC0415

    cfg = compose(["method=gd"])
    lm = load_model(cfg.model)
    params = finetune.select_parameters(lm.model, cfg.method)
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}

    def job_setup() -> float:
        """The restore's cost: the copy on entry and the write-back on exit (the training between is not)."""
        ctx = finetune.restoring(params)
        t_enter, _ = timed(ctx.__enter__)
        with torch.no_grad():
            for p in params.values():  # what training does to them, so the write-back has work to do
                p.add_(1.0)
        t_exit, _ = timed(lambda: ctx.__exit__(None, None, None))
        return t_enter + t_exit

    restore = min(job_setup() for _ in range(repeats))
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters()), (
        "restore is not bit-identical"
    )

    def reload(env_value: str | None) -> float:
        old = os.environ.get(cache.CACHE_ENV)
        if env_value is not None:
            os.environ[cache.CACHE_ENV] = env_value
        try:
            clear_cache()
            t, fresh = timed(lambda: load_model(cfg.model))
        finally:
            if env_value is not None:
                if old is None:
                    del os.environ[cache.CACHE_ENV]
                else:
                    os.environ[cache.CACHE_ENV] = old
        same = all(torch.equal(p, before[n]) for n, p in fresh.model.named_parameters())
        assert same, "the reloaded model differs from the original"
        return t

    reload_gguf = reload("off")  # once: it takes ~20 s
    reload_cached = min(reload(None) for _ in range(max(1, repeats - 1)))
    clear_cache()
    load_model(cfg.model)  # leave one model in the process cache for the next benchmark
    out = {
        "ratio": reload_gguf / restore,
        "ratio_vs_cached_reload": reload_cached / restore,
        "restore_s": restore,
        "reload_gguf_s": reload_gguf,
        "reload_cached_s": reload_cached,
        "params_restored": sum(p.numel() for p in params.values()),
    }
    log.info(
        "gd setup: restore %.3fs, reload %.1fs (GGUF) / %.2fs (cache) -> x%.0f / x%.1f",
        restore,
        reload_gguf,
        reload_cached,
        out["ratio"],
        out["ratio_vs_cached_reload"],
    )
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(run())
