"""Per-query agreement of two sets of answer-position outputs, by metric name: what a GD search scores with.

The same definitions as the sweep's pair metrics (sweep/compare.py): overlap@k and OCS on the stored top-K,
top-1 agreement, and TV / JS over the label words (renormalised) or the full vocabulary (renormalised).
`Outputs` is anything with the Predictions fields (topk_ids, topk_probs, label_probs, full_dist).
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from icl_gd.metrics.distributions import (
    argmax_agreement,
    js_divergence,
    overlap_cosine,
    renormalize,
    topk_overlap,
    total_variation,
)

DISTANCES = ("tv", "js")  # lower = closer (also label_tv, label_js); every other metric: higher = closer
FULL_DIST_METRICS = ("tv", "js")  # need the full next-token distribution of both sides
LABEL_METRICS = ("label_tv", "label_js", "label_agreement")
METRICS = ("overlap@k", "ocs", "top1_agreement", *LABEL_METRICS, *FULL_DIST_METRICS)


class Outputs(Protocol):
    topk_ids: Tensor
    topk_probs: Tensor
    label_probs: Tensor | None
    full_dist: Tensor | None


def closer_sign(metric: str) -> float:
    """+1 where a higher value means closer, -1 for a divergence: sign * value is a score to maximise."""
    return -1.0 if metric.removeprefix("label_") in DISTANCES else 1.0


def default_metric(has_label_words: bool) -> str:
    """stats.primary=auto: label_tv where the task has label words, else overlap@k (as the verdicts)."""
    return "label_tv" if has_label_words else "overlap@k"


def agreement(metric: str, a: Outputs, b: Outputs) -> Tensor:
    """(Q,) float64 values of `metric` between a and b on the same queries."""
    if metric == "overlap@k":
        return topk_overlap(a.topk_ids, b.topk_ids)
    if metric == "ocs":
        return overlap_cosine(a.topk_ids, a.topk_probs, b.topk_ids, b.topk_probs)
    if metric == "top1_agreement":
        return (a.topk_ids[:, 0] == b.topk_ids[:, 0]).double()
    if metric in LABEL_METRICS:
        if a.label_probs is None or b.label_probs is None:
            raise ValueError(f"{metric} needs label words (dataset.label_words)")
        la, lb = renormalize(a.label_probs.double()), renormalize(b.label_probs.double())
        fn = {"label_tv": total_variation, "label_js": js_divergence, "label_agreement": argmax_agreement}
        return fn[metric](la, lb)
    if metric in FULL_DIST_METRICS:
        if a.full_dist is None or b.full_dist is None:
            raise ValueError(f"{metric} needs the full distribution (eval.save_full_dist=true)")
        fa, fb = renormalize(a.full_dist.double()), renormalize(b.full_dist.double())
        return total_variation(fa, fb) if metric == "tv" else js_divergence(fa, fb)
    raise ValueError(f"unknown agreement metric {metric!r}; one of {', '.join(METRICS)}")
