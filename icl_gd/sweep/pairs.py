"""Which finished jobs form a pair, and of which type (the names: pair_types.py).

Two jobs form a method pair when their resolved configs agree on everything but the method, or an order pair when
they are of one method label and differ only in `order_seed` (the noise floor of that method), unless the two
realised orders (demos.jsonl) are equal. A null control pairs an ICL job on its own task's demos and labels with
every control job (demo_labels=shuffled, demo_source=<dataset>) whose config is otherwise its own but for the
method. Control jobs pair among themselves as any jobs do, marked `_both_...`, so they never pool with the pairs on
the original demos (nor feed the floor).
"""

from __future__ import annotations

import itertools
import logging

from icl_gd.sweep.jobs import LABELS_KEY, METHOD_ORDER, ORDER_KEY, SOURCE_KEY, Job, demo_order
from icl_gd.sweep.pair_types import (
    BOTH_SHUFFLED,
    BOTH_SOURCE,
    order_pair,
    shuffled_pair,
    source_pair,
)

log = logging.getLogger(__name__)


def control_pair(label_a: str, b: Job) -> str:
    """A null control's pair type: ICL on its own task's demos vs the control job `b`."""
    if b.shuffled:
        return shuffled_pair(label_a, b.method_label)
    return source_pair(label_a, b.method_label, str(b.demo_source))


def _groups(jobs: list[Job], *drop: str) -> list[list[Job]]:
    """The jobs grouped by `Job.key(*drop)`, in the order their keys first appear."""
    by_key: dict[str, list[Job]] = {}
    for j in jobs:
        by_key.setdefault(j.key(*drop), []).append(j)
    return list(by_key.values())


def _marked(pair_type: str, a: Job) -> str:
    """A pair type, marked `_both_shuffled` / `_both_demos_from_<dataset>` when its jobs are controls (their key
    holds demo_labels and demo_source, so both jobs are the same control)."""
    if a.shuffled:
        return pair_type + BOTH_SHUFFLED
    return pair_type + BOTH_SOURCE + a.demo_source if a.demo_source else pair_type


def _order_pairs(jobs: list[Job]) -> list[tuple[str, Job, Job]]:
    """Jobs of one method label differing only in order_seed, unless their realised orders (demos.jsonl) are equal."""
    pairs = []
    for group in _groups(jobs, ORDER_KEY):  # the key holds the method config: one label per group
        group.sort(key=Job.order_rank)
        for a, b in itertools.combinations(group, 2):
            order_a = demo_order(a)
            if order_a is not None and order_a == demo_order(b):  # the same realised order is no pair
                log.warning("no order pair: %s and %s used the same demo order", a.folder.name, b.folder.name)
                continue
            pairs.append((_marked(order_pair(a.method_label), a), a, b))
    return pairs


def _control_pairs(jobs: list[Job]) -> list[tuple[str, Job, Job]]:
    """The null controls: each ICL job on its own task's demos and labels in the sampled order (order_seed null)
    against every control job (shuffled labels, demos from another task) whose config is otherwise its own, the
    method aside."""
    drop = ("method", LABELS_KEY, SOURCE_KEY)
    icl: dict[str, list[Job]] = {}
    for j in jobs:
        if j.method == "icl" and not j.is_control and j.config.get(ORDER_KEY) is None:
            icl.setdefault(j.key(*drop), []).append(j)
    pairs = []
    for b in (j for j in jobs if j.is_control):
        for a in icl.get(b.key(*drop), []):
            pairs.append((control_pair(a.method_label, b), a, b))
    return pairs


def find_pairs(jobs: list[Job]) -> list[tuple[str, Job, Job]]:
    """(pair type, reference job, other job): method pairs, order pairs of every method, the shuffled-label control.

    Method pairs agree on all but the method: jobs on shuffled and on original labels differ in `demo_labels`, so
    they are never a method pair (only the control pairs them), and pairs among shuffled jobs are `_both_shuffled`.
    """
    pairs = []
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    for group in _groups(jobs, "method"):
        group.sort(key=lambda j: (rank.get(j.method, len(rank)), j.method_label))
        for a, b in itertools.combinations(group, 2):
            if a.method_label != b.method_label:
                pairs.append((_marked(f"{a.method_label}_vs_{b.method_label}", a), a, b))
    return pairs + _order_pairs(jobs) + _control_pairs(jobs)
