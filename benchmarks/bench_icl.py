"""ICL evaluation: shared-prefix KV cache + batching versus the naive per-query full forward.

Both ways run the code of methods/predict.py on the prompts of a real icl job (SmolLM2, agnews, seed 0): the
naive way is one full forward of demos + query per query (batch 1, prefix_cache off); the cached way runs the
shared demonstrations once and then the queries in batches of `batch_size` against their KV cache. Every
query's log-probabilities over the whole vocabulary and its label-word log-probabilities are compared: the
largest difference is reported and must stay below 1e-4.

The cached way runs all `n_queries`. The naive way costs a full forward of the long prompt per query (minutes
at 200 queries on 2 CPU cores), so by default it runs on `n_naive` queries evenly spaced over the same set and
its time is scaled to `n_queries` (per-query cost x n_queries); the equality check covers those queries.
`--full` (python -m benchmarks.run --full) runs the naive way on every query. The two ways are interleaved
(a naive query after each cached batch), so a burst of other load on the machine falls on both.

    python -m benchmarks.bench_icl
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

import torch

from benchmarks.common import icl_inputs, timed

log = logging.getLogger("icl_gd.bench")

TOL = 1e-4


@dataclass
class IclBench:
    n_demos: int
    n_queries: int = 200
    n_naive: int | None = 40  # None = every query
    batch_size: int = 8
    dataset: str = "agnews"


def _paths(lm, prompts: list[str], label_conts: list[str] | None, batch_size: int, subset: list[int]):
    """Run the cached way on every prompt and the naive way on `subset`, interleaved: one naive query after each
    cached batch (spread evenly), so that the other load on the machine falls on both alike. Each piece is timed
    on its own. Returns the seconds of each way and their log-probabilities at full precision (what predict()
    computes before its top-K: log p over the vocabulary (Q, V) and label log p (Q, L)), in the prompts' order."""

    P = importlib.import_module(
        "icl_gd.methods.predict"
    )  # the module: icl_gd.methods re-exports the function
    tok, pad = lm.tokenizer, lm.tokenizer.pad_token_id
    t = {"cached": 0.0, "naive": 0.0}

    def clock(way: str, fn):
        dt, out = timed(fn)
        t[way] += dt
        return out

    labels = [P.continuation_ids(tok, w) for w in label_conts] if label_conts else []
    ids = clock("cached", lambda: P.encode(tok, prompts, True))
    n_prefix = P.shared_prefix_length(ids)
    assert n_prefix >= P.MIN_SHARED_TOKENS
    order, gen = clock("cached", lambda: P.cached_batches(lm.model, ids, n_prefix, labels, batch_size, pad))
    n_batches = -(-len(prompts) // batch_size)
    slots: dict[int, list[int]] = {}  # cached batch -> the naive queries run after it
    for k, i in enumerate(subset):
        slots.setdefault(k * n_batches // len(subset), []).append(i)
    cached, naive = [], {}
    for b in range(n_batches):
        cached.append(clock("cached", lambda: next(gen)))
        for i in slots.get(b, []):
            one = clock("naive", lambda i=i: P.encode(tok, [prompts[i]], True))
            naive[i] = clock("naive", lambda one=one: next(P.naive_batches(lm.model, one, labels, 1, pad)))
    inverse = torch.argsort(torch.tensor(order))
    c_logp = torch.cat([b[0] for b in cached])[inverse]
    c_lab = torch.cat([b[1] for b in cached])[inverse] if labels else None
    n_logp = torch.cat([naive[i][0] for i in subset])
    n_lab = torch.cat([naive[i][1] for i in subset]) if labels else None
    return t, (c_logp, c_lab), (n_logp, n_lab), n_prefix


def run(lm, cfg: IclBench) -> dict[str, float]:
    inputs = icl_inputs(cfg.dataset, cfg.n_demos, cfg.n_queries)
    prompts = inputs.prompts
    n_naive = min(cfg.n_naive or len(prompts), len(prompts))
    subset = sorted({round(k * len(prompts) / n_naive) for k in range(n_naive)})
    t, (c_logp, c_lab), (n_logp, n_lab), n_prefix = _paths(
        lm, prompts, inputs.label_words, cfg.batch_size, subset
    )
    t_cached, t_naive_sub = t["cached"], t["naive"]
    t_naive = t_naive_sub / len(subset) * len(prompts)
    diff = float((c_logp[subset] - n_logp).abs().max())
    if c_lab is not None:
        diff = max(diff, float((c_lab[subset] - n_lab).abs().max()))
    if not diff < TOL:
        raise AssertionError(f"cached and naive log-probabilities differ by {diff} (>= {TOL})")
    n_tok = [len(lm.tokenizer(p).input_ids) for p in prompts]
    out = {
        "ratio": t_naive / t_cached,
        "cached_s": t_cached,
        "naive_s": t_naive,
        "naive_measured_s": t_naive_sub,
        "naive_queries_measured": len(subset),
        "queries": len(prompts),
        "batch_size": cfg.batch_size,
        "prefix_tokens": n_prefix,
        "mean_prompt_tokens": sum(n_tok) / len(n_tok),
        "max_abs_dlogp": diff,
        "naive_s_per_query": t_naive_sub / len(subset),
        "cached_s_per_query": t_cached / len(prompts),
    }
    log.info(
        "icl %d demos: cached %.1fs for %d queries, naive %.2fs/query (%d measured) -> x%.1f, max|dlogp| %.1e",
        cfg.n_demos,
        t_cached,
        len(prompts),
        out["naive_s_per_query"],
        len(subset),
        out["ratio"],
        diff,
    )
    return out


if __name__ == "__main__":
    from benchmarks.common import compose  # noqa: PLC0415
    from icl_gd.models import load_model  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(run(load_model(compose([]).model), IclBench(8, n_queries=40, n_naive=8)))
