"""Dai et al. analysis: forward-hook captures on tiny models (checked against a manual recomputation) and the
Rec2FTP / SimAOU / SimAM metrics on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from icl_gd import metrics as M
from icl_gd.analysis import dai, hooks
from icl_gd.data import Example, Template
from icl_gd.metrics import dai as D
from icl_gd.models import anatomy, load_model
from tests.helpers.config import compose_config
from tests.helpers.dai import (
    DEMOS,
    LABEL_WORDS,
    PAD,
    QUERIES,
    QUERY_IDS,
    SENTIMENT,
    SEPARATOR,
    SEQS,
    TINY,
    TOL,
    tiny_gpt2,
    tiny_neox,
)


@pytest.fixture(scope="module")
def collected(tiny_lm) -> dict[str, dai.Collected]:
    """ZS and ICL collections of QUERIES on tiny_random."""

    def run(with_demos: bool, batch_size: int) -> dai.Collected:
        return dai.collect(
            tiny_lm.model,
            tiny_lm.tokenizer,
            SENTIMENT,
            SEPARATOR,
            DEMOS,
            QUERIES,
            LABEL_WORDS,
            None,
            batch_size,
            with_demos,
        )

    return {"zs": run(False, 2), "icl": run(True, 2)}


# ---------------------------------------------------------------------------------------------------------
# hooks.capture


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal to TOL relative to b's largest entry (tiny_random's attention outputs are ~1e-2)."""
    assert (a - b).abs().max() <= TOL * b.abs().max()


def test_capture_shapes_one_tensor_per_layer(tiny_lm) -> None:
    cap = hooks.capture(tiny_lm.model, SEQS, PAD, batch_size=2)
    cfg = tiny_lm.model.config
    assert len(cap.attn_out) == len(cap.attn_map) == cfg.num_hidden_layers == 2
    for out, amap in zip(cap.attn_out, cap.attn_map, strict=True):
        assert out.shape == (len(SEQS), cfg.hidden_size) and out.dtype == torch.float32
        assert amap.shape == (len(SEQS), cfg.num_attention_heads, max(map(len, SEQS)))
    assert cap.logits_last.shape == (len(SEQS), cfg.vocab_size)


def test_attention_rows_sum_to_one_over_real_tokens_and_are_zero_on_padding(tiny_lm) -> None:
    cap = hooks.capture(tiny_lm.model, SEQS, PAD, batch_size=3)
    for amap in cap.attn_map:
        for i, seq in enumerate(SEQS):
            assert torch.allclose(amap[i, :, : len(seq)].sum(-1), torch.ones(amap.shape[1]), atol=TOL)
            assert torch.all(amap[i, :, len(seq) :] == 0)


def test_padded_batch_equals_one_sequence_at_a_time(tiny_lm) -> None:
    one, three = hooks.capture(tiny_lm.model, SEQS, PAD, 1), hooks.capture(tiny_lm.model, SEQS, PAD, 3)
    for a, b in zip(one.attn_out + one.attn_map, three.attn_out + three.attn_map, strict=True):
        assert_close(a, b)
    assert_close(one.logits_last, three.logits_last)


def manual_layer0(model, seq: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention output (hidden,), attention weights (heads, T)) of layer 0 at the last token, by hand."""
    ids = torch.tensor([seq])
    T = len(seq)
    layer = model.model.layers[0]
    attn = layer.self_attn
    x = layer.input_layernorm(model.model.embed_tokens(ids))  # (1, T, H)

    def heads(proj: torch.nn.Linear) -> torch.Tensor:
        return proj(x).view(1, T, -1, attn.head_dim).transpose(1, 2)  # (1, heads, T, head_dim)

    cos, sin = model.model.rotary_emb(x, torch.arange(T)[None])
    q, k = apply_rotary_pos_emb(heads(attn.q_proj), heads(attn.k_proj), cos, sin)
    k, v = repeat_kv(k, attn.num_key_value_groups), repeat_kv(heads(attn.v_proj), attn.num_key_value_groups)
    scores = q @ k.transpose(2, 3) * attn.scaling
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf)
    weights = scores.softmax(-1)  # (1, heads, T, T)
    out = attn.o_proj((weights @ v).transpose(1, 2).reshape(1, T, -1))
    return out[0, -1], weights[0, :, -1]


def test_captured_attention_output_equals_a_manual_recomputation(tiny_lm) -> None:
    cap = hooks.capture(tiny_lm.model, SEQS, PAD, batch_size=3)
    with torch.no_grad():
        for i, seq in enumerate(SEQS):
            out, weights = manual_layer0(tiny_lm.model, seq)
            assert_close(cap.attn_out[0][i], out)
            assert torch.allclose(cap.attn_map[0][i, :, : len(seq)], weights, atol=TOL)


def test_attention_implementation_and_hooks_are_restored_even_on_error(tiny_lm) -> None:
    before = anatomy.attn_implementation(tiny_lm.model)
    assert before != hooks.EAGER  # else the test would prove nothing
    hooks.capture(tiny_lm.model, SEQS, PAD, batch_size=2)
    assert anatomy.attn_implementation(tiny_lm.model) == before
    with pytest.raises(IndexError):
        hooks.capture(tiny_lm.model, [[tiny_lm.model.config.vocab_size + 10]], PAD, batch_size=1)
    assert anatomy.attn_implementation(tiny_lm.model) == before
    assert all(
        not anatomy.attention_module(layer)._forward_hooks for layer in anatomy.decoder_layers(tiny_lm.model)
    )
    assert not tiny_lm.model.training


def test_without_maps_the_model_keeps_its_attention_and_outputs_agree(tiny_lm) -> None:
    fast, eager = (
        hooks.capture(tiny_lm.model, SEQS, PAD, 3, maps=False),
        hooks.capture(tiny_lm.model, SEQS, PAD, 3),
    )
    assert fast.attn_map is None
    for a, b in zip(fast.attn_out, eager.attn_out, strict=True):
        assert_close(a, b)


def tiny_lora_llama() -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    model = LlamaForCausalLM(LlamaConfig(intermediate_size=64, num_key_value_heads=2, **TINY))
    return get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))


@pytest.mark.parametrize(
    "build", [tiny_gpt2, tiny_neox, tiny_lora_llama], ids=["gpt2", "gpt_neox", "peft_llama"]
)
def test_other_architectures_and_peft_wrappers(build) -> None:
    torch.manual_seed(0)
    model = build().eval()
    before = anatomy.attn_implementation(model)
    assert len(anatomy.decoder_layers(model)) == TINY["num_hidden_layers"]
    cap = hooks.capture(model, SEQS, 0, batch_size=2)
    assert len(cap.attn_out) == len(cap.attn_map) == TINY["num_hidden_layers"]
    assert cap.attn_out[0].shape == (len(SEQS), TINY["hidden_size"])
    for i, seq in enumerate(SEQS):
        assert torch.allclose(cap.attn_map[-1][i, :, : len(seq)].sum(-1), torch.ones(2), atol=TOL)
    assert anatomy.attn_implementation(model) == before


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Linear"):
        anatomy.decoder_layers(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="Linear"):
        anatomy.attention_module(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------------------
# Pure metrics


def test_rec2ftp_hand_built() -> None:
    zs = torch.tensor([False, False, False, False, True, True])
    ft = torch.tensor([True, True, True, False, True, False])
    icl = torch.tensor([True, False, True, True, False, True])
    # GD corrects queries 0, 1, 2 (zs wrong, ft right); ICL gets 0 and 2 of them right -> 2/3
    fraction, n_ft = D.rec2ftp(zs, icl, ft)
    assert n_ft == 3 and fraction == pytest.approx(2 / 3)


def test_rec2ftp_is_nan_when_gd_corrects_nothing() -> None:
    zs = torch.tensor([True, False])
    fraction, n_ft = D.rec2ftp(zs, torch.tensor([True, True]), torch.tensor([True, False]))
    assert n_ft == 0 and math.isnan(fraction)


def test_simaou_identical_opposite_scaled_and_random() -> None:
    g = torch.Generator().manual_seed(0)
    zs, upd = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    assert torch.allclose(D.simaou(zs, zs + upd, zs + upd), torch.ones(8, dtype=torch.float64))
    assert torch.allclose(D.simaou(zs, zs + upd, zs - upd), -torch.ones(8, dtype=torch.float64))
    other = torch.randn(8, 16, generator=g)
    assert torch.allclose(D.simaou(zs, zs + upd, zs + other), D.simaou(zs, zs + 7.5 * upd, zs + other))
    assert torch.allclose(D.simaou(zs, zs + upd, zs + other), D.simaou(zs, zs + upd, zs + 0.1 * other))
    big_zs, big_icl = torch.randn(200, 4096, generator=g), torch.randn(200, 4096, generator=g)
    rand = D.simaou_random(big_zs, big_icl, torch.Generator().manual_seed(1))
    assert rand.shape == (200,) and abs(rand.mean().item()) < 0.05
    again = D.simaou_random(big_zs, big_icl, torch.Generator().manual_seed(1))
    assert torch.equal(rand, again)


def test_row_cosine_is_zero_for_a_zero_row() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0], [3.0, 4.0]])
    assert torch.allclose(M.cosine(a, b), torch.tensor([1 / math.sqrt(2), 0.0], dtype=torch.float64))


def test_simam_identical_and_hand_computed() -> None:
    a = torch.tensor([[[0.5, 0.5, 0.0], [0.1, 0.3, 0.6]]])  # (Q=1, heads=2, L=3): head mean (0.3, 0.4, 0.3)
    b = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # head mean (0.5, 0.0, 0.5)
    assert D.simam(a, a).item() == pytest.approx(1.0)
    expected = (0.3 * 0.5 + 0.3 * 0.5) / (math.sqrt(0.09 + 0.16 + 0.09) * math.sqrt(0.5))
    assert D.simam(a, b).item() == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------------
# collect and analyse on tiny_random


def test_collect_query_tokens_identical_in_zero_shot_and_icl(tiny_lm, collected) -> None:
    zs, icl = collected["zs"], collected["icl"]
    assert torch.equal(zs.query_len, icl.query_len)
    for q, z, i, n in zip(QUERIES, zs.ids, icl.ids, zs.query_len.tolist(), strict=True):
        query = tiny_lm.tokenizer(SENTIMENT.query(q.fields, q.answer)[0], add_special_tokens=False).input_ids
        assert z[-n:] == i[-n:] == query
        zeroshot_input = tiny_lm.tokenizer(SENTIMENT.query(q.fields, q.answer)[0]).input_ids
        assert z == zeroshot_input  # method=zeroshot's input
        assert len(i) > len(z)  # the demonstrations come first
    context = SEPARATOR.join(SENTIMENT.demo(d.fields, d.answer) for d in DEMOS) + SEPARATOR
    for q, ids in zip(
        QUERIES, icl.ids, strict=True
    ):  # method=icl's input, whose last tokens are the query's own
        assert ids == tiny_lm.tokenizer(context + SENTIMENT.query(q.fields, q.answer)[0]).input_ids


def test_collect_shapes_and_correctness(tiny_lm, collected) -> None:
    cfg = tiny_lm.model.config
    lq = int(collected["zs"].query_len.max())
    for c in collected.values():
        assert len(c.attn_out) == len(c.attn_map_query) == cfg.num_hidden_layers
        for out, amap in zip(c.attn_out, c.attn_map_query, strict=True):
            assert out.shape == (len(QUERIES), cfg.hidden_size)
            assert amap.shape == (len(QUERIES), cfg.num_attention_heads, lq)
        assert c.correct.shape == (len(QUERIES),) and c.correct.dtype == torch.bool
    zs = collected["zs"]
    assert torch.all(zs.attn_map_query[0].sum(-1) <= 1 + TOL)
    # zero-shot input: the query's tokens are all there is (no BOS with this tokenizer), so rows sum to 1
    if all(len(ids) == n for ids, n in zip(zs.ids, zs.query_len.tolist(), strict=True)):
        assert torch.allclose(zs.attn_map_query[0].sum(-1), torch.ones(len(QUERIES), cfg.num_attention_heads))
    # correctness by hand: the label word with the larger first-token logit, against the gold label
    first = [tiny_lm.tokenizer(" " + w, add_special_tokens=False).input_ids[0] for w in LABEL_WORDS]
    with torch.no_grad():
        for i, (q, ids) in enumerate(zip(QUERIES, zs.ids, strict=True)):
            logits = tiny_lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
            predicted = first[int(logits[first].argmax())]
            assert bool(zs.correct[i]) == (predicted == first[int(q.label)])


def test_collect_open_vocabulary_correctness_is_top1(tiny_lm) -> None:
    template = Template("Q: {input}\nA: {label}", ["input"])
    queries = [Example(id="t:0", fields={"input": "walk"}, label="walked", answer="walked")]
    c = dai.collect(tiny_lm.model, tiny_lm.tokenizer, template, SEPARATOR, [], queries, None, None, 1, False)
    with torch.no_grad():
        top1 = tiny_lm.model(input_ids=torch.tensor(c.ids)).logits[0, -1].argmax()
    gold = tiny_lm.tokenizer(" walked", add_special_tokens=False).input_ids[0]
    assert bool(c.correct[0]) == (int(top1) == gold)


def test_analyse_gd_equal_to_zero_shot_gives_zero_simaou(collected) -> None:
    zs, icl = collected["zs"], collected["icl"]
    layers, queries, metrics = dai.analyse(zs, icl, zs, QUERY_IDS, seed=0)
    assert list(layers.columns) == ["query_id", "layer", "simaou", "simaou_random", "simam_ft", "simam_zs"]
    assert len(layers) == len(QUERIES) * len(zs.attn_out)
    assert not layers.isna().any().any()
    assert (layers["simaou"] == 0).all()  # the GD update is the zero vector
    assert (layers["simam_ft"] - layers["simam_zs"]).abs().max() < 1e-12  # GD maps are the ZS maps
    assert list(queries.columns) == ["query_id", "zs_correct", "icl_correct", "ft_correct"]
    assert metrics["simaou"] == 0.0


def test_analyse_gd_equal_to_icl_gives_ones(collected) -> None:
    zs, icl = collected["zs"], collected["icl"]
    layers, queries, metrics = dai.analyse(zs, icl, icl, QUERY_IDS, seed=0)
    assert torch.allclose(
        torch.tensor(layers["simaou"].to_numpy()), torch.ones(len(layers), dtype=torch.float64)
    )
    assert torch.allclose(
        torch.tensor(layers["simam_ft"].to_numpy()), torch.ones(len(layers), dtype=torch.float64)
    )
    assert metrics["simaou"] == pytest.approx(1.0) and metrics["simam_ft"] == pytest.approx(1.0)
    for name in dai.COSINE_METRICS:
        assert {name, f"{name}_ci_lo", f"{name}_ci_hi", f"{name}_n"} <= metrics.keys()
        assert metrics[f"{name}_n"] == len(QUERIES)
    expected_rec, n_ft = D.rec2ftp(zs.correct, icl.correct, icl.correct)
    assert metrics["n_ft_corrected"] == n_ft
    assert metrics["rec2ftp"] == pytest.approx(expected_rec, nan_ok=True)
    assert (
        metrics["icl_accuracy_dai"]
        == metrics["ft_accuracy_dai"]
        == pytest.approx(icl.correct.double().mean())
    )
    assert queries["query_id"].tolist() == QUERY_IDS


def test_analyse_is_deterministic_in_seed(collected) -> None:
    zs, icl = collected["zs"], collected["icl"]
    a = dai.analyse(zs, icl, icl, QUERY_IDS, seed=3)[0]["simaou_random"]
    b = dai.analyse(zs, icl, icl, QUERY_IDS, seed=3)[0]["simaou_random"]
    c = dai.analyse(zs, icl, icl, QUERY_IDS, seed=4)[0]["simaou_random"]
    assert a.equals(b) and not a.equals(c)


def test_analyse_rejects_misaligned_collections(collected) -> None:
    with pytest.raises(ValueError, match="query ids"):
        dai.analyse(collected["zs"], collected["icl"], collected["icl"], QUERY_IDS[:2], seed=0)


@pytest.mark.slow
def test_smollm2_capture_has_thirty_layers() -> None:
    lm = load_model(compose_config(["model=smollm2_135m_instruct_q4_1", "output_dir=/tmp/x"]).model)
    cap = hooks.capture(lm.model, SEQS[:2], lm.tokenizer.pad_token_id, batch_size=2)
    assert len(cap.attn_out) == len(cap.attn_map) == 30
    assert cap.attn_out[0].shape == (2, lm.model.config.hidden_size)
