"""steps.py: the step schedule, the batch size and the requires_grad scope that both training loops share."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from icl_gd.methods.steps import batch_size, diverged, schedule, trainable_only


def test_schedule_epochs_cover_each_demo_once_per_epoch() -> None:
    rows = list(schedule(n_demos=5, bs=2, epochs=2, steps=None))
    assert rows == [(0, 0, 0), (1, 0, 2), (2, 0, 4), (3, 1, 0), (4, 1, 2), (5, 1, 4)]


def test_schedule_steps_cycle_and_stop_exactly() -> None:
    rows = list(schedule(n_demos=3, bs=1, epochs=99, steps=4))
    assert rows == [(0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 1, 0)]
    assert list(schedule(n_demos=3, bs=3, epochs=1, steps=0)) == []


@pytest.mark.parametrize(("value", "n", "expected"), [("all", 7, 7), (1, 7, 1), ("4", 7, 4)])
def test_batch_size(value: object, n: int, expected: int) -> None:
    assert batch_size(OmegaConf.create({"batch_size": value}), n) == expected


def test_trainable_only_scopes_and_restores_flags() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[1].bias.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    chosen = {"0.weight": model[0].weight}
    with trainable_only(model, chosen):
        assert [n for n, p in model.named_parameters() if p.requires_grad] == ["0.weight"]
    assert [p.requires_grad for p in model.parameters()] == before


def test_trainable_only_restores_on_error() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError), trainable_only(model, {}):
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError
    assert all(p.requires_grad for p in model.parameters())


def test_diverged_on_nan_and_blowup() -> None:
    cfg = OmegaConf.create({"explode_factor": 10.0})
    assert diverged(float("nan"), 1.0, cfg)
    assert diverged(10.5, 1.0, cfg)
    assert not diverged(9.5, 1.0, cfg)
    assert not torch.isnan(torch.tensor(9.5))
