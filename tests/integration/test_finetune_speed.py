"""The fast GD paths give the plain loop's numbers: the fast step (methods/fast_step.py), trajectories, and a grid
of settings trained together (methods/grid.py), on the tiny random Llama (float tolerance, not bit-identity: the
same sums are taken in another order)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from icl_gd.errors import ConfigError, DivergedError
from icl_gd.methods import finetune, grid
from icl_gd.methods.predict import predict
from icl_gd.models import load_model
from tests.helpers.config import compose_config

PROMPTS = ["Q: walk\nA:", "Q: a much longer question about jumping\nA:", "Q: run\nA:", "Q: sing\nA:"]
ANSWERS = [" walked", " jumped", " ran", " sang"]
ADAM_TOL = (
    5e-5  # at lr 1e-3: Adam divides by sqrt(v), so rounding in a near-zero gradient moves its weight by up
)
# to ~lr a step (measured here: 1.1e-5 after 6 steps, 1% of one step); elsewhere a weight moves by >= 1e-3
SGD_TOL = 1e-6
LOSS_TOL = 1e-5
STEPS = 6


def method_cfg(*overrides: str):
    return compose_config(["output_dir=/tmp/x", "method=gd", *overrides]).method


def demo_batch(lm):
    return finetune.build_batch(lm.tokenizer, PROMPTS, ANSWERS, None)


def trained(lm, cfg, fast: bool, steps: int = STEPS, **kw):
    """(trained weights, TrainResult) of one training, the model restored after."""
    params = finetune.select_parameters(lm.model, cfg)
    with finetune.restoring(params):
        result = finetune.train(
            lm.model, lm.tokenizer, demo_batch(lm), params, cfg, 0, steps=steps, fast=fast, **kw
        )
        weights = {n: p.detach().clone() for n, p in params.items()}
    return weights, result


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def moved(lm, cfg, w: dict) -> float:
    return max(
        float((w[n] - p.detach()).abs().max()) for n, p in finetune.select_parameters(lm.model, cfg).items()
    )


@pytest.fixture(scope="module")
def untied_lm():
    """tiny_random with its own unembedding (the embedding's gradient then comes from the lookup alone)."""
    cfg = compose_config(["model=tiny_random", "model.arch.tie_word_embeddings=false", "output_dir=/tmp/x"])
    return load_model(cfg.model)


@pytest.mark.parametrize(
    ("overrides", "tol"),
    [
        ((), ADAM_TOL),  # the gd defaults: adam, all parameters (tied embedding), one demo a step, clip 1.0
        (("method.batch_size=all", "method.grad_clip=null"), ADAM_TOL),
        (("method.optimizer=sgd", "method.lr=0.1", "method.params=attn_kv"), SGD_TOL),
        (("method.optimizer=sgd", "method.lr=0.05", "method.momentum=0.9"), SGD_TOL),
        (
            (
                "method.optimizer=adamw",
                "method.weight_decay=0.01",
                "method.params=layer_v",
                "method.layer=-1",
            ),
            ADAM_TOL,
        ),
    ],
)
def test_fast_step_trains_the_plain_loops_weights(tiny_lm, overrides, tol) -> None:
    cfg = method_cfg("method.lr=1e-3", *overrides)
    plain_w, plain = trained(tiny_lm, cfg, fast=False)
    fast_w, fast = trained(tiny_lm, cfg, fast=True)
    assert moved(tiny_lm, cfg, plain_w) > 10 * tol  # training did move the weights
    assert max_diff(plain_w, fast_w) < tol
    assert [r["step"] for r in fast.curve] == [r["step"] for r in plain.curve] == list(range(STEPS))
    assert (
        max(abs(a["train_loss"] - b["train_loss"]) for a, b in zip(plain.curve, fast.curve, strict=False))
        < LOSS_TOL
    )
    assert abs(plain.final_loss - fast.final_loss) < LOSS_TOL
    assert abs(plain.initial_loss - fast.initial_loss) < LOSS_TOL
    assert all(p.grad is None for p in tiny_lm.model.parameters())  # no gradient buffer is left behind


def test_fast_step_on_an_untied_embedding(untied_lm) -> None:
    cfg = method_cfg("method.lr=1e-3")
    plain_w, _ = trained(untied_lm, cfg, fast=False)
    fast_w, _ = trained(untied_lm, cfg, fast=True)
    assert max_diff(plain_w, fast_w) < ADAM_TOL
    emb = "model.embed_tokens.weight"
    original = dict(untied_lm.model.named_parameters())[emb]
    untouched = (fast_w[emb] == original).all(1)  # rows of tokens no demo has: exactly unchanged, both ways
    assert untouched.sum() > 0 and torch.equal(untouched, (plain_w[emb] == original).all(1))


def test_fast_step_reports_every_step_and_diverges_like_the_plain_loop(tiny_lm) -> None:
    cfg = method_cfg("method.lr=1e-3", "method.grad_clip=null")
    rows: dict[bool, list] = {True: [], False: []}
    for fast in (False, True):
        trained(tiny_lm, cfg, fast=fast, steps=20, on_step=rows[fast].append)
    assert [r["step"] for r in rows[True]] == list(range(20))  # reported in order, a few at a time
    assert (
        max(abs(a["train_loss"] - b["train_loss"]) for a, b in zip(rows[False], rows[True], strict=False))
        < LOSS_TOL
    )
    boom = method_cfg("method.lr=1e30", "method.grad_clip=null")
    messages = {}
    for fast in (False, True):
        with pytest.raises(DivergedError) as e:
            trained(tiny_lm, boom, fast=fast, steps=20)
        messages[fast] = str(e.value).split(" (loss=")[0]  # "training loss diverged at step N"
    assert messages[True] == messages[False]


def test_trajectory_equals_a_training_per_step(tiny_lm) -> None:
    """The model at each step of eval_at, from one training, predicts as a training to that step does."""
    cfg = method_cfg("method.lr=3e-3", "method.batch_size=all")
    queries = ["Q: swim\nA:", "Q: talk\nA:"]

    def answers() -> torch.Tensor:
        p = predict(tiny_lm.model, tiny_lm.tokenizer, queries, [" swam", " talked"], None, 5, 2, True)
        return p.full_dist.float()

    along: list = []
    trained(tiny_lm, cfg, fast=True, steps=4, on_eval=lambda s: along.append(answers()), eval_at=(0, 2, 4))
    again = []
    for s in (0, 2, 4):
        trained(tiny_lm, cfg, fast=False, steps=s, on_eval=lambda _s: again.append(answers()), eval_at=(s,))
    assert len(along) == len(again) == 3
    assert not torch.allclose(along[0], along[-1])  # the predictions do move
    for a, b in zip(along, again, strict=False):
        assert torch.allclose(a, b, atol=1e-4)


def test_grid_trains_each_setting_as_one_by_one(tiny_lm) -> None:
    base = method_cfg("method.params=attn_kv", "method.batch_size=all")
    nodes = [OmegaConf.merge(base, {"lr": lr, "grad_clip": 0.01}) for lr in (1e-3, 1e-2, 1e-2)]  # clip bites
    nodes[
        2
    ].explode_factor = 0.5  # its first loss is "above 0.5 x the first": diverged at step 0, as one by one
    nodes.append(OmegaConf.merge(base, {"optimizer": "sgd", "lr": 0.1, "grad_clip": 0.01}))
    params = finetune.select_parameters(tiny_lm.model, base)
    seen: list[tuple[int, int]] = []
    with finetune.restoring(params):
        res = grid.train_grid(
            tiny_lm.model,
            tiny_lm.tokenizer,
            demo_batch(tiny_lm),
            params,
            nodes,
            0,
            steps=STEPS,
            on_eval=lambda s, g: seen.append((s, g)),
            eval_at=(STEPS,),
        )
    assert res.diverged[2] is not None and "diverged at step" in res.diverged[2]
    assert sorted(seen) == [(STEPS, 0), (STEPS, 1), (STEPS, 3)]  # the diverged setting is not evaluated
    for g in (0, 1, 3):
        assert res.diverged[g] is None
        w, r = trained(tiny_lm, nodes[g], fast=False)
        tol = SGD_TOL if nodes[g].optimizer == "sgd" else ADAM_TOL
        assert max_diff(w, res.trained[g]) < tol
        assert abs(r.final_loss - res.results[g].final_loss) < LOSS_TOL
        assert [x["step"] for x in res.results[g].curve] == list(range(STEPS))
    with pytest.raises(DivergedError):
        trained(tiny_lm, nodes[2], fast=False)


def test_grid_refuses_what_it_cannot_stack(tiny_lm) -> None:
    params = finetune.select_parameters(tiny_lm.model, method_cfg())  # all: embeddings and norms too
    with pytest.raises(ConfigError, match="one by one"):
        grid.train_grid(
            tiny_lm.model, tiny_lm.tokenizer, demo_batch(tiny_lm), params, [method_cfg()] * 2, 0, steps=1
        )
    kv = method_cfg("method.params=attn_kv")
    other = OmegaConf.merge(kv, {"batch_size": "all"})
    with pytest.raises(ConfigError, match="share batch_size"):
        grid.train_grid(
            tiny_lm.model,
            tiny_lm.tokenizer,
            demo_batch(tiny_lm),
            finetune.select_parameters(tiny_lm.model, kv),
            [kv, other],
            0,
            steps=1,
        )
