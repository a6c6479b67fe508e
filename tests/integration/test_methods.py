"""predict() and fine-tuning on a tiny random Llama: exact numbers against a plain full forward."""

from __future__ import annotations

import pytest
import torch

from icl_gd.errors import ConfigError, DivergedError
from icl_gd.methods import finetune
from icl_gd.methods.predict import predict
from icl_gd.models.forward import continuation_ids
from tests.helpers.config import compose_config

PROMPTS = ["Q: walk\nA:", "Q: a much longer question with many more tokens in it\nA:", "Q: go\nA:"]
ANSWERS = [" walked", " answered", " went"]


def method_cfg(*overrides: str):
    return compose_config(["output_dir=/tmp/x", *overrides]).method


def full_forward_logp(lm, text: str) -> torch.Tensor:
    ids = torch.tensor([lm.tokenizer(text).input_ids])
    with torch.no_grad():
        return torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), -1)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batched_padded_predictions_equal_one_prompt_at_a_time(tiny_lm, batch_size: int) -> None:
    p = predict(
        tiny_lm.model,
        tiny_lm.tokenizer,
        PROMPTS,
        ANSWERS,
        None,
        top_k=5,
        batch_size=batch_size,
        save_full_dist=True,
    )
    for i, text in enumerate(PROMPTS):
        ref = full_forward_logp(tiny_lm, text)[-1].exp()
        assert torch.allclose(p.full_dist[i].float(), ref, atol=1e-3)  # float16 storage
        assert torch.allclose(p.topk_probs[i], ref.topk(5).values, atol=1e-5)
        assert p.topk_ids[i, 0] == ref.argmax()
        gold = continuation_ids(tiny_lm.tokenizer, ANSWERS[i])[0]
        assert p.gold_token[i] == gold and abs(p.gold_prob[i] - ref[gold]) < 1e-5
        assert abs(p.entropy[i] + (ref * ref.log()).sum()) < 1e-4


def test_label_word_probability_is_its_whole_token_sequence(tiny_lm) -> None:
    words = [" walked", " unbelievably"]  # one token, several tokens
    assert len(continuation_ids(tiny_lm.tokenizer, words[1])) > 1
    p = predict(
        tiny_lm.model,
        tiny_lm.tokenizer,
        PROMPTS[:2],
        ANSWERS[:2],
        words,
        top_k=3,
        batch_size=2,
        save_full_dist=False,
    )
    for i, prompt in enumerate(PROMPTS[:2]):
        for j, w in enumerate(words):
            n_prompt = len(tiny_lm.tokenizer(prompt).input_ids)
            cont = continuation_ids(tiny_lm.tokenizer, w)
            ids = torch.tensor([tiny_lm.tokenizer(prompt).input_ids + cont])
            with torch.no_grad():
                logp = torch.log_softmax(tiny_lm.model(input_ids=ids).logits[0].float(), -1)
            expected = sum(logp[n_prompt - 1 + k, t] for k, t in enumerate(cont)).exp()
            assert abs(p.label_probs[i, j] - expected) < 1e-6


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def demo_batch(lm):
    return finetune.build_batch(lm.tokenizer, ["Q: walk\nA:", "Q: jump\nA:"], [" walked", " jumped"], None)


def test_gd_trains_then_restores_weights_bit_identical(tiny_lm) -> None:
    before = snapshot(tiny_lm.model)
    cfg = method_cfg("method=gd", "method.lr=1e-2", "method.epochs=5")
    params = finetune.select_parameters(tiny_lm.model, cfg)
    with finetune.restoring(params):
        result = finetune.train(tiny_lm.model, tiny_lm.tokenizer, demo_batch(tiny_lm), params, cfg, seed=0)
        assert any(not torch.equal(p, before[n]) for n, p in tiny_lm.model.named_parameters())
    assert result.final_loss < result.initial_loss  # the answer loss falls
    assert len(result.curve) == 10 and result.n_trainable == sum(
        p.numel() for p in tiny_lm.model.parameters()
    )
    assert all(torch.equal(p, before[n]) for n, p in tiny_lm.model.named_parameters())
    assert not any(p.requires_grad for p in tiny_lm.model.parameters()) or all(
        p.requires_grad for p in tiny_lm.model.parameters()
    )


def test_answer_loss_covers_only_the_answer_tokens(tiny_lm) -> None:
    ((ids, labels),) = finetune.build_batch(tiny_lm.tokenizer, ["Q: walk\nA:"], [" walked"], None)
    n_answer = len(continuation_ids(tiny_lm.tokenizer, " walked"))
    assert labels[-n_answer:] == ids[-n_answer:] and set(labels[:-n_answer]) == {finetune.IGNORE}


def test_parameter_subsets(tiny_lm) -> None:
    kv = finetune.select_parameters(tiny_lm.model, method_cfg("method=gd", "method.params=attn_kv"))
    assert (
        kv and all(".k_proj." in n or ".v_proj." in n for n in kv) and len(kv) == 2 * 2
    )  # 2 layers, k and v
    v1 = finetune.select_parameters(
        tiny_lm.model, method_cfg("method=gd", "method.params=layer_v", "method.layer=-1")
    )
    assert list(v1) == ["layer1.self_attn.v_proj.weight"]
    with pytest.raises(ConfigError, match="method.layer=5 is out of range for a 2-layer model"):
        finetune.select_parameters(
            tiny_lm.model, method_cfg("method=gd", "method.params=layer_v", "method.layer=5")
        )


def test_exploding_loss_is_diverged_and_weights_are_restored(tiny_lm) -> None:
    before = snapshot(tiny_lm.model)
    cfg = method_cfg("method=gd", "method.optimizer=adam", "method.lr=1e30", "method.grad_clip=null")
    params = finetune.select_parameters(tiny_lm.model, cfg)
    with pytest.raises(DivergedError, match="lower method.lr"), finetune.restoring(params):
        finetune.train(tiny_lm.model, tiny_lm.tokenizer, demo_batch(tiny_lm), params, cfg, seed=0)
    assert all(torch.equal(p, before[n]) for n, p in tiny_lm.model.named_parameters())


def test_lora_adapter_trains_then_leaves_the_model_as_it_was(tiny_lm) -> None:
    before = snapshot(tiny_lm.model)
    names = {n for n, _ in tiny_lm.model.named_modules()}
    grads = {n: p.requires_grad for n, p in tiny_lm.model.named_parameters()}
    cfg = method_cfg("method=lora", "method.r=4", "method.lr=1e-2")
    with finetune.lora_adapter(tiny_lm.model, cfg) as (peft_model, params):
        assert params and all("lora_" in n for n in params)
        assert sum(p.numel() for p in params.values()) == 2 * 4 * (
            (64 + 64) + (64 + 32)
        )  # layers x r x (q + v: in+out)
        result = finetune.train(peft_model, tiny_lm.tokenizer, demo_batch(tiny_lm), params, cfg, seed=0)
    assert result.final_loss < result.initial_loss
    assert {n for n, _ in tiny_lm.model.named_modules()} == names
    assert all(torch.equal(p, before[n]) for n, p in tiny_lm.model.named_parameters())
    # peft froze the base weights; unfrozen again, or a later job on the shared model trains nothing
    assert {n: p.requires_grad for n, p in tiny_lm.model.named_parameters()} == grads


def test_lora_target_missing_from_the_model_lists_the_choices(tiny_lm) -> None:
    with (
        pytest.raises(ConfigError, match=r"\['c_attn'\] are not modules of this model; choose from .*q_proj"),
        finetune.lora_adapter(tiny_lm.model, method_cfg("method=lora", "method.target_modules=[c_attn]")),
    ):
        pass
