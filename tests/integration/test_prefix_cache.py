"""The shared-prefix KV cache of predict(): the same log-probabilities as the full forward of every prompt."""

from __future__ import annotations

import pytest
import torch

from icl_gd.data import Example, Template
from icl_gd.methods.predict import (
    cached_batches,
    naive_batches,
    predict,
    shared_prefix_length,
    supports_prefix_cache,
)
from icl_gd.models import load_model
from icl_gd.models.forward import continuation_ids, encode
from tests.helpers.config import compose_config
from tests.helpers.methods import run_method

TOL = 1e-4  # max |d log p| allowed between the cached and the full forward (float32)
DEMOS = "\n\n".join(f"Q: word number {i} is here\nA: answer {i}" for i in range(6))
QUERIES = [
    "walk",
    "a much longer question with many more tokens in it, padded",
    "go",
    "x y z",
    "jumping",
    "sing",
]
PROMPTS = [f"{DEMOS}\n\nQ: {q}\nA:" for q in QUERIES]
ANSWERS = [" walked", " answered", " went", " ok", " jumped", " sang"]
WORDS = [" walked", " unbelievably", " answer 3"]  # one token, several tokens, several tokens


def both_paths(lm, prompts: list[str], words: list[str], batch_size: int):
    """(cached, naive) answer log-probs (Q, V) and label log-probs (Q, L), both in the prompts' order."""
    tok = lm.tokenizer
    ids = encode(tok, prompts, True)
    labels = [continuation_ids(tok, w) for w in words]
    n = shared_prefix_length(ids)
    assert n > 0
    order, gen = cached_batches(lm.model, ids, n, labels, batch_size, tok.pad_token_id)
    cached = list(gen)
    inverse = torch.argsort(torch.tensor(order))
    c_logp = torch.cat([b[0] for b in cached])[inverse]
    c_lab = torch.cat([b[1] for b in cached])[inverse]
    naive = list(naive_batches(lm.model, ids, labels, 1, tok.pad_token_id))
    return (c_logp, c_lab), (torch.cat([b[0] for b in naive]), torch.cat([b[1] for b in naive]))


@pytest.mark.parametrize("batch_size", [1, 2, 4, 8])
def test_cached_equals_full_forward_at_every_batch_size(tiny_lm, batch_size: int) -> None:
    (c_logp, c_lab), (n_logp, n_lab) = both_paths(tiny_lm, PROMPTS, WORDS, batch_size)
    assert c_logp.shape == n_logp.shape == (len(PROMPTS), tiny_lm.model.config.vocab_size)
    assert (c_logp - n_logp).abs().max() < TOL
    assert (c_lab - n_lab).abs().max() < TOL  # multi-token label words continue from the query's cache


def test_answer_position_against_a_plain_forward(tiny_lm) -> None:
    """Independent of the naive code path: the last position of model(prompt) with no padding at all."""
    (c_logp, _), _ = both_paths(tiny_lm, PROMPTS, WORDS, 3)
    for i, text in enumerate(PROMPTS):
        ids = torch.tensor([tiny_lm.tokenizer(text).input_ids])
        with torch.no_grad():
            ref = torch.log_softmax(tiny_lm.model(input_ids=ids).logits[0, -1].float(), -1)
        assert (c_logp[i] - ref).abs().max() < TOL


def test_predict_with_and_without_the_cache_agree_in_the_prompts_order(tiny_lm) -> None:
    kw = dict(top_k=5, batch_size=4, save_full_dist=True)
    a = predict(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, ANSWERS, WORDS, prefix_cache=True, **kw)
    b = predict(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, ANSWERS, WORDS, prefix_cache=False, **kw)
    assert torch.equal(a.gold_token, b.gold_token) and torch.equal(a.topk_ids, b.topk_ids)
    for x, y in [(a.topk_probs, b.topk_probs), (a.gold_prob, b.gold_prob), (a.entropy, b.entropy)]:
        assert torch.allclose(x, y, atol=1e-5)
    assert (a.label_probs.log() - b.label_probs.log()).abs().max() < TOL
    assert (a.full_dist.float() - b.full_dist.float()).abs().max() < 1e-3  # float16 storage


def test_split_is_on_the_whole_prompts_tokens_not_on_the_text(tiny_lm) -> None:
    """With separator " " the demos' text alone ends in a lone space token, which the whole prompt merges into
    the next word: splitting the text would change the tokens. The cache splits the whole prompt's ids."""
    tok = tiny_lm.tokenizer
    demos = " ".join(f"word {i} means answer {i}." for i in range(5))
    prompts = [f"{demos} {q} means" for q in ["walk", "go far away", "sing"]]
    text_split = (
        tok(demos + " ").input_ids + tok(prompts[0][len(demos) + 1 :], add_special_tokens=False).input_ids
    )
    assert text_split != tok(prompts[0]).input_ids  # the case the token-level split exists for
    (c_logp, c_lab), (n_logp, n_lab) = both_paths(tiny_lm, prompts, [" answer", " unbelievably"], 2)
    assert (c_logp - n_logp).abs().max() < TOL and (c_lab - n_lab).abs().max() < TOL


def test_shared_prefix_keeps_a_token_of_every_prompt() -> None:
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter prompt keeps its last token
    assert shared_prefix_length([[1, 2, 3, 9], [1, 2, 5, 6]]) == 2
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0
    assert shared_prefix_length([[5, 6, 7]]) == 2 and shared_prefix_length([]) == 0


def test_answer_queries_icl_uses_the_cache_and_matches(tiny_lm) -> None:
    template = Template("Q: {x}\nA: {label}", ["x"])
    demos = [Example(f"d{i}", {"x": f"word {i} here"}, "pos" if i % 2 else "neg", "answer") for i in range(6)]
    queries = [Example(f"q{i}", {"x": q}, "pos", "positive") for i, q in enumerate(QUERIES)]
    method = compose_config(["output_dir=/tmp/x", "method=icl"]).method

    def answer(flag: str):
        eval_cfg = compose_config(["output_dir=/tmp/x", "eval.top_k=5", "eval.batch_size=4", flag]).eval
        return run_method(
            method, tiny_lm, template, demos, queries, eval_cfg, ["positive", "negative"]
        ).predictions

    a, b = answer("eval.prefix_cache=true"), answer("eval.prefix_cache=false")
    assert torch.equal(a.topk_ids, b.topk_ids) and torch.allclose(a.topk_probs, b.topk_probs, atol=1e-5)
    assert (a.label_probs.log() - b.label_probs.log()).abs().max() < TOL


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=gpt2", "++model.arch={n_layer: 2, n_embd: 64, n_head: 4}"],
        ["model=pythia_160m", "++model.arch={num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 4}"],
    ],
    ids=["gpt2", "gpt_neox"],
)
def test_other_architectures_random_init(overrides: list[str]) -> None:
    """GPT-2 (learned positions) and GPT-NeoX (partial rotary) built from their known configs, no download."""
    small = load_model(
        compose_config(
            ["output_dir=/tmp/x", *overrides, "model.random_init=true", "model.revision=null"]
        ).model
    )
    assert supports_prefix_cache(small.model)
    (c_logp, c_lab), (n_logp, n_lab) = both_paths(small, PROMPTS, WORDS, 3)
    assert (c_logp - n_logp).abs().max() < TOL and (c_lab - n_lab).abs().max() < TOL


@pytest.mark.slow
def test_smollm2_cached_equals_full_forward() -> None:
    """The real model on agnews-like prompts: 4 demos, padded queries of different lengths, two batch sizes."""
    lm = load_model(compose_config(["output_dir=/tmp/x"]).model)
    demos = "\n\n".join(
        f"input: {t}\ntype: {w}"
        for t, w in [
            ("Stocks fell sharply as oil prices rose to a record high on Monday.", "business"),
            ("The team won the championship after a dramatic overtime goal.", "sports"),
            ("A new chip promises faster phones and longer battery life.", "technology"),
            ("Leaders met in Geneva to discuss the ceasefire.", "world"),
        ]
    )
    queries = [
        "Markets rallied.",
        "The striker signed a five-year deal with the club on Friday evening.",
        "Rain.",
    ]
    prompts = [f"{demos}\n\ninput: {q}\ntype:" for q in queries]
    for batch_size in (1, 3):
        (c_logp, c_lab), (n_logp, n_lab) = both_paths(lm, prompts, [" sports", " x technology"], batch_size)
        assert (c_logp - n_logp).abs().max() < TOL and (c_lab - n_lab).abs().max() < TOL


def test_eval_prefix_cache_knob_reaches_predict(tiny_lm, monkeypatch: pytest.MonkeyPatch) -> None:
    """`eval.prefix_cache=false` in the config turns the cache off; the default (true) turns it on."""
    import icl_gd.methods.base as base  # noqa: PLC0415

    seen: list[bool] = []
    real = base.predict

    def spy(*a, **kw):
        seen.append(kw["prefix_cache"])
        return real(*a, **kw)

    monkeypatch.setattr(base, "predict", spy)
    template = Template("Q: {x}\nA: {label}", ["x"])
    demos = [Example("d0", {"x": "word here"}, "pos", "answer")]
    queries = [Example("q0", {"x": "walk"}, "pos", "walked")]
    method = compose_config(["output_dir=/tmp/x", "method=icl"]).method
    for flag in ("true", "false"):
        eval_cfg = compose_config(["output_dir=/tmp/x", f"eval.prefix_cache={flag}"]).eval
        run_method(method, tiny_lm, template, demos, queries, eval_cfg)
    assert seen == [True, False]
