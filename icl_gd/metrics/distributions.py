"""Pure metrics on next-token distributions: tensors in, tensors out.

Definitions (DESIGN.md, "Metrics"). For a query, p is the next-token distribution at the answer position.

- accuracy: the top-1 token of p equals the first token of the gold answer (label accuracy is the same
  function applied to the argmax over the label words' first tokens).
- token overlap@K: |topK(p_a) ∩ topK(p_b)| / K.
- overlap cosine similarity (OCS): cosine of p_a and p_b restricted to the tokens in topK(p_a) ∩ topK(p_b),
  0 when the intersection is empty.
- agreement of argmax, total variation, KL and Jensen-Shannon divergence, over the full vocabulary or over
  the label words (pass the label-word columns through `renormalize` first).
- every metric is reported as a mean with a 95% confidence interval (`intervals.mean_ci`, `intervals.summarize`).

Shapes: Q queries, V vocabulary (or label words), K top-K size. Per-query functions return a (Q,) tensor
and keep the reduction separate (`mean_ci`). Conventions:
- every tensor returned here is float64, whatever the input dtype (float16 distributions are saved to
  disk), and every computation runs in float64, so float16 inputs lose nothing further;
- nothing is renormalized implicitly: callers pass distributions that sum to 1 (or call `renormalize`);
- natural logarithms throughout (nats).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _f64(x: Tensor) -> Tensor:
    return x.to(torch.float64)


def _same_shape(name: str, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def safe_ratio(num: Tensor, denom: Tensor) -> Tensor:
    """num / denom where denom > 0, else 0: the one guard every cosine here uses (float64 in, float64 out)."""
    return torch.where(denom > 0, num / denom.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Rowwise cosine similarity (Q,) in float64 of (Q, ...) tensors; 0 for a row where either side is zero."""
    _same_shape("cosine", a, b)
    a, b = _f64(a).flatten(1), _f64(b).flatten(1)
    return safe_ratio((a * b).sum(1), a.norm(dim=1) * b.norm(dim=1))


# ---------------------------------------------------------------------------------------------------------
# Per-query metrics


def accuracy(top1_ids: Tensor, gold_ids: Tensor) -> Tensor:
    """1.0 where the predicted token equals the gold token, else 0.0.

    top1_ids, gold_ids: (Q,) token ids. Returns (Q,) float64.
    """
    _same_shape("accuracy", top1_ids, gold_ids)
    return (top1_ids == gold_ids).to(torch.float64)


def entropy(p: Tensor) -> Tensor:
    """H(p) = -sum_v p_v ln p_v, in nats, with 0 ln 0 = 0.

    p: (Q, V) probabilities. Returns (Q,) float64.
    """
    p = _f64(p)
    return -torch.special.xlogy(p, p).sum(-1)


def topk_overlap(topk_a: Tensor, topk_b: Tensor) -> Tensor:
    """Token overlap@K = |topK(p_a) ∩ topK(p_b)| / K.

    topk_a, topk_b: (Q, K) token ids, distinct within a row. Returns (Q,) float64 in [0, 1].
    """
    _same_shape("topk_overlap", topk_a, topk_b)
    k = topk_a.shape[-1]
    shared = (topk_a[..., :, None] == topk_b[..., None, :]).any(-1)  # (Q, K): a's token is in b's top-K
    return shared.sum(-1).to(torch.float64) / k


def overlap_cosine(ids_a: Tensor, probs_a: Tensor, ids_b: Tensor, probs_b: Tensor) -> Tensor:
    """Overlap cosine similarity (OCS): cos(p_a|S, p_b|S) with S = topK(p_a) ∩ topK(p_b); 0 when S is empty.

    cos = sum_{t in S} p_a(t) p_b(t) / (sqrt(sum_{t in S} p_a(t)^2) sqrt(sum_{t in S} p_b(t)^2)).
    With one shared token the cosine is 1: OCS compares the shape of p over S, overlap@K its size.

    ids_a, probs_a: (Q, Ka) top-K token ids of side a and their probabilities; ids_b, probs_b: (Q, Kb).
    Ids are distinct within a row. Returns (Q,) float64 in [0, 1].
    """
    _same_shape("overlap_cosine (side a)", ids_a, probs_a)
    _same_shape("overlap_cosine (side b)", ids_b, probs_b)
    pa, pb = _f64(probs_a), _f64(probs_b)
    match = (ids_a[..., :, None] == ids_b[..., None, :]).to(torch.float64)  # (Q, Ka, Kb)
    dot = torch.einsum("qi,qij,qj->q", pa, match, pb)
    norm_a = (pa.square() * match.amax(-1)).sum(-1).sqrt()  # over a's tokens that b also has
    norm_b = (pb.square() * match.amax(-2)).sum(-1).sqrt()
    denom = norm_a * norm_b
    return safe_ratio(dot, denom)


def argmax_agreement(p_a: Tensor, p_b: Tensor) -> Tensor:
    """1.0 where argmax_v p_a = argmax_v p_b (ties go to the lowest id), else 0.0.

    p_a, p_b: (Q, V). Returns (Q,) float64.
    """
    _same_shape("argmax_agreement", p_a, p_b)
    return (p_a.argmax(-1) == p_b.argmax(-1)).to(torch.float64)


def total_variation(p_a: Tensor, p_b: Tensor) -> Tensor:
    """TV(p_a, p_b) = 0.5 * sum_v |p_a(v) - p_b(v)|, in [0, 1].

    p_a, p_b: (Q, V) probabilities. Returns (Q,) float64.
    """
    _same_shape("total_variation", p_a, p_b)
    return 0.5 * (_f64(p_a) - _f64(p_b)).abs().sum(-1)


def kl_divergence(p_a: Tensor, p_b: Tensor, eps: float = 1e-12) -> Tensor:
    """KL(p_a || p_b) = sum_v p_a(v) (ln p_a(v) - ln max(p_b(v), eps)), in nats, with 0 ln 0 = 0.

    The clamp keeps the value finite where p_b underflowed (float16 distributions hold exact zeros).
    p_a, p_b: (Q, V) probabilities. Returns (Q,) float64.
    """
    _same_shape("kl_divergence", p_a, p_b)
    p, q = _f64(p_a), _f64(p_b).clamp_min(eps)
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(-1)


def js_divergence(p_a: Tensor, p_b: Tensor) -> Tensor:
    """JS(p_a, p_b) = 0.5 KL(p_a || m) + 0.5 KL(p_b || m), m = (p_a + p_b) / 2, in nats, in [0, ln 2].

    No clamp is needed: m >= p/2 wherever p > 0. p_a, p_b: (Q, V) probabilities. Returns (Q,) float64.
    """
    _same_shape("js_divergence", p_a, p_b)
    p, q = _f64(p_a), _f64(p_b)
    m = 0.5 * (p + q)

    def kl_to_m(x: Tensor) -> Tensor:
        return (torch.special.xlogy(x, x) - torch.special.xlogy(x, m)).sum(-1)

    return 0.5 * kl_to_m(p) + 0.5 * kl_to_m(q)


def renormalize(p: Tensor) -> Tensor:
    """p / sum_v p_v per row, e.g. to turn the label words' probabilities into a distribution.

    p: (Q, V) non-negative. Returns (Q, V) float64; a row that sums to 0 becomes NaN (the caller sees it,
    and `mean_ci` drops it and reports the smaller n).
    """
    p = _f64(p)
    return p / p.sum(-1, keepdim=True)
