"""Next-token distributions at the answer position, for a batch of prompts; shared by every method.

Prompts are padded on the right (causal attention makes the pad invisible to real tokens) and the unembedding
is applied only at the positions we read, so a batch never materialises (batch, length, vocab) logits.
A label word's probability is that of its whole token sequence: the first token from the answer-position
distribution, the rest from one extra forward pass per multi-token label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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


def encode(tokenizer, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=add_special_tokens).input_ids for t in texts]


def continuation_ids(tokenizer, text: str) -> list[int]:
    """Token ids of an answer continuation as it follows the prompt (" walked"): no BOS, no EOS."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"the answer {text!r} encodes to no tokens")
    return ids


def _pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def logits_at(model, seqs: list[list[int]], positions: Tensor, pad_id: int) -> Tensor:
    """Logits (B, P, V) at `positions` (B, P) of right-padded sequences, unembedding only those positions."""
    device = next(model.parameters()).device
    ids, mask = _pad(seqs, pad_id, device)
    positions = positions.to(device)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is not None and decoder is not model:
        h = decoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        h = torch.gather(h, 1, positions[..., None].expand(-1, -1, h.shape[-1]))  # (B, P, H)
        return model.get_output_embeddings()(h).float()
    logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V): models without a separable decoder
    return torch.gather(logits, 1, positions[..., None].expand(-1, -1, logits.shape[-1])).float()


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
) -> Predictions:
    """Distributions at the end of each prompt, plus gold and label-word probabilities."""
    add_special = True if add_bos is None else add_bos
    prompt_ids = encode(tokenizer, prompts, add_special)
    gold = torch.tensor([continuation_ids(tokenizer, a)[0] for a in answers])
    label_ids = [continuation_ids(tokenizer, w) for w in label_words] if label_words else []
    pad = tokenizer.pad_token_id
    out: dict[str, list[Tensor]] = {k: [] for k in ("ids", "probs", "gold", "ent", "labels", "full")}
    for start in range(0, len(prompts), batch_size):
        seqs = prompt_ids[start : start + batch_size]
        last = torch.tensor([len(s) - 1 for s in seqs])[:, None]  # (B, 1)
        logp = torch.log_softmax(logits_at(model, seqs, last, pad)[:, 0], dim=-1).cpu()  # (B, V)
        p = logp.exp()
        top = p.topk(top_k, dim=-1)
        out["ids"].append(top.indices)
        out["probs"].append(top.values)
        out["gold"].append(p.gather(1, gold[start : start + len(seqs), None])[:, 0])
        out["ent"].append(-(p * logp.clamp_min(-1e30)).nan_to_num().sum(-1))
        if save_full_dist:
            out["full"].append(p.half())
        if label_ids:
            out["labels"].append(_label_logprobs(model, seqs, logp, label_ids, pad).exp())
    cat = {k: torch.cat(v) if v else None for k, v in out.items()}
    return Predictions(gold, cat["ids"], cat["probs"], cat["gold"], cat["ent"], cat["labels"], cat["full"])


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
            rest = torch.log_softmax(logits_at(model, ext, pos, pad), dim=-1).cpu()  # (B, m-1, V)
            nxt = torch.tensor(ids[1:])[None, :, None].expand(len(seqs), -1, 1)
            lp = lp + rest.gather(2, nxt)[..., 0].sum(-1)
        cols.append(lp)
    return torch.stack(cols, dim=1)
