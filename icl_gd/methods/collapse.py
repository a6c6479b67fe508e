"""When a fine-tuned model has collapsed: its answers near uniform, or its demo loss at chance or blown up.

A collapsed GD point is no winner of a search and no result of a gd job (`collapse:` in conf/config.yaml holds the
thresholds). Each criterion counts only as a change that training made: an untrained model that is near uniform
already (the untrained control) has not collapsed.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from icl_gd.errors import DivergedError


class CollapsedError(DivergedError):
    """Training collapsed the model (the job is recorded failed, with `collapsed: 1` in metrics.json)."""

    def __init__(self, message: str, metrics: dict[str, float]) -> None:
        super().__init__(message)
        self.metrics = {"collapsed": 1.0, **metrics}


def collapse_reason(
    cfg: DictConfig,
    log_vocab: float,
    loss: float,
    initial_loss: float,
    entropy: float | None = None,
    initial_entropy: float | None = None,
) -> str | None:
    """Why the point collapsed, or None. loss: mean answer loss on the demos; entropy: mean answer entropy (nats)."""
    near = float(cfg.entropy_fraction) * log_vocab
    if not math.isfinite(loss):
        return f"the demo loss is {loss}"
    if loss >= near > initial_loss:
        return f"the demo loss rose to {loss:.3g}, chance level (ln V = {log_vocab:.3g}), from {initial_loss:.3g}"
    if initial_loss > 0 and loss > float(cfg.loss_rise) * initial_loss:
        return f"the demo loss rose to {loss:.3g}, over {cfg.loss_rise} x its start {initial_loss:.3g}"
    if entropy is not None and initial_entropy is not None and entropy >= near > initial_entropy:
        return (
            f"the answer distribution is near uniform (entropy {entropy:.3g} of ln V = {log_vocab:.3g} nats, "
            f"from {initial_entropy:.3g})"
        )
    return None
