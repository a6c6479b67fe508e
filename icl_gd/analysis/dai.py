"""Dai et al. (2023), "Why Can GPT Learn In-Context?": do ICL and fine-tuning (GD) change the model alike?

For each query the model is read three ways at the query's last token: zero-shot (ZS), with the demonstrations
in the prompt (ICL), and fine-tuned on them then zero-shot (GD). Metrics:

- Rec2FTP: among queries that ZS gets wrong and GD gets right, the fraction ICL also gets right.
- SimAOU: per layer, the cosine of the ICL update (icl - zs) and the GD update (ft - zs) of the attention
  output (after the output projection, before the residual add); baseline: the ICL update against a random
  update (`simaou_random`).
- SimAM: per layer, the cosine of two attention maps (averaged over heads) of the last token over the query's
  own tokens: ICL vs GD (`simam_ft`), and ICL vs ZS (`simam_zs`, Dai's "before fine-tuning" baseline).

The query's tokens are identical in the ZS and ICL inputs (tokenised once, then prefixed), so the maps cover
the same tokens. Per-query values are averaged over layers and summarised with `metrics.summarize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from icl_gd.analysis.hooks import capture
from icl_gd.data import Example, Template
from icl_gd.metrics.dai import rec2ftp, simam, simaou, simaou_random
from icl_gd.metrics.intervals import summarize
from icl_gd.models.forward import continuation_ids, encode

COSINE_METRICS = ("simaou", "simaou_random", "simam_ft", "simam_zs")


@dataclass
class Collected:
    """One model's reading of Q queries: per-layer attention outputs and maps over the query's own tokens."""

    attn_out: list[Tensor]  # per layer (Q, hidden) float32, at the last token
    attn_map_query: list[Tensor]  # per layer (Q, heads, Lq_max) float32: over the query's tokens, zero-padded
    query_len: Tensor  # (Q,) Lq_i, the number of query tokens (the real width of each map row)
    correct: Tensor  # (Q,) bool
    ids: list[list[int]]  # the input ids of each query (prefix + query tokens)


# ---------------------------------------------------------------------------------------------------------
# Inputs and captures


def prefix_ids(tokenizer, context: str, add_bos: bool | None) -> list[int]:
    """Ids of the text before the query, with the special tokens `predict` would add (BOS where it adds one)."""
    return encode(tokenizer, [context], True if add_bos is None else add_bos)[0]


def build_inputs(
    tokenizer,
    template: Template,
    separator: str,
    demos: list[Example],
    queries: list[Example],
    add_bos: bool | None,
    with_demos: bool,
) -> tuple[list[list[int]], list[int]]:
    """(input ids per query, number of query tokens per query): prefix ids + the query prompt tokenised alone.

    The prefix is [BOS] (zero-shot) or the demonstrations joined by `separator`, then `separator`, tokenised
    with special tokens; the query's ids are the same whatever the prefix.
    """
    context = separator.join(template.demo(d.fields, d.answer) for d in demos) + separator
    context = context if with_demos and demos else ""
    prefix = prefix_ids(tokenizer, context, add_bos)
    texts = [template.query(q.fields, q.answer)[0] for q in queries]
    query_ids = encode(tokenizer, texts, False)
    if any(not q for q in query_ids):
        raise ValueError("a query prompt encodes to no tokens.")
    # the whole prompt tokenised at once is what method=icl sees (a separator may merge differently at the end of
    # the prefix alone); use it whenever it still ends with the query's own ids, so ZS and ICL share them
    out = []
    for text, q in zip(texts, query_ids, strict=True):
        full = prefix_ids(tokenizer, context + text, add_bos) if context else []
        out.append(full if full[-len(q) :] == q else prefix + q)
    return out, [len(q) for q in query_ids]


def correct_answers(
    logits: Tensor,
    tokenizer,
    template: Template,
    queries: list[Example],
    label_words: list[str] | None,
) -> Tensor:
    """(Q,) bool: the prediction's first token equals the gold answer's first token.

    With label words the prediction is the argmax over the label words' first answer tokens; without, the
    top-1 token of the full distribution.
    """
    gold = torch.tensor(
        [continuation_ids(tokenizer, template.query(q.fields, q.answer)[1])[0] for q in queries]
    )
    if not label_words:
        return logits.argmax(-1) == gold
    first = torch.tensor(
        [continuation_ids(tokenizer, template.query(queries[0].fields, w)[1])[0] for w in label_words]
    )
    return first[logits[:, first].argmax(-1)] == gold


def query_maps(attn_map: Tensor, ids: list[list[int]], query_len: list[int]) -> Tensor:
    """(Q, heads, Lq_max): each row's attention over its last query_len[i] positions, zero-padded on the right."""
    width = max(query_len)
    out = attn_map.new_zeros((attn_map.shape[0], attn_map.shape[1], width))
    for i, (seq, n) in enumerate(zip(ids, query_len, strict=True)):
        out[i, :, :n] = attn_map[i, :, len(seq) - n : len(seq)]
    return out


def collect(
    model,
    tokenizer,
    template: Template,
    separator: str,
    demos: list[Example],
    queries: list[Example],
    label_words: list[str] | None,
    add_bos: bool | None,
    batch_size: int,
    with_demos: bool,
) -> Collected:
    """Capture one model's attention outputs, query-token attention maps and correctness on the queries.

    with_demos: the ICL input (demonstrations before each query); else the zero-shot input (for ZS, or for
    a fine-tuned model: GD).
    """
    ids, query_len = build_inputs(tokenizer, template, separator, demos, queries, add_bos, with_demos)
    cap = capture(model, ids, tokenizer.pad_token_id, batch_size, maps=True)
    return Collected(
        attn_out=cap.attn_out,
        attn_map_query=[query_maps(m, ids, query_len) for m in cap.attn_map],
        query_len=torch.tensor(query_len),
        correct=correct_answers(cap.logits_last, tokenizer, template, queries, label_words),
        ids=ids,
    )


# ---------------------------------------------------------------------------------------------------------
# Per-job analysis


def _check_aligned(zs: Collected, icl: Collected, ft: Collected, n_queries: int) -> None:
    for name, c in (("icl", icl), ("ft", ft)):
        if len(c.attn_out) != len(zs.attn_out):
            raise ValueError(f"analyse: {name} has {len(c.attn_out)} layers, zs {len(zs.attn_out)}.")
        if not torch.equal(c.query_len, zs.query_len):
            raise ValueError(
                f"analyse: {name}'s queries have other token counts than zs's (different queries?)."
            )
    if len(zs.query_len) != n_queries:
        raise ValueError(f"analyse: {n_queries} query ids for {len(zs.query_len)} queries.")


def layer_values(zs: Collected, icl: Collected, ft: Collected, seed: int) -> dict[str, Tensor]:
    """Each cosine metric as a (layers, Q) float64 tensor; the random updates come from a generator seeded
    with `seed`, drawn layer by layer."""
    generator = torch.Generator().manual_seed(seed)
    rows: dict[str, list[Tensor]] = {name: [] for name in COSINE_METRICS}
    for layer in range(len(zs.attn_out)):
        z, i, f = zs.attn_out[layer], icl.attn_out[layer], ft.attn_out[layer]
        rows["simaou"].append(simaou(z, i, f))
        rows["simaou_random"].append(simaou_random(z, i, generator))
        rows["simam_ft"].append(simam(icl.attn_map_query[layer], ft.attn_map_query[layer]))
        rows["simam_zs"].append(simam(icl.attn_map_query[layer], zs.attn_map_query[layer]))
    return {name: torch.stack(v) for name, v in rows.items()}


def layer_frame(values: dict[str, Tensor], query_ids: list[str]) -> pd.DataFrame:
    """One row per (query_id, layer), layer-major, from `layer_values`."""
    n_layers, n_queries = values[COSINE_METRICS[0]].shape
    frame = pd.DataFrame(
        {
            "query_id": [q for _ in range(n_layers) for q in query_ids],
            "layer": [layer for layer in range(n_layers) for _ in range(n_queries)],
        }
    )
    for name in COSINE_METRICS:
        frame[name] = values[name].flatten().numpy()
    return frame


def analyse(
    zs: Collected, icl: Collected, ft: Collected, query_ids: list[str], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """(per-layer frame, per-query frame, metrics) of one job; the random baseline is seeded from `seed`."""
    _check_aligned(zs, icl, ft, len(query_ids))
    values = layer_values(zs, icl, ft, seed)
    queries = pd.DataFrame(
        {
            "query_id": query_ids,
            "zs_correct": zs.correct.numpy(),
            "icl_correct": icl.correct.numpy(),
            "ft_correct": ft.correct.numpy(),
        }
    )
    fraction, n_ft = rec2ftp(zs.correct, icl.correct, ft.correct)
    metrics: dict[str, float] = {"rec2ftp": fraction, "n_ft_corrected": float(n_ft)}
    for name in COSINE_METRICS:
        metrics.update(summarize(name, values[name].mean(0)))  # per query, the mean over layers
    for name, c in (("zs", zs), ("icl", icl), ("ft", ft)):
        metrics[f"{name}_accuracy_dai"] = float(c.correct.double().mean())
    return layer_frame(values, query_ids), queries, metrics
