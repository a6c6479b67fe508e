"""Forward FLOP/s achieved by SmolLM2 against the machine's measured matmul FLOP/s (reported, aim >= 50%).

The machine's rate is the best of dense float32 matmuls of the model's own shapes ((B*T, 576) x (576, 1536) and
back, the MLP) and a square 1024^3 one, each timed best-of-`repeats`. The forward is the decoder (no
unembedding, as predict() runs it) on `batch` x `seq` tokens in eval mode, no grad; its FLOPs are counted as
2 x (the decoder's linear-layer parameters) per token + attention (QK^T and AV: 2 x 2 x T^2 x heads x head_dim
per sequence and layer, halved for the causal mask).

    python -m benchmarks.bench_flops
"""

from __future__ import annotations

import logging

import torch

from benchmarks.common import timed

log = logging.getLogger("icl_gd.bench")


def matmul_flops(m: int, k: int, n: int, repeats: int) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b  # warm-up
    best = min(timed(lambda: a @ b)[0] for _ in range(repeats))
    return 2 * m * k * n / best


def forward_flops(model, batch: int, seq: int) -> float:
    cfg = model.config
    decoder = model.get_decoder()
    linear = sum(m.weight.numel() for m in decoder.modules() if isinstance(m, torch.nn.Linear))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn = cfg.num_hidden_layers * 2 * 2 * seq * seq * cfg.num_attention_heads * head_dim / 2
    return batch * (2 * linear * seq + attn)


def run(lm, batch: int = 8, seq: int = 256, repeats: int = 3) -> dict[str, float]:
    model = lm.model
    h, inter = model.config.hidden_size, model.config.intermediate_size
    rates = {
        "mlp_up": matmul_flops(batch * seq, h, inter, repeats * 3),
        "mlp_down": matmul_flops(batch * seq, inter, h, repeats * 3),
        "square_1024": matmul_flops(1024, 1024, 1024, repeats * 3),
    }
    peak = max(rates.values())
    ids = torch.randint(100, 10000, (batch, seq), generator=torch.Generator().manual_seed(0))
    decoder = model.get_decoder()
    with torch.no_grad():
        decoder(input_ids=ids)  # warm-up
        t = min(timed(lambda: decoder(input_ids=ids))[0] for _ in range(repeats))
    achieved = forward_flops(model, batch, seq) / t
    out = {
        "ratio": achieved / peak,
        "forward_gflops": achieved / 1e9,
        "matmul_gflops": peak / 1e9,
        **{f"matmul_gflops_{k}": v / 1e9 for k, v in rates.items()},
        "forward_s": t,
        "tokens": batch * seq,
    }
    log.info(
        "forward %.1f GFLOP/s vs matmul %.1f GFLOP/s -> %.0f%%",
        achieved / 1e9,
        peak / 1e9,
        100 * out["ratio"],
    )
    return out


if __name__ == "__main__":
    from benchmarks.common import compose  # noqa: PLC0415
    from icl_gd.models import load_model  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(run(load_model(compose([]).model)))
