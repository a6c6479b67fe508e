"""Next-token distributions at the answer position, for a batch of prompts; shared by every method.

Prompts are padded on the right (causal attention makes the pad invisible to real tokens) and the unembedding
is applied only at the positions we read, so a batch never materialises (batch, length, vocab) logits.
A label word's probability is that of its whole token sequence: the first token from the answer-position
distribution, the rest from one extra forward pass per multi-token label.

Shared-prefix cache (`prefix_cache=True`): the prompts of an ICL job all start with the same demonstrations.
Each prompt is tokenised whole, exactly as without the cache; the longest run of token ids that every prompt
starts with (keeping at least one token of each) is run once with batch 1, and its key/value cache is expanded
across each batch of queries. Only each query's own tokens are then run, right-padded, with position ids
offset by the prefix length and an attention mask covering prefix + query; multi-token label words continue
from the query's cache. Because the split is on the token ids of the whole prompt, the tokens are those of the
full forward by construction; the outputs equal it to float rounding (tests check |d log p| < 1e-4).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from icl_gd import progress
from icl_gd.models import forward as F

log = logging.getLogger(__name__)

MIN_SHARED_TOKENS = (
    8  # below this the prefix pass saves less than it costs (zero-shot prompts share ~2 tokens)
)


@dataclass
class Predictions:
    """Per-query outputs at the answer position; Q queries, K top tokens, L label words, V vocabulary."""

    gold_token: Tensor  # (Q,) first token of the gold answer continuation
    topk_ids: Tensor  # (Q, K)
    topk_probs: Tensor  # (Q, K) float32
    gold_prob: Tensor  # (Q,) probability of gold_token
    entropy: Tensor  # (Q,) nats, of the full next-token distribution
    label_probs: Tensor | None  # (Q, L) probability of each label word's token sequence
    full_dist: Tensor | None  # (Q, V) float16, when asked for


@torch.no_grad()
def predict(
    model,
    tokenizer,
    prompts: list[str],
    answers: list[str],
    label_words: list[str] | None,
    top_k: int,
    batch_size: int,
    save_full_dist: bool,
    add_bos: bool | None = None,
    prefix_cache: bool = True,
) -> Predictions:
    """Distributions at the end of each prompt, plus gold and label-word probabilities.

    prefix_cache: run the token prefix that all prompts share once and reuse its key/value cache (the default;
    used when the prompts share at least MIN_SHARED_TOKENS tokens and the model supports it).
    """
    add_special = True if add_bos is None else add_bos
    prompt_ids = F.encode(tokenizer, prompts, add_special)
    gold = torch.tensor([F.continuation_ids(tokenizer, a)[0] for a in answers])
    label_ids = [F.continuation_ids(tokenizer, w) for w in label_words] if label_words else []
    pad = tokenizer.pad_token_id
    n_shared = shared_prefix_length(prompt_ids)
    if prefix_cache and n_shared >= MIN_SHARED_TOKENS and len(prompts) > 1 and supports_prefix_cache(model):
        order, batches = cached_batches(model, prompt_ids, n_shared, label_ids, batch_size, pad)
    else:
        order, batches = (
            list(range(len(prompts))),
            naive_batches(model, prompt_ids, label_ids, batch_size, pad),
        )
    out: dict[str, list[Tensor]] = {k: [] for k in ("ids", "probs", "gold", "ent", "labels", "full")}
    done = 0
    queries = progress.bar(total=len(prompts), desc="queries", unit="query")
    for logp, label_logp in batches:  # logp (B, V) at the answer position, label_logp (B, L) or None
        rows = torch.tensor(order[done : done + len(logp)])
        done += len(logp)
        queries.update(len(logp))
        p = logp.exp()
        top = p.topk(top_k, dim=-1)
        out["ids"].append(top.indices)
        out["probs"].append(top.values)
        out["gold"].append(p.gather(1, gold[rows, None])[:, 0])
        out["ent"].append(-(p * logp.clamp_min(-1e30)).nan_to_num().sum(-1))
        if save_full_dist:
            out["full"].append(p.half())
        if label_logp is not None:
            out["labels"].append(label_logp.exp())
    queries.close()
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))  # back to the prompts' order
    cat = {k: torch.cat(v)[inverse] if v else None for k, v in out.items()}
    return Predictions(gold, cat["ids"], cat["probs"], cat["gold"], cat["ent"], cat["labels"], cat["full"])


@torch.no_grad()
def naive_batches(model, prompt_ids: list[list[int]], label_ids: list[list[int]], batch_size: int, pad: int):
    """(answer-position log-probs, label log-probs) per batch of whole prompts, in the prompts' order."""
    for start in range(0, len(prompt_ids), batch_size):
        seqs = prompt_ids[start : start + batch_size]
        last = torch.tensor([len(s) - 1 for s in seqs])[:, None]  # (B, 1)
        logp = torch.log_softmax(F.logits_at(model, seqs, last, pad)[:, 0], dim=-1).cpu()  # (B, V)
        yield logp, (_label_logprobs(model, seqs, logp, label_ids, pad) if label_ids else None)


def _label_logprobs(
    model, seqs: list[list[int]], first_logp: Tensor, label_ids: list[list[int]], pad: int
) -> Tensor:
    """(B, L) log-probability of each label's token sequence after each prompt."""
    cols = []
    for ids in label_ids:
        lp = first_logp[:, ids[0]]  # (B,)
        if len(ids) > 1:
            ext = [s + ids[:-1] for s in seqs]
            # positions whose next token is ids[1:], i.e. the last prompt token + each appended token but the last
            pos = torch.tensor([[len(s) - 1 + j for j in range(1, len(ids))] for s in seqs])  # (B, m-1)
            rest = torch.log_softmax(F.logits_at(model, ext, pos, pad), dim=-1).cpu()  # (B, m-1, V)
            nxt = torch.tensor(ids[1:])[None, :, None].expand(len(seqs), -1, 1)
            lp = lp + rest.gather(2, nxt)[..., 0].sum(-1)
        cols.append(lp)
    return torch.stack(cols, dim=1)


# ---- shared-prefix key/value cache ----


def shared_prefix_length(seqs: list[list[int]]) -> int:
    """Tokens every sequence starts with, keeping at least one token of each (its answer position is computed
    in the query pass)."""
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs) - 1
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def _cache_kwarg(decoder) -> str | None:
    """The name under which the decoder takes a KV cache: `cache` (transformers >= 5.x) or `past_key_values`."""
    params = inspect.signature(decoder.forward).parameters
    return next((k for k in ("cache", "past_key_values") if k in params), None)


def supports_prefix_cache(model) -> bool:
    """A decoder-only model with a separable decoder that takes a DynamicCache and position ids."""
    decoder = F.decoder_of(model)
    if decoder is None or getattr(model.config, "is_encoder_decoder", False):
        return False
    try:
        from transformers import DynamicCache  # noqa: PLC0415

        has_layers = hasattr(DynamicCache(), "layers")
    except Exception:
        return False
    params = inspect.signature(decoder.forward).parameters
    return has_layers and _cache_kwarg(decoder) is not None and "position_ids" in params


def _new_cache(model, kv: list[tuple[Tensor, Tensor]] | None = None):
    from transformers import DynamicCache  # noqa: PLC0415

    return DynamicCache(ddp_cache_data=kv, config=model.config)


def _kv(cache) -> list[tuple[Tensor, Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _decode(model, cache, ids: Tensor, mask: Tensor, position_ids: Tensor) -> Tensor:
    """Hidden states (B, T, H) of `ids` run against `cache` (extended in place)."""
    decoder = F.decoder_of(model)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids, "use_cache": True}
    return decoder(**inputs, **{_cache_kwarg(decoder): cache}).last_hidden_state


@torch.no_grad()
def prefix_kv(model, prefix: list[int]) -> list[tuple[Tensor, Tensor]]:
    """Per-layer (keys, values), each (1, heads, P, head_dim), of the shared prefix run once."""
    device = next(model.parameters()).device
    cache = _new_cache(model)
    ids = torch.tensor([prefix], device=device)
    _decode(model, cache, ids, torch.ones_like(ids), torch.arange(len(prefix), device=device)[None])
    return _kv(cache)


def cached_batches(
    model,
    prompt_ids: list[list[int]],
    n_prefix: int,
    label_ids: list[list[int]],
    batch_size: int,
    pad: int,
):
    """(order, generator of (answer log-probs, label log-probs) per batch): queries sorted by length (less padding),
    each batch run against the shared prefix's cache expanded to the batch."""
    device = next(model.parameters()).device
    kv = prefix_kv(model, prompt_ids[0][:n_prefix])
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    head = model.get_output_embeddings()

    @torch.no_grad()  # a generator runs when consumed: it carries its own no_grad
    def batches():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            suffixes = [prompt_ids[i][n_prefix:] for i in rows]
            B = len(rows)
            ids, qmask = F.pad(suffixes, pad, device)  # (B, T)
            T = ids.shape[1]
            cache = _new_cache(model, [(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)) for k, v in kv])
            ones = torch.ones((B, n_prefix), dtype=qmask.dtype, device=device)
            mask = torch.cat([ones, qmask], dim=1)  # (B, P + T): the prefix, then each query's real tokens
            position_ids = (n_prefix + torch.arange(T, device=device))[None].expand(B, -1)
            h = _decode(model, cache, ids, mask, position_ids)  # (B, T, H)
            lengths = torch.tensor([len(s) for s in suffixes], device=device)
            h_last = h[torch.arange(B, device=device), lengths - 1]  # (B, H) at each answer position
            logp = torch.log_softmax(head(h_last).float(), dim=-1).cpu()  # (B, V)
            labels = None
            if label_ids:
                labels = _cached_label_logprobs(model, cache, mask, lengths, n_prefix, logp, label_ids)
            yield logp, labels

    return order, batches()


def _cached_label_logprobs(
    model,
    cache,
    mask: Tensor,
    lengths: Tensor,
    n_prefix: int,
    first_logp: Tensor,
    label_ids: list[list[int]],
) -> Tensor:
    """(B, L) log-probability of each label's token sequence, continuing each query from its cache (prefix +
    query, padding masked out): only the label's tokens but the last are run."""
    device = mask.device
    B = mask.shape[0]
    kv = _kv(cache)  # (B, heads, P + T, head_dim) per layer; never modified (each label gets its own cache)
    cols = []
    for ids in label_ids:
        lp = first_logp[:, ids[0]]  # (B,)
        if len(ids) > 1:
            m = len(ids) - 1
            ext = torch.tensor(ids[:-1], device=device)[None].expand(B, -1)  # (B, m-1)
            ext_mask = torch.cat([mask, torch.ones((B, m), dtype=mask.dtype, device=device)], dim=1)
            position_ids = (n_prefix + lengths)[:, None] + torch.arange(m, device=device)[
                None
            ]  # after each query
            h = _decode(model, _new_cache(model, kv), ext, ext_mask, position_ids)  # (B, m-1, H)
            rest = torch.log_softmax(model.get_output_embeddings()(h).float(), dim=-1).cpu()  # (B, m-1, V)
            nxt = torch.tensor(ids[1:])[None, :, None].expand(B, -1, 1)
            lp = lp + rest.gather(2, nxt)[..., 0].sum(-1)
        cols.append(lp)
    return torch.stack(cols, dim=1)
