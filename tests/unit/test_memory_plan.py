"""The memory plan: the parameter count of an architecture on the meta device, the estimate's arithmetic, a refusal
that names the estimate and the cheaper options, and the estimate against the peak RSS of real jobs here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from icl_gd import memory_plan as M
from icl_gd.runner import run
from tests.helpers.config import compose_config

LLAMA7B_PARAMS = 6_738_415_616  # huggyllama/llama-7b, as its model card counts it
RSS_TOL = 0.30  # the estimate within 30% of the measured peak RSS


def cfg_of(*overrides: str):
    return compose_config(["output_dir=/tmp/x", "logger=none", *overrides])


def llama7b_arithmetic() -> int:
    """LLaMA-7B's parameters by hand: untied embedding and unembedding, 32 layers of attention + SwiGLU MLP + 2
    RMSNorms, a final norm."""
    h, inter, layers, vocab = 4096, 11008, 32, 32000
    per_layer = 4 * h * h + 3 * h * inter + 2 * h
    return 2 * vocab * h + layers * per_layer + h


def test_a_7b_architecture_is_counted_on_the_meta_device_as_the_arithmetic_says() -> None:
    cfg = cfg_of("model=llama7b", "model.random_init=true", "model.device=cpu", "method=gd", "demos=4")
    arch = M.architecture(M._arch_config(cfg.model))  # meta device: no 13 GB allocated
    assert arch.params == llama7b_arithmetic() == LLAMA7B_PARAMS
    assert arch.kv_params == 32 * 2 * 4096 * 4096 and arch.layer_v_params == 4096 * 4096
    n, bf16, f32 = arch.params, 2, 4
    est = M.estimate(cfg, prompt_tokens=512, demo_tokens=32, arch=arch)
    assert est.parts["weights"] == n * bf16
    assert est.parts["gradients"] == n * bf16
    assert est.parts["optimizer_state"] == 2 * n * f32  # Adam's two moments, float32 as the masters are
    assert est.parts["master_weights"] == n * f32
    assert est.parts["restore_copy"] == n * bf16
    assert est.parts["kv_cache"] == 2 * 32 * 32 * 128 * 512 * int(cfg.eval.batch_size) * bf16
    icl = M.estimate(
        cfg_of("model=llama7b", "model.random_init=true", "model.device=cpu", "method=icl"), 512, 32, arch
    )
    assert "gradients" not in icl.parts and icl.total < est.total / 5
    sgd = M.estimate(M._with(cfg, "method.optimizer=sgd"), 512, 32, arch)
    assert sgd.parts["optimizer_state"] == 0
    kv = M.estimate(M._with(cfg, "method.params=attn_kv"), 512, 32, arch)
    assert kv.parts["gradients"] == arch.kv_params * bf16


def test_a_job_that_cannot_fit_is_refused_with_its_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cfg_of("model=llama7b", "model.random_init=true", "model.device=cpu", "method=gd", "demos=4")
    monkeypatch.setattr(M, "available_bytes", lambda model: 64 * M.GIB)
    est = M.estimate(cfg, 512, 32)
    with pytest.raises(M.MemoryPlanError) as e:
        M.check(cfg, 512, 32)
    message = str(e.value)
    assert f"~{est.total / M.GIB:.2f} GiB" in message and "64.0 GiB" in message
    for option in ("method.optimizer=sgd", "method.params=attn_kv", "method=lora", "eval.batch_size="):
        assert option in message
    assert "memory_check=false" in message
    assert M.check(
        cfg_of("model=llama7b", "model.random_init=true", "model.device=cpu", "method=icl"), 512, 32
    )


def test_the_runner_refuses_before_loading_and_memory_check_false_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(M, "available_bytes", lambda model: M.GIB // 4)  # below any job's baseline
    monkeypatch.setattr("icl_gd.runner.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    base = ["debug=smoke", "method=gd", "logger=none"]
    assert run(compose_config([*base, f"output_dir={tmp_path / 'a'}"])) == {}
    status = json.loads((tmp_path / "a" / "status.json").read_text())
    assert status["status"] == "failed" and status["error_type"] == "MemoryPlanError"
    assert re.search(r"needs ~[\d.]+ GiB", status["error"]) and "0.2 GiB" in status["error"]
    monkeypatch.undo()
    assert run(compose_config([*base, "memory_check=false", f"output_dir={tmp_path / 'b'}"]))


def _job_peak(tmp_path: Path, overrides: list[str]) -> tuple[float, float]:
    """(the job's own estimate, its peak RSS), both GiB, of `python run.py <overrides>` in a fresh process."""
    from benchmarks.common import run_child  # noqa: PLC0415

    verbose = "hydra.verbose=icl_gd.memory_plan"  # the plan is a debug line
    _, rss, out = run_child(["run.py", "logger=none", verbose, f"hydra.run.dir={tmp_path}", *overrides])
    found = re.search(r"memory plan: ~([\d.]+) GiB", out)
    assert found, out[-2000:]
    return float(found.group(1)), rss["peak_rss_gib"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["method=icl", "demos=8", "eval.n_queries=20"],  # SmolLM2, weights + KV cache
        ["method=gd", "demos=4", "method.epochs=1", "eval.n_queries=10"],  # + gradients, Adam, restore copy
        ["method=gd", "demos=4", "method.epochs=1", "method.params=attn_kv", "eval.n_queries=10"],
        # the tiny model: a process of ~0.55 GiB before any model (the baseline), the model itself a few MB
        ["model=tiny_random", "method=gd", "demos=4", "method.epochs=1", "eval.n_queries=10"],
    ],
)
def test_the_estimate_is_within_30_percent_of_the_peak_rss(tmp_path: Path, overrides: list[str]) -> None:
    estimate, peak = _job_peak(tmp_path, ["dataset=present_past", *overrides])
    assert abs(estimate - peak) <= RSS_TOL * peak, f"estimate {estimate:.2f} GiB vs peak RSS {peak:.2f} GiB"
