"""Seeded choice of demonstrations and queries.

Demos depend only on (dataset, n, seed, sampling) and their order only on order_seed; queries only on
(dataset, seed). Never on the method or the model: an icl job and a gd job with the same key see the same examples.
Each draw has its own torch.Generator seeded from a string key, so adding a draw never shifts another.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import torch

from icl_gd.data.loading import Example
from icl_gd.errors import ConfigError


def _generator(*key: object) -> torch.Generator:
    digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _perm(n: int, *key: object) -> list[int]:
    return torch.randperm(n, generator=_generator(*key)).tolist()


def sample_queries(test: list[Example], n: int, seed: int, dataset: str) -> list[Example]:
    """The first n of a seeded shuffle of the test pool (so the queries of n=20 are a prefix of n=50)."""
    if n > len(test):
        raise ConfigError(
            f"eval.n_queries={n} exceeds the {len(test)} test examples of dataset={dataset}: lower it."
        )
    return [test[i] for i in _perm(len(test), "queries", dataset, seed)[:n]]


def sample_selection(test: list[Example], n: int, n_queries: int, seed: int, dataset: str) -> list[Example]:
    """n selection queries: the last n of the same seeded shuffle whose first n_queries are the test queries.

    Disjoint from the test queries of any n_queries that fits beside them, and the test queries stay what they
    were without a selection split. Anything chosen (a GD setting, a step) is chosen on these, reported on those.
    """
    if n == 0:
        return []
    if n + n_queries > len(test):
        raise ConfigError(
            f"eval.n_select={n} + eval.n_queries={n_queries} exceed the {len(test)} test examples of "
            f"dataset={dataset}: lower one of them (selection and test queries are disjoint)."
        )
    perm = _perm(len(test), "queries", dataset, seed)
    return [test[i] for i in perm[len(perm) - n :]]


def shuffle_labels(demos: list[Example], seed: int, dataset: str) -> list[Example]:
    """The null control demo_labels=shuffled: the same demos, their answers (and raw labels) permuted among them.

    Seeded by (dataset, seed); redrawn until the answers move wherever two of them differ.
    """
    n = len(demos)
    perm, draw = _perm(n, "labels_shuffled", dataset, seed), 0
    answers = [d.answer for d in demos]
    while len(set(answers)) > 1 and [answers[i] for i in perm] == answers:
        draw += 1
        perm = _perm(n, "labels_shuffled", dataset, seed, draw)
    return [
        replace(d, label=demos[i].label, answer=demos[i].answer) for d, i in zip(demos, perm, strict=True)
    ]


def sample_demos(
    pool: list[Example], n: int, seed: int, dataset: str, sampling: str = "random"
) -> list[Example]:
    """n demonstrations from the pool; `balanced` takes labels round-robin (in a seeded label order)."""
    if n > len(pool):
        raise ConfigError(
            f"demos={n} exceeds the demonstration pool of dataset={dataset} ({len(pool)} examples): lower demos."
        )
    order = [pool[i] for i in _perm(len(pool), "demos", dataset, seed)]
    if sampling == "random":
        return order[:n]
    by_label: dict[str, list[Example]] = {}
    for ex in order:
        by_label.setdefault(ex.label, []).append(ex)
    labels = sorted(by_label)
    labels = [labels[i] for i in _perm(len(labels), "labels", dataset, seed)]
    out: list[Example] = []
    while len(out) < n:
        for lab in labels:
            if by_label[lab] and len(out) < n:
                out.append(by_label[lab].pop(0))
    return out


def order_demos(demos: list[Example], order_seed: int | None) -> list[Example]:
    """The same demos in another order: None keeps the sampled order, an int applies that seeded permutation
    (never the identity when there are two or more demos, so the ICL-vs-ICL floor always compares two orders)."""
    if order_seed is None:
        return list(demos)
    n = len(demos)
    perm, draw = _perm(n, "order", order_seed), 0
    while n > 1 and perm == list(range(n)):  # the floor needs another order: redraw (seeded) until it differs
        draw += 1
        perm = _perm(n, "order", order_seed, draw)
    return [demos[i] for i in perm]


def sample_heldout(
    pool: list[Example], exclude: list[Example], n: int, seed: int, dataset: str
) -> list[Example]:
    """n pool examples that are not among `exclude` (the demos): for choosing a GD learning rate without the queries."""
    taken = {e.id for e in exclude}
    rest = [e for e in pool if e.id not in taken]
    if n > len(rest):
        raise ConfigError(
            f"method.heldout={n} held-out demonstrations are asked for, but dataset={dataset} has only {len(rest)} "
            "pool examples besides the demos: lower method.heldout or demos."
        )
    return [rest[i] for i in _perm(len(rest), "heldout", dataset, seed)[:n]]
