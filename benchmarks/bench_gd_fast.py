"""GD made cheap: the fast step against the plain loop, trajectories against retraining, a grid trained at once.

Every measure runs the project's code (`finetune.train`, `grid.train_grid`) on the demos of a real gd job
(SmolLM2, present_past, 8 demos, seed 0: the gd job of `make demo`), both ways in the same process, interleaved
(plain, fast, plain, fast, ...) so that the other load on the machine falls on both; each time is the best of
`repeats`. Both ways must give the same trained weights (or predictions) within float tolerance, else it raises.

- `gd_step_vs_plain`: `train(fast=False)` (forward, backward, `torch.optim.Adam` default, `.item()` a step: the
  loop as it was) against `train(fast=True)` (methods/fast_step.py), the gd defaults (Adam, lr 1e-4, all
  parameters, one demo a step, grad_clip 1.0), `steps` optimizer steps, whole `train` calls (its before/after
  demo losses included, the same on both sides).
- `gd_optimizer_vs_memory_floor`: one fused Adam step over all parameters against streaming what it must touch
  once (parameters read and written, gradients read, both moments read and written: 28 bytes a float32
  parameter) at the copy bandwidth measured here (a large tensor copy, best of `repeats`).
- `gd_trajectory_vs_retrain`: the model at 4 points of a training (eval_at, as gd_search scores them: full-batch
  steps, the predictions on the selection queries and the demo loss at each) from one fast training, against 4
  plain trainings to those steps. `ratio_same_step` is the trajectory's own share: 4 fast trainings against one.
- `gd_grid_vs_sequential`: 4 learning rates trained together (grid.train_grid: stacked copies of a small
  parameter set in one batch) against the same 4 settings one by one with the fast step.

    python -m benchmarks.bench_gd_fast [step|optimizer|trajectory|grid]
"""

from __future__ import annotations

import logging
import sys

import torch
from omegaconf import OmegaConf

from benchmarks.common import compose, gd_batch, icl_inputs, timed

log = logging.getLogger("icl_gd.bench")

DATASET, N_DEMOS = "present_past", 8  # the gd job of `make demo`
WEIGHT_TOL = (
    1e-4  # max |d weight| between the ways (Adam divides by sqrt(v): tiny gradients amplify rounding)
)
LOGP_TOL = 1e-3  # max |d log p| of the predictions between the ways
BYTES_PER_ADAM_PARAM = (
    7 * 4
)  # float32: param read+write, grad read, exp_avg read+write, exp_avg_sq read+write
COPY_FLOATS = 1 << 26  # 256 MiB float32 tensors for the bandwidth measure
EVAL_AT = (2, 4, 6, 8)  # the 4 trajectory points (full-batch steps)
N_SELECT = 20  # selection queries answered at each trajectory point
GRID_LRS = (1e-4, 3e-4, 1e-3, 3e-3)
GRAD_SCALE, LR = (
    1e-3,
    1e-4,
)  # the optimizer measure's random gradients and its learning rate (weights restored)
FLOAT32_BYTES = 4
HALF_ULPS = 2  # bf16/fp16 weights: two roundings apart at most
ADAM_LR_SHARE = 0.1  # the grid's tolerance: this share of one Adam step (lr) per step taken


def _sync() -> None:
    """Wait for the GPU (a CUDA timing must include the queued kernels); nothing on a CPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn):
    def synced():
        out = fn()
        _sync()
        return out

    _sync()
    return timed(synced)


def _setup(overrides: list[str]):
    from icl_gd.models import load_model  # noqa: PLC0415

    cfg = compose(["method=gd", *overrides])
    return cfg, load_model(cfg.model)


def _train(lm, batch, method, steps: int, fast: bool, keep: bool = False, **kw):
    """(seconds, trained weights or None): one training inside `restoring`, so the model ends as it began."""
    from icl_gd.methods import finetune  # noqa: PLC0415

    params = finetune.select_parameters(lm.model, method)
    with finetune.restoring(params):
        t, _ = _timed(
            lambda: finetune.train(
                lm.model, lm.tokenizer, batch, params, method, 0, steps=steps, fast=fast, **kw
            )
        )
        trained = {n: p.detach().to("cpu", copy=True) for n, p in params.items()} if keep else None
    return t, trained


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[n].float() - b[n].float()).abs().max()) for n in a)


def _tolerance(weights: dict) -> float:
    """WEIGHT_TOL, or for half-precision weights HALF_ULPS of their rounding step at the largest weight."""
    w = next(iter(weights.values()))
    if w.dtype not in (torch.float16, torch.bfloat16):
        return WEIGHT_TOL
    top = max(float(t.float().abs().max()) for t in weights.values())
    return max(WEIGHT_TOL, HALF_ULPS * torch.finfo(w.dtype).eps * top)


def step(steps: int = 8, repeats: int = 2, model: list[str] = ()) -> dict:
    cfg, lm = _setup(list(model))
    batch = gd_batch(DATASET, N_DEMOS, tokenizer=lm.tokenizer)
    _train(lm, batch, cfg.method, 1, True)  # warm-up: first-touch allocations, kernels
    plain, fast = [], []
    diff = None
    for r in range(repeats):
        tp, wp = _train(lm, batch, cfg.method, steps, False, keep=r == 0)
        tf, wf = _train(lm, batch, cfg.method, steps, True, keep=r == 0)
        plain.append(tp)
        fast.append(tf)
        if r == 0:
            diff, tol = _max_diff(wp, wf), _tolerance(wp)
            del wp, wf
    if diff > tol:
        raise AssertionError(f"fast and plain GD trained different weights: max |d w| {diff:.2e} > {tol:.1e}")
    out = {
        "ratio": min(plain) / min(fast),
        "plain_s": min(plain),
        "fast_s": min(fast),
        "plain_s_per_step": min(plain) / steps,
        "fast_s_per_step": min(fast) / steps,
        "steps": steps,
        "max_abs_dweight": diff,
        "params": sum(p.numel() for p in lm.model.parameters()),
    }
    log.info(
        "gd step: plain %.2fs, fast %.2fs for %d steps -> x%.2f (max |dw| %.1e)",
        min(plain),
        min(fast),
        steps,
        out["ratio"],
        diff,
    )
    return out


def copy_bandwidth(repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """Bytes per second of a large float32 tensor copy (read + write counted)."""
    a, b = torch.ones(COPY_FLOATS, device=device), torch.empty(COPY_FLOATS, device=device)
    b.copy_(a)
    best = min(_timed(lambda: b.copy_(a))[0] for _ in range(repeats))
    return 2 * a.numel() * a.element_size() / best


def optimizer(repeats: int = 5, model: list[str] = (), params_set: str = "all") -> dict:
    """One fused Adam step over the model's parameters (SmolLM2's, all) against streaming its state once."""
    from icl_gd.methods import finetune  # noqa: PLC0415

    cfg, lm = _setup([*model, f"method.params={params_set}"])
    params = list(finetune.select_parameters(lm.model, cfg.method).values())
    saved = [p.detach().clone() for p in params]
    try:
        for p in params:
            p.grad = torch.randn_like(p) * GRAD_SCALE
        fused = torch.optim.Adam(params, lr=LR, fused=True)
        plain = torch.optim.Adam(params, lr=LR)
        fused.step()  # the moments are allocated at the first step
        plain.step()
        t_fused = min(_timed(fused.step)[0] for _ in range(repeats))
        t_plain = min(_timed(plain.step)[0] for _ in range(max(1, repeats // 2)))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
                p.grad = None
    n = sum(p.numel() for p in params)
    bw = copy_bandwidth(device=params[0].device)
    floor = n * BYTES_PER_ADAM_PARAM * params[0].element_size() // FLOAT32_BYTES / bw
    out = {
        "ratio": t_fused / floor,
        "fused_step_s": t_fused,
        "default_step_s": t_plain,
        "floor_s": floor,
        "copy_gb_per_s": bw / 1e9,
        "params": n,
    }
    log.info(
        "adam step: fused %.3fs, default %.3fs, floor %.3fs (%.1f GB/s) -> x%.2f of the floor",
        t_fused,
        t_plain,
        floor,
        bw / 1e9,
        out["ratio"],
    )
    return out


def trajectory(repeats: int = 1, model: list[str] = (), params_set: str = "all") -> dict:
    """gd_search's scoring: one training scored at 4 steps vs a training per step."""
    from icl_gd.methods import finetune  # noqa: PLC0415
    from icl_gd.methods.predict import predict  # noqa: PLC0415

    cfg, lm = _setup([*model, "method.batch_size=all", f"method.params={params_set}"])
    batch = gd_batch(DATASET, N_DEMOS, tokenizer=lm.tokenizer)
    queries = icl_inputs(DATASET, 0, N_SELECT, seed=1)
    pad = lm.tokenizer.pad_token_id

    def evaluate(store: list):
        p = predict(
            lm.model, lm.tokenizer, queries.prompts, queries.answers, queries.label_words, 10, 8, False
        )
        store.append(
            (torch.log(p.topk_probs.clamp_min(1e-30)), finetune.mean_demo_loss(lm.model, batch, pad))
        )

    def project() -> list:
        got: list = []
        _train(lm, batch, cfg.method, max(EVAL_AT), True, on_eval=lambda s: evaluate(got), eval_at=EVAL_AT)
        return got

    def retrain(fast: bool) -> list:
        got: list = []
        for s in EVAL_AT:
            _train(lm, batch, cfg.method, s, fast, on_eval=lambda _s: evaluate(got), eval_at=(s,))
        return got

    _train(lm, batch, cfg.method, 1, True)  # warm-up
    t_naive, naive = min((_timed(lambda: retrain(False)) for _ in range(repeats)), key=lambda x: x[0])
    t_proj, proj = min((_timed(project) for _ in range(repeats)), key=lambda x: x[0])
    t_same, same = min((_timed(lambda: retrain(True)) for _ in range(repeats)), key=lambda x: x[0])
    dlogp = max(float((a[0] - b[0]).abs().max()) for a, b in zip(naive, proj, strict=True))
    dloss = max(abs(a[1] - b[1]) for a, b in zip(naive, proj, strict=True))
    exact = max(float((a[0] - b[0]).abs().max()) for a, b in zip(same, proj, strict=True))
    if dlogp > LOGP_TOL:
        raise AssertionError(f"trajectory and retraining predict differently: max |d log p| {dlogp:.2e}")
    out = {
        "ratio": t_naive / t_proj,
        "ratio_same_step": t_same / t_proj,
        "retrain_plain_s": t_naive,
        "retrain_fast_s": t_same,
        "trajectory_s": t_proj,
        "eval_at": list(EVAL_AT),
        "selection_queries": N_SELECT,
        "max_abs_dlogp_vs_plain": dlogp,
        "max_abs_dlogp_vs_fast_retrain": exact,
        "max_abs_dloss": dloss,
    }
    log.info(
        "trajectory: 4 plain retrains %.1fs, 4 fast %.1fs, one trajectory %.1fs -> x%.2f (x%.2f same step)",
        t_naive,
        t_same,
        t_proj,
        out["ratio"],
        out["ratio_same_step"],
    )
    return out


def grid(steps: int = 4, repeats: int = 1, model: list[str] = ()) -> dict:
    """4 learning rates of one parameter set trained together vs one by one (both with the fast step)."""
    from icl_gd.methods import finetune  # noqa: PLC0415
    from icl_gd.methods import grid as G  # noqa: PLC0415

    cfg, lm = _setup([*model, "method.batch_size=all", "method.params=attn_kv"])
    batch = gd_batch(DATASET, N_DEMOS, tokenizer=lm.tokenizer)
    nodes = [OmegaConf.merge(cfg.method, {"lr": lr}) for lr in GRID_LRS]

    def sequential():
        return [_train(lm, batch, m, steps, True, keep=True)[1] for m in nodes]

    def together():
        params = finetune.select_parameters(lm.model, cfg.method)
        with finetune.restoring(params):
            res = G.train_grid(lm.model, lm.tokenizer, batch, params, nodes, 0, steps=steps)
        return res.trained

    _train(lm, batch, cfg.method, 1, True)  # warm-up
    seq, grd = [], []
    for _ in range(repeats):
        ts, ws = _timed(sequential)
        tg, wg = _timed(together)
        seq.append(ts)
        grd.append(tg)
    diffs = [_max_diff(a, b) for a, b in zip(ws, wg, strict=True)]
    diff = max(diffs)
    # Adam's update is ~lr an element a step whatever the gradient's size, so a rounding in a near-zero gradient
    # can move a weight by a share of lr: the tolerance of each setting scales with its lr and steps
    tols = [max(_tolerance(ws[0]), ADAM_LR_SHARE * lr * steps) for lr in GRID_LRS]
    if any(d > t for d, t in zip(diffs, tols, strict=True)):
        raise AssertionError(f"grid and one-by-one trained different weights: max |d w| {diffs} > {tols}")
    out = {
        "ratio": min(seq) / min(grd),
        "sequential_s": min(seq),
        "grid_s": min(grd),
        "lrs": list(GRID_LRS),
        "params": "attn_kv",
        "steps": steps,
        "max_abs_dweight": diff,
        "max_abs_dweight_per_lr": diffs,
        "tolerance_per_lr": tols,
    }
    log.info(
        "grid of %d lrs: one by one %.1fs, together %.1fs -> x%.2f (max |dw| %.1e)",
        len(GRID_LRS),
        min(seq),
        min(grd),
        out["ratio"],
        diff,
    )
    return out


MEASURES = {"step": step, "optimizer": optimizer, "trajectory": trajectory, "grid": grid}

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in sys.argv[1:] or list(MEASURES):
        print(name, MEASURES[name]())
