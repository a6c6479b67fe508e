"""The one home of metric math: pure functions of tensors, tested without a model.

distributions: per-query metrics on next-token distributions (accuracy, overlap@K, OCS, TV/KL/JS).
intervals: means with intervals. dai: Dai et al.'s Rec2FTP, SimAOU, SimAM. sparsity: fractions below thresholds.
"""

from icl_gd.metrics.distributions import (
    accuracy,
    argmax_agreement,
    cosine,
    entropy,
    js_divergence,
    kl_divergence,
    overlap_cosine,
    renormalize,
    topk_overlap,
    total_variation,
)
from icl_gd.metrics.intervals import (
    Z95,
    Interval,
    cluster_bootstrap,
    holm,
    mean_ci,
    normal_interval,
    summarize,
    summarize_binary,
    summarize_mean,
    wilson,
)
from icl_gd.metrics.order import label_prob_std as label_prob_std

__all__ = [
    "Z95",
    "Interval",
    "cluster_bootstrap",
    "holm",
    "summarize_binary",
    "summarize_mean",
    "wilson",
    "accuracy",
    "argmax_agreement",
    "cosine",
    "entropy",
    "js_divergence",
    "kl_divergence",
    "mean_ci",
    "normal_interval",
    "overlap_cosine",
    "renormalize",
    "summarize",
    "topk_overlap",
    "total_variation",
]
