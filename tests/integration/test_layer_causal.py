"""Layer-causal GD (Deutch et al.) on a tiny random Llama: per-layer losses against a hook-free forward,
gradient isolation between layers, and ordinary GD left exactly as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from icl_gd.errors import ConfigError
from icl_gd.methods import finetune
from icl_gd.models import anatomy, forward
from tests.helpers.config import compose_config

PROMPTS = ["Q: walk\nA:", "Q: a much longer question with more tokens\nA:", "Q: go\nA:"]
ANSWERS = [" walked", " answered", " went"]
TOL = 1e-5


@pytest.fixture(scope="module")
def batch(tiny_lm):
    return finetune.build_batch(tiny_lm.tokenizer, PROMPTS, ANSWERS, add_bos=None)


def method_cfg(*overrides: str):
    return compose_config(["output_dir=/tmp/x", "method=gd", "method.optimizer=sgd", *overrides]).method


@contextlib.contextmanager
def trainable(model) -> Iterator[None]:
    """Every parameter requires grad inside; the flags and grads are put back on exit."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
            p.grad = None


def hook_free_layer_losses(lm, batch) -> list[torch.Tensor]:
    """Per-layer answer losses from output_hidden_states: entry l+1 is layer l's output, except that HF applies the
    final norm to the last entry already, so only the earlier ones go through the norm here."""
    model, pad_id = lm.model, lm.tokenizer.pad_token_id
    ids, mask = forward.pad([b[0] for b in batch], pad_id, torch.device("cpu"))
    labels, _ = forward.pad([b[1] for b in batch], finetune.IGNORE, torch.device("cpu"))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    hidden = out.hidden_states[1:]
    norm, head = model.get_decoder().norm, model.get_output_embeddings()
    assert torch.allclose(head(hidden[-1]), out.logits, atol=TOL)  # the last entry is normed already
    losses = []
    for i, h in enumerate(hidden):
        with torch.no_grad():
            logits = head(h if i == len(hidden) - 1 else norm(h))[:, :-1].float()
        losses.append(
            nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=finetune.IGNORE
            )
        )
    return losses


def test_layer_causal_loss_is_the_sum_of_hook_free_per_layer_losses(tiny_lm, batch) -> None:
    pad = tiny_lm.tokenizer.pad_token_id
    expected = hook_free_layer_losses(tiny_lm, batch)
    with torch.no_grad():
        got = finetune.per_layer_losses(tiny_lm.model, batch, pad)
        total = finetune.layer_causal_loss(tiny_lm.model, batch, pad)
    assert len(got) == len(expected) == tiny_lm.model.config.num_hidden_layers
    for g, e in zip(got, expected, strict=True):
        assert abs(g.item() - e.item()) < TOL
    assert abs(total.item() - sum(e.item() for e in expected)) < TOL
    assert len({round(e.item(), 4) for e in expected}) == len(expected)  # the layers really differ


def test_last_layer_loss_is_the_answer_loss(tiny_lm, batch) -> None:
    pad = tiny_lm.tokenizer.pad_token_id
    with torch.no_grad():
        last = finetune.per_layer_losses(tiny_lm.model, batch, pad)[-1]
        assert abs(last.item() - finetune.answer_loss(tiny_lm.model, batch, pad).item()) < TOL
        one = finetune.per_layer_losses(tiny_lm.model, batch[:1], pad)[-1]
        assert abs(one.item() - finetune.answer_loss(tiny_lm.model, batch[:1], pad).item()) < TOL


def test_no_gradient_reaches_a_layer_from_the_layers_above(tiny_lm, batch) -> None:
    model, pad = tiny_lm.model, tiny_lm.tokenizer.pad_token_id
    hooks = [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in finetune.decoder_layers(model)]
    layer0 = list(finetune.decoder_layers(model)[0].parameters())
    embed = model.get_input_embeddings().weight
    with trainable(model):
        losses = finetune.per_layer_losses(model, batch, pad)
        from_above = torch.autograd.grad(losses[1], layer0, allow_unused=True)
        assert all(g is None or torch.count_nonzero(g) == 0 for g in from_above)
        own = torch.autograd.grad(losses[0], [*layer0, embed], allow_unused=True)
        assert all(
            g is not None and torch.count_nonzero(g) > 0 for g in own
        )  # embed: tied to the unembedding
        # without the detach, layer 1's loss does reach layer 0: the isolation is the hooks' doing
        attached = finetune.per_layer_losses(model, batch, pad, detach_inputs=False)
        grads = torch.autograd.grad(attached[1], layer0, allow_unused=True)
        assert all(g is not None and torch.count_nonzero(g) > 0 for g in grads)
    after = [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in finetune.decoder_layers(model)]
    assert after == hooks  # ours are removed (transformers keeps its own output-capturing hooks)


def test_layer_causal_training_lowers_the_summed_loss_then_restores(tiny_lm, batch) -> None:
    model = tiny_lm.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = method_cfg("method.layer_causal=true", "method.params=all", "method.epochs=2", "method.lr=5e-2")
    params = finetune.select_parameters(model, cfg)
    with finetune.restoring(params):
        result = finetune.train(model, tiny_lm.tokenizer, batch, params, cfg, seed=0)
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert result.loss_kind == finetune.LAYER_CAUSAL and len(result.curve) == 2 * len(batch)
    assert result.final_loss < result.initial_loss
    assert len(result.initial_layer_losses) == len(result.final_layer_losses) == 2
    assert abs(result.initial_loss - sum(result.initial_layer_losses)) < TOL
    assert abs(result.final_loss - sum(result.final_layer_losses)) < TOL
    assert abs(result.initial_answer_loss - result.initial_layer_losses[-1]) < TOL
    assert abs(result.final_answer_loss - result.final_layer_losses[-1]) < TOL
    first = finetune.layer_causal_loss(model, batch[:1], tiny_lm.tokenizer.pad_token_id).item()
    assert abs(result.curve[0]["train_loss"] - first) < TOL  # the curve is in summed units


def test_ordinary_gd_follows_a_plain_answer_loss_loop(tiny_lm, batch) -> None:
    """Regression: layer_causal=false trains exactly as a hand-written SGD loop on answer_loss does."""
    model, pad = tiny_lm.model, tiny_lm.tokenizer.pad_token_id
    cfg = method_cfg("method.params=attn_kv", "method.epochs=2", "method.lr=5e-2")
    params = finetune.select_parameters(model, cfg)
    with finetune.restoring(params):
        result = finetune.train(model, tiny_lm.tokenizer, batch, params, cfg, seed=0)
    expected = []
    with finetune.restoring(params), trainable(model):
        torch.manual_seed(0)
        opt = torch.optim.SGD(list(params.values()), lr=cfg.lr)
        model.train()
        for _ in range(cfg.epochs):
            for b in batch:
                loss = finetune.answer_loss(model, [b], pad)
                expected.append(loss.item())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
                opt.step()
        model.eval()
        final = finetune.mean_demo_loss(model, batch, pad)
    assert [r["train_loss"] for r in result.curve] == pytest.approx(expected, abs=1e-6)
    assert result.final_loss == pytest.approx(final, abs=1e-6) and result.final_loss < result.initial_loss
    assert result.loss_kind == finetune.ANSWER and result.final_layer_losses == []
    assert (result.initial_answer_loss, result.final_answer_loss) == (result.initial_loss, result.final_loss)


def test_a_model_without_a_known_final_norm_is_a_config_error(tiny_lm, batch, monkeypatch) -> None:
    monkeypatch.setattr(anatomy, "FINAL_NORMS", ("no_such_norm",))
    with pytest.raises(ConfigError, match="(?i)set method.layer_causal=false"):
        finetune.layer_causal_loss(tiny_lm.model, batch, tiny_lm.tokenizer.pad_token_id)
