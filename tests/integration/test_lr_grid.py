"""method.lr_grid: one training per learning rate, scored on held-out demonstrations, the weights restored after each."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from icl_gd import io
from icl_gd.data import Example, sample_heldout
from icl_gd.errors import ConfigError, DivergedError
from icl_gd.methods import GD, finetune
from icl_gd.methods.lr_search import select_lr
from icl_gd.runner import run
from tests.helpers.config import compose_config


def batch(lm, words: list[tuple[str, str]]):
    return finetune.build_batch(
        lm.tokenizer, [f"word: {a}\npast:" for a, _ in words], [f" {b}" for _, b in words], None
    )


DEMOS = [("walk", "walked"), ("jump", "jumped"), ("sing", "sang")]
HELDOUT = [("go", "went"), ("see", "saw")]


def test_select_lr_keeps_the_lowest_heldout_loss_and_restores_weights(tiny_lm) -> None:
    grid = [1e-1, 1e-2, 1e-4]
    method = OmegaConf.merge(
        compose_config(["output_dir=/tmp/x", "method=gd", "method.optimizer=sgd"]).method, {"lr_grid": grid}
    )
    before = {n: p.detach().clone() for n, p in tiny_lm.model.named_parameters()}
    chosen, rows = select_lr(
        GD().adapted, method, tiny_lm, batch(tiny_lm, DEMOS), batch(tiny_lm, HELDOUT), seed=0
    )
    assert all(torch.equal(p, before[n]) for n, p in tiny_lm.model.named_parameters())
    # the same numbers by hand: train with each lr, score the held-out demos, restore
    expected = []
    params = finetune.select_parameters(tiny_lm.model, method)
    for lr in grid:
        with finetune.restoring(params):
            finetune.train(
                tiny_lm.model,
                tiny_lm.tokenizer,
                batch(tiny_lm, DEMOS),
                params,
                OmegaConf.merge(method, {"lr": lr}),
                0,
            )
            expected.append(
                finetune.mean_demo_loss(
                    tiny_lm.model, batch(tiny_lm, HELDOUT), tiny_lm.tokenizer.pad_token_id
                )
            )
    assert [r["lr"] for r in rows] == grid
    assert [r["heldout_loss"] for r in rows] == pytest.approx(expected, rel=1e-6)
    assert chosen.lr == grid[min(range(len(grid)), key=expected.__getitem__)]


def test_a_diverging_lr_scores_infinity(tiny_lm, monkeypatch: pytest.MonkeyPatch) -> None:
    real = finetune.train

    def train(model, tok, b, params, cfg, seed, on_step=None):
        if cfg.lr > 1:  # what finetune.train raises on a NaN or exploding loss
            raise DivergedError("diverged")
        return real(model, tok, b, params, cfg, seed, on_step)

    monkeypatch.setattr(finetune, "train", train)
    method = OmegaConf.merge(
        compose_config(["output_dir=/tmp/x", "method=gd"]).method, {"lr_grid": [10.0, 1e-3]}
    )
    chosen, rows = select_lr(
        GD().adapted, method, tiny_lm, batch(tiny_lm, DEMOS), batch(tiny_lm, HELDOUT), seed=0
    )
    assert math.isinf(rows[0]["heldout_loss"]) and chosen.lr == 1e-3
    method = OmegaConf.merge(method, {"lr_grid": [10.0, 20.0]})
    with pytest.raises(DivergedError, match="every lr of method.lr_grid"):
        select_lr(GD().adapted, method, tiny_lm, batch(tiny_lm, DEMOS), batch(tiny_lm, HELDOUT), seed=0)


def test_heldout_demos_are_disjoint_from_the_demos() -> None:
    pool = [Example(f"p{i}", {"x": str(i)}, "a", "a") for i in range(10)]
    demos = pool[:4]
    held = sample_heldout(pool, demos, 6, seed=0, dataset="d")
    assert len(held) == 6 and not {e.id for e in held} & {e.id for e in demos}
    assert held == sample_heldout(pool, demos, 6, seed=0, dataset="d")  # seeded
    with pytest.raises(ConfigError, match="method.heldout=7"):
        sample_heldout(pool, demos, 7, seed=0, dataset="d")


def test_a_job_with_an_lr_grid_records_every_lr_and_the_choice(smoke) -> None:
    cfg = smoke("method=gd", "method.lr_grid=[1e-2,1e-3]", "method.heldout=3", "method.optimizer=sgd")
    metrics = run(cfg, raise_on_failure=True)
    search = pd.read_csv(f"{cfg.output_dir}/{io.LR_SEARCH}")
    assert list(search.lr) == [1e-2, 1e-3]
    assert metrics["lr_selected"] == search.lr[search.heldout_loss.idxmin()]
