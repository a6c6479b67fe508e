"""Dai et al.'s metrics exactly as microsoft/LMOps (understand_icl/icl_ft) and GiilDe/ft-vs-icl compute them.

Pure functions of captured tensors (analysis/hooks.py `capture_scores`, `TrainingQueries`); analysis/dai.py
names each result with an `_lmops` (or `_deutch`) suffix beside the project's own variants (metrics/dai.py).

- SimAOU (`compute_sim.py` `analyze_sim(..., normalize=True)`): the hidden states (attention output at the label
  token) are unit-normalised first, then the cosine of (icl - zs) and (ft - zs), eps 1e-20 in the denominator.
- Random SimAOU: the same cosine against `np.random.random`, uniform [0, 1) (not N(0, 1)).
- SimAM (`analyze_attn_map(..., softmax=False)`): the scaled pre-softmax q·kᵀ scores of the label token over the
  query's tokens, the cosine per head, then the mean over heads; Deutch et al.'s `diff=True` takes the cosine of
  (icl - zs) and (ft - zs) of those scores instead.
- Kendall (`compute_training_example_attn.py`): the ICL model's attention from the label token to the
  demonstration tokens (pre-softmax scores summed over heads, sliced to the demos' tokens, softmaxed) against the
  fine-tuned model's "attention" to the training tokens (its query at the label token dotted with the query
  vector of every training token as recorded during fine-tuning, softmaxed); per demo (`example` level: the mass
  of each demo's tokens) or per token, Kendall's tau-b (scipy), a uniform [0, 1) map as the random baseline.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import torch
from torch import Tensor

EPS = 1e-20  # LMOps's cal_cos_sim and norm_hidden: added to the norms' product (and to each norm)
EXAMPLE, TOKEN = "example", "token"  # compute_training_attn's two levels


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """LMOps's cal_cos_sim over the last dim, in float64: (a·b) / (|a| |b| + 1e-20)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + EPS)


def unit(x: Tensor) -> Tensor:
    """LMOps's norm_hidden: x / (|x| + 1e-20) over the last dim, in float64."""
    x = x.to(torch.float64)
    return x / (x.norm(dim=-1, keepdim=True) + EPS)


def simaou(zs: Tensor, icl: Tensor, ft: Tensor) -> Tensor:
    """(Q,) SimAOU with normalize=True: cos(unit(icl) - unit(zs), unit(ft) - unit(zs)) of (Q, hidden) captures."""
    z = unit(zs)
    return cosine(unit(icl) - z, unit(ft) - z)


def uniform_update_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """LMOps's random update: uniform [0, 1) of x's shape (float64), as np.random.random draws it."""
    return torch.rand(x.shape, generator=generator, dtype=torch.float64)


def simaou_random(zs: Tensor, icl: Tensor, generator: torch.Generator) -> Tensor:
    """(Q,) the random-update baseline: the normalised ICL update against a uniform [0, 1) update."""
    return cosine(unit(icl) - unit(zs), uniform_update_like(zs, generator))


def simam(a: Tensor, b: Tensor) -> Tensor:
    """(Q,) SimAM of two (Q, heads, L) pre-softmax score maps: the cosine per head, then the mean over heads.

    Zero padding (LMOps pads the shorter maps with 0 before the cosine) adds nothing to either norm or the product.
    """
    return cosine(a, b).mean(-1)


def simam_diff(zs: Tensor, icl: Tensor, ft: Tensor) -> Tensor:
    """(Q,) Deutch et al.'s update-relative SimAM (diff=True): simam(icl - zs, ft - zs) of the score maps."""
    zs = zs.to(torch.float64)
    return simam(icl.to(torch.float64) - zs, ft.to(torch.float64) - zs)


def softmax(x: Tensor) -> Tensor:
    """Softmax over the last dim in float64 (LMOps's np_softmax)."""
    return torch.softmax(x.to(torch.float64), dim=-1)


def icl_demo_attention(scores: Tensor, positions: list[list[int]]) -> Tensor:
    """(layers, tokens) the ICL attention to the demos' tokens: `scores` (layers, heads, T) pre-softmax scores of
    the label token, summed over heads, sliced to the demos' token positions (demo by demo), then softmaxed."""
    flat = [p for demo in positions for p in demo]
    return softmax(scores.to(torch.float64).sum(1)[:, flat])


def ft_demo_attention(query: Tensor, training: list[Tensor]) -> Tensor:
    """(layers, tokens) the fine-tuned model's attention to the training tokens: `query` (layers, q_dim) at the
    label token dotted with each training token's query vector (`training`: per demo (layers, n_i, q_dim)),
    softmaxed over all training tokens."""
    keys = torch.cat([t.to(torch.float64) for t in training], dim=1)  # (layers, tokens, q_dim)
    return softmax(torch.einsum("ld,ltd->lt", query.to(torch.float64), keys))


def per_example(attention: Tensor, counts: list[int]) -> Tensor:
    """(layers, demos) the attention mass of each demo's tokens (compute_training_attn's level='example')."""
    return torch.stack([chunk.sum(-1) for chunk in attention.split(counts, dim=-1)], dim=-1)


def kendall(a: Tensor, b: Tensor) -> float:
    """Kendall's tau-b of two 1-d maps (scipy.stats.kendalltau, as LMOps calls it); nan if either is constant."""
    return float(scipy.stats.kendalltau(a.numpy(), b.numpy())[0])


def kendall_layers(icl: Tensor, ft: Tensor) -> Tensor:
    """(layers,) Kendall's tau of each layer's ICL and fine-tuned attention maps (layers, n)."""
    return torch.tensor([kendall(i, f) for i, f in zip(icl, ft, strict=True)], dtype=torch.float64)


def kendall_random_layers(icl: Tensor, rng: np.random.Generator) -> Tensor:
    """(layers,) Kendall's tau of each layer's ICL map against a uniform [0, 1) map (LMOps's random_kendall)."""
    return torch.tensor(
        [kendall(i, torch.from_numpy(rng.random(i.shape[-1]))) for i in icl], dtype=torch.float64
    )
