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

Beside them, with `lmops=True` captures (the first label word's first token appended to each prompt and read
there, as LMOps's fs_eval reads its single-token classification inputs), the metrics as microsoft/LMOps and
Deutch et al. compute them (analysis/lmops.py), each key naming its source: `simaou_lmops` (unit-normalised
hidden states), `simaou_random_uniform_lmops` (uniform [0, 1) update), `simam_lmops` / `simam_zs_lmops`
(pre-softmax scores, cosine per head, mean over heads), `simam_diff_deutch` (diff=True), and Dai's attention-to-
demonstrations Kendall tau, `kendall_example_lmops` / `kendall_token_lmops` with their `*_random_lmops` baselines.
An unrelated fine-tune (the same training on other demonstrations) gives `simaou_unrelated` and
`simaou_unrelated_lmops`: how alike two unrelated updates are, the informative floor of SimAOU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from icl_gd.analysis import lmops as L
from icl_gd.analysis.hooks import ScoreCapture, capture, capture_scores
from icl_gd.data import Example, Template
from icl_gd.metrics.dai import rec2ftp, simam, simaou, simaou_random
from icl_gd.metrics.intervals import summarize
from icl_gd.models.forward import continuation_ids, encode

COSINE_METRICS = ("simaou", "simaou_random", "simam_ft", "simam_zs")
LMOPS_METRICS = (
    "simaou_lmops",
    "simaou_random_uniform_lmops",
    "simam_lmops",
    "simam_zs_lmops",
    "simam_diff_deutch",
)
KENDALL_METRICS = tuple(
    f"kendall_{level}{kind}_lmops" for level in (L.EXAMPLE, L.TOKEN) for kind in ("", "_random")
)
UNRELATED_METRICS = ("simaou_unrelated", "simaou_unrelated_lmops")
# the random generators of the baselines: one stream per baseline, each seeded from the job's seed
_UNIFORM_STREAM, _KENDALL_STREAM = 1, 2


@dataclass
class LMOpsCollected:
    """One model's reading of Q queries at the label token appended to each prompt (analysis/hooks.py
    `capture_scores`): what LMOps's fs_eval records for a single-token classification input."""

    attn_out: list[Tensor]  # per layer (Q, hidden) float32
    scores_query: list[
        Tensor
    ]  # per layer (Q, heads, Lq_max + 1): over the query's tokens and the label token
    scores: list[Tensor]  # per layer (Q, heads, T_max): over every position (for the demos' tokens)
    query: list[Tensor] | None  # per layer (Q, q_dim): the scaled query vector at the label token
    demo_positions: list[list[list[int]]] | None  # per query, per demo: its token positions in the input


@dataclass
class Collected:
    """One model's reading of Q queries: per-layer attention outputs and maps over the query's own tokens."""

    attn_out: list[Tensor]  # per layer (Q, hidden) float32, at the last token
    attn_map_query: list[Tensor]  # per layer (Q, heads, Lq_max) float32: over the query's tokens, zero-padded
    query_len: Tensor  # (Q,) Lq_i, the number of query tokens (the real width of each map row)
    correct: Tensor  # (Q,) bool
    ids: list[list[int]]  # the input ids of each query (prefix + query tokens)
    lmops: LMOpsCollected | None = None  # collect(..., lmops=True): the LMOps-style captures


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


def label_tokens(
    tokenizer, template: Template, queries: list[Example], label_words: list[str] | None
) -> list[int]:
    """The token LMOps appends to each prompt and reads at: the first token of the first label word's answer
    (fs_eval keeps option 0's sequence of a single-token classification), or, without label words, of the gold
    answer."""
    if label_words:
        first = continuation_ids(tokenizer, template.query(queries[0].fields, label_words[0])[1])[0]
        return [first] * len(queries)
    return [continuation_ids(tokenizer, template.query(q.fields, q.answer)[1])[0] for q in queries]


def demo_spans(template: Template, separator: str, demos: list[Example]) -> list[tuple[int, int]]:
    """(start, end) character span of each demonstration in the ICL context (demos joined by the separator)."""
    spans, start = [], 0
    for d in demos:
        text = template.demo(d.fields, d.answer)
        spans.append((start, start + len(text)))
        start += len(text) + len(separator)
    return spans


def demo_positions(
    tokenizer,
    template: Template,
    separator: str,
    demos: list[Example],
    queries: list[Example],
    ids: list[list[int]],
    add_bos: bool | None,
) -> list[list[list[int]]] | None:
    """Per query, per demo, the positions in `ids` of the tokens inside that demo's text (LMOps's slice_idx: the
    demos' own tokens, no BOS, no separator), from the tokenizer's offsets; None when they cannot be told (a
    tokenizer without offsets, or ids that are neither tokenisation)."""
    context = separator.join(template.demo(d.fields, d.answer) for d in demos) + separator
    special = True if add_bos is None else add_bos
    spans = demo_spans(template, separator, demos)
    out = []
    for q, seq in zip(queries, ids, strict=True):
        offsets = None
        for text in (context + template.query(q.fields, q.answer)[0], context):
            try:
                enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
            except (NotImplementedError, ValueError):
                return None
            if seq[: len(enc.input_ids)] == enc.input_ids:
                offsets = enc.offset_mapping
                break
        if offsets is None:
            return None
        out.append([[t for t, (s, e) in enumerate(offsets) if e > s and s >= a and e <= b] for a, b in spans])
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
    lmops: bool = False,
) -> Collected:
    """Capture one model's attention outputs, query-token attention maps and correctness on the queries.

    with_demos: the ICL input (demonstrations before each query); else the zero-shot input (for ZS, or for
    a fine-tuned model: GD). lmops: also the LMOps-style captures at the appended label token (`LMOpsCollected`).
    """
    ids, query_len = build_inputs(tokenizer, template, separator, demos, queries, add_bos, with_demos)
    cap = capture(model, ids, tokenizer.pad_token_id, batch_size, maps=True)
    extra = None
    if lmops:
        appended = [
            seq + [t]
            for seq, t in zip(ids, label_tokens(tokenizer, template, queries, label_words), strict=True)
        ]
        sc: ScoreCapture = capture_scores(model, appended, tokenizer.pad_token_id, batch_size)
        extra = LMOpsCollected(
            attn_out=sc.attn_out,
            scores_query=[query_maps(m, appended, [n + 1 for n in query_len]) for m in sc.scores],
            scores=sc.scores,
            query=sc.query,
            demo_positions=(
                demo_positions(tokenizer, template, separator, demos, queries, ids, add_bos)
                if with_demos and demos
                else None
            ),
        )
    return Collected(
        attn_out=cap.attn_out,
        attn_map_query=[query_maps(m, ids, query_len) for m in cap.attn_map],
        query_len=torch.tensor(query_len),
        correct=correct_answers(cap.logits_last, tokenizer, template, queries, label_words),
        ids=ids,
        lmops=extra,
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


def _stream_seed(seed: int, stream: int) -> int:
    """An independent seed for one baseline's random stream, from the job's seed."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def training_keys(
    per_demo: list[list[Tensor]] | None, batch: list[list[int]], bos_id: int | None
) -> list[Tensor] | None:
    """Per demo (layers, n_i, q_dim): the query vectors recorded while training on it (hooks.TrainingQueries
    `per_demo`), without a leading BOS (LMOps drops each training example's first token, its BOS)."""
    if per_demo is None:
        return None
    out = []
    for layers, ids in zip(per_demo, batch, strict=True):
        start = 1 if bos_id is not None and ids and ids[0] == bos_id else 0
        out.append(torch.stack([x[start:] for x in layers]))
    return out


def _kendall_values(
    icl: LMOpsCollected, ft: LMOpsCollected, training: list[Tensor], seed: int
) -> dict[str, Tensor]:
    """Each Kendall metric as (layers, Q); the token level is NaN for a query whose ICL demo spans do not have the
    training sequences' token counts (the tokens cannot be paired)."""
    rng = np.random.default_rng(_stream_seed(seed, _KENDALL_STREAM))
    counts = [t.shape[1] for t in training]
    rows: dict[str, list[Tensor]] = {name: [] for name in KENDALL_METRICS}
    for i, positions in enumerate(icl.demo_positions):
        icl_map = L.icl_demo_attention(torch.stack([s[i] for s in icl.scores]), positions)
        ft_map = L.ft_demo_attention(torch.stack([q[i] for q in ft.query]), training)
        icl_ex = L.per_example(icl_map, [len(p) for p in positions])
        ft_ex = L.per_example(ft_map, counts)
        rows[f"kendall_{L.EXAMPLE}_lmops"].append(L.kendall_layers(icl_ex, ft_ex))
        rows[f"kendall_{L.EXAMPLE}_random_lmops"].append(L.kendall_random_layers(icl_ex, rng))
        paired = [len(p) for p in positions] == counts
        nan = torch.full((icl_map.shape[0],), float("nan"), dtype=torch.float64)
        rows[f"kendall_{L.TOKEN}_lmops"].append(L.kendall_layers(icl_map, ft_map) if paired else nan)
        rows[f"kendall_{L.TOKEN}_random_lmops"].append(
            L.kendall_random_layers(icl_map, rng) if paired else nan
        )
    return {name: torch.stack(v, dim=1) for name, v in rows.items()}


def lmops_values(
    zs: Collected,
    icl: Collected,
    ft: Collected,
    seed: int,
    training: list[Tensor] | None = None,
    unrelated: Collected | None = None,
) -> dict[str, Tensor]:
    """The LMOps-exact (and Deutch et al.'s) metrics as (layers, Q) float64 tensors; {} without lmops captures.

    training: per demo the (layers, n_i, q_dim) query vectors recorded during fine-tuning (`training_keys`), for
    the Kendall metrics; unrelated: a model fine-tuned on other demonstrations, for the unrelated-update control.
    """
    if zs.lmops is None or icl.lmops is None or ft.lmops is None:
        return {}
    z, i, f = zs.lmops, icl.lmops, ft.lmops
    generator = torch.Generator().manual_seed(_stream_seed(seed, _UNIFORM_STREAM))
    rows: dict[str, list[Tensor]] = {name: [] for name in LMOPS_METRICS}
    for layer in range(len(z.attn_out)):
        rows["simaou_lmops"].append(L.simaou(z.attn_out[layer], i.attn_out[layer], f.attn_out[layer]))
        rows["simaou_random_uniform_lmops"].append(
            L.simaou_random(z.attn_out[layer], i.attn_out[layer], generator)
        )
        rows["simam_lmops"].append(L.simam(i.scores_query[layer], f.scores_query[layer]))
        rows["simam_zs_lmops"].append(L.simam(i.scores_query[layer], z.scores_query[layer]))
        rows["simam_diff_deutch"].append(
            L.simam_diff(z.scores_query[layer], i.scores_query[layer], f.scores_query[layer])
        )
    out = {name: torch.stack(v) for name, v in rows.items()}
    if training is not None and i.demo_positions is not None and f.query is not None:
        out.update(_kendall_values(i, f, training, seed))
    if unrelated is not None:
        u = unrelated
        out["simaou_unrelated"] = torch.stack(
            [simaou(zs.attn_out[n], icl.attn_out[n], u.attn_out[n]) for n in range(len(zs.attn_out))]
        )
        if u.lmops is not None:
            out["simaou_unrelated_lmops"] = torch.stack(
                [L.simaou(z.attn_out[n], i.attn_out[n], u.lmops.attn_out[n]) for n in range(len(z.attn_out))]
            )
    return out


def layer_frame(values: dict[str, Tensor], query_ids: list[str]) -> pd.DataFrame:
    """One row per (query_id, layer), layer-major, from `layer_values`."""
    n_layers, n_queries = values[COSINE_METRICS[0]].shape
    frame = pd.DataFrame(
        {
            "query_id": [q for _ in range(n_layers) for q in query_ids],
            "layer": [layer for layer in range(n_layers) for _ in range(n_queries)],
        }
    )
    for name, v in values.items():
        frame[name] = v.flatten().numpy()
    return frame


def analyse(
    zs: Collected,
    icl: Collected,
    ft: Collected,
    query_ids: list[str],
    seed: int,
    training: list[Tensor] | None = None,
    unrelated: Collected | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """(per-layer frame, per-query frame, metrics) of one job; the random baselines are seeded from `seed`.

    With lmops captures, the LMOps-exact metrics too (`lmops_values`: training and unrelated feed its Kendall and
    unrelated-update metrics); a metric that is NaN for every query (no pairable tokens) is left out of metrics.
    """
    _check_aligned(zs, icl, ft, len(query_ids))
    values = {**layer_values(zs, icl, ft, seed), **lmops_values(zs, icl, ft, seed, training, unrelated)}
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
    for name, v in values.items():
        per_query = v.nanmean(0)  # per query, the mean over layers (a constant map's NaN tau left out)
        if name in COSINE_METRICS or not torch.isnan(per_query).all():
            metrics.update(summarize(name, per_query))
    for name, c in (("zs", zs), ("icl", icl), ("ft", ft)):
        metrics[f"{name}_accuracy_dai"] = float(c.correct.double().mean())
    return layer_frame(values, query_ids), queries, metrics
