"""Forward helpers every method and analysis shares: tokenise, pad, logits at chosen positions.

Prompts are padded on the right (causal attention makes the pad invisible to real tokens) and the unembedding is
applied only at the positions read, so a batch never materialises (batch, length, vocab) logits.
"""

from __future__ import annotations

import torch
from torch import Tensor


def encode(tokenizer, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=add_special_tokens).input_ids for t in texts]


def continuation_ids(tokenizer, text: str) -> list[int]:
    """Token ids of an answer continuation as it follows the prompt (" walked"): no BOS, no EOS."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"the answer {text!r} encodes to no tokens")
    return ids


def pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-pad token id lists to (B, T) ids and a 0/1 attention mask (causal attention hides the pad)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def decoder_of(model):
    """The model without its unembedding, when it has one apart (every causal LM of transformers does)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    return decoder if decoder is not None and decoder is not model else None


def forward_at(model, positions: Tensor, **inputs) -> Tensor:
    """Logits (B, P, V) at `positions` (B, P) of a forward pass, unembedding only those positions."""
    positions = positions.to(inputs["input_ids"].device)
    decoder = decoder_of(model)
    if decoder is not None:
        h = decoder(**inputs).last_hidden_state  # (B, T, H)
        h = torch.gather(h, 1, positions[..., None].expand(-1, -1, h.shape[-1]))  # (B, P, H)
        return model.get_output_embeddings()(h).float()
    logits = model(**inputs).logits  # (B, T, V): models without a separable decoder
    return torch.gather(logits, 1, positions[..., None].expand(-1, -1, logits.shape[-1])).float()


def logits_at(model, seqs: list[list[int]], positions: Tensor, pad_id: int) -> Tensor:
    """Logits (B, P, V) at `positions` (B, P) of right-padded sequences, unembedding only those positions."""
    ids, mask = pad(seqs, pad_id, next(model.parameters()).device)
    return forward_at(model, positions, input_ids=ids, attention_mask=mask)
