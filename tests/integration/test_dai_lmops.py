"""The LMOps-exact Dai metrics (analysis/lmops.py, analysis/hooks.py capture_scores / TrainingQueries): each against
a direct NumPy re-implementation of microsoft/LMOps's formula (understand_icl/icl_ft/compute_sim.py,
compute_training_example_attn.py, GiilDe/ft-vs-icl scripts/metrics.py) on tensors captured from tiny_random, the
captures against a manual recomputation, and Kendall's tau on a hand example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from icl_gd.analysis import dai, hooks
from icl_gd.analysis import lmops as L
from icl_gd.methods import finetune
from tests.helpers.dai import (
    DEMOS,
    LABEL_WORDS,
    PAD,
    QUERIES,
    QUERY_IDS,
    SENTIMENT,
    SEPARATOR,
    SEQS,
    tiny_gpt2,
    tiny_neox,
)

TOL = 1e-5
SEED = 3
LR = 0.5  # large enough that one SGD step moves tiny_random's key/value projections visibly


# ---------------------------------------------------------------------------------------------------------
# LMOps's own code, transcribed in NumPy (the arbiter)


def np_cos(v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
    """compute_sim.py cal_cos_sim."""
    return (v1 * v2).sum(axis=-1) / (np.linalg.norm(v1, axis=-1) * np.linalg.norm(v2, axis=-1) + 1e-20)


def np_norm_hidden(hidden: np.ndarray) -> np.ndarray:
    """compute_sim.py norm_hidden on (n_examples, n_layers, hidden)."""
    return hidden / (np.linalg.norm(hidden, axis=-1) + 1e-20)[:, :, np.newaxis]


def np_softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def lmops_simaou(zs: np.ndarray, icl: np.ndarray, ft: np.ndarray) -> np.ndarray:
    """analyze_sim(normalize=True) per layer: inputs (n_examples, n_layers, hidden) -> (n_layers,)."""
    zs, icl, ft = np_norm_hidden(zs), np_norm_hidden(icl), np_norm_hidden(ft)
    return np_cos(icl - zs, ft - zs).mean(axis=0)


def lmops_simam(icl: np.ndarray, other: np.ndarray) -> np.ndarray:
    """analyze_attn_map(softmax=False) per layer: (n_examples, n_layers, n_heads, len) -> (n_layers,)."""
    return np_cos(icl, other).mean(axis=2).mean(axis=0)


def deutch_simam_diff(zs: np.ndarray, icl: np.ndarray, ft: np.ndarray) -> np.ndarray:
    """ft-vs-icl analyze_attn_map(diff=True) per layer."""
    return np_cos(icl - zs, ft - zs).mean(axis=2).mean(axis=0)


# ---------------------------------------------------------------------------------------------------------
# Captures


@pytest.fixture(scope="module")
def lmops_collected(tiny_lm) -> dict[str, dai.Collected]:
    """ZS, ICL and fine-tuned (one SGD step per demo on the key/value projections, loss on every token) collections
    with LMOps captures, and the training tokens' query vectors; tiny_lm is restored afterwards."""

    def run(model, with_demos: bool) -> dai.Collected:
        return dai.collect(
            model,
            tiny_lm.tokenizer,
            SENTIMENT,
            SEPARATOR,
            DEMOS,
            QUERIES,
            LABEL_WORDS,
            None,
            2,
            with_demos,
            lmops=True,
        )

    out = {"zs": run(tiny_lm.model, False), "icl": run(tiny_lm.model, True)}
    fmt = [SENTIMENT.query(d.fields, d.answer) for d in DEMOS]
    batch = finetune.with_loss_on(
        finetune.build_batch(tiny_lm.tokenizer, [p for p, _ in fmt], [a for _, a in fmt], None),
        finetune.ALL_TOKENS,
    )
    from omegaconf import OmegaConf  # noqa: PLC0415

    cfg = OmegaConf.create(
        {
            "optimizer": "sgd",
            "lr": LR,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "epochs": 1,
            "batch_size": 1,
            "params": "attn_kv",
            "grad_clip": None,
            "explode_factor": 1e3,
        }
    )
    params = finetune.select_parameters(tiny_lm.model, cfg)
    with finetune.restoring(params):
        with hooks.TrainingQueries(tiny_lm.model) as recorder:
            finetune.train(tiny_lm.model, tiny_lm.tokenizer, batch, params, cfg, seed=0)
        out["ft"] = run(tiny_lm.model, False)
    out["batch"] = batch
    out["recorder"] = recorder
    return out


def test_capture_scores_equal_a_manual_recomputation_and_the_patch_is_removed(tiny_lm) -> None:
    model = tiny_lm.model
    cap = hooks.capture_scores(model, SEQS, PAD, batch_size=3)
    assert "eager" not in ALL_ATTENTION_FUNCTIONS._local_mapping
    layer = model.model.layers[0]
    attn = layer.self_attn
    with torch.no_grad():
        for i, seq in enumerate(SEQS):
            T = len(seq)
            x = layer.input_layernorm(model.model.embed_tokens(torch.tensor([seq])))

            def heads(proj: torch.nn.Linear, x=x, T=T) -> torch.Tensor:
                return proj(x).view(1, T, -1, attn.head_dim).transpose(1, 2)

            cos, sin = model.model.rotary_emb(x, torch.arange(T)[None])
            q, k = apply_rotary_pos_emb(heads(attn.q_proj), heads(attn.k_proj), cos, sin)
            scores = (q @ repeat_kv(k, attn.num_key_value_groups).transpose(2, 3) * attn.scaling)[0, :, -1]
            assert torch.allclose(cap.scores[0][i, :, :T], scores, atol=TOL)
            assert torch.all(cap.scores[0][i, :, T:] == 0)
            assert torch.allclose(cap.query[0][i], attn.q_proj(x)[0, -1] * attn.scaling, atol=TOL)
    plain = hooks.capture(model, SEQS, PAD, 3, maps=False)
    for a, b in zip(cap.attn_out, plain.attn_out, strict=True):
        assert torch.allclose(a, b, atol=TOL)
    # the softmax of the scores over the real tokens is the attention map eager attention returns
    maps = hooks.capture(model, SEQS, PAD, 3).attn_map
    for i, seq in enumerate(SEQS):
        assert torch.allclose(
            cap.scores[1][i, :, : len(seq)].softmax(-1), maps[1][i, :, : len(seq)], atol=TOL
        )


def test_lmops_captures_sit_at_the_appended_label_token(tiny_lm, lmops_collected) -> None:
    zs, icl = lmops_collected["zs"], lmops_collected["icl"]
    label = tiny_lm.tokenizer(" " + LABEL_WORDS[0], add_special_tokens=False).input_ids[0]
    appended = [seq + [label] for seq in zs.ids]
    direct = hooks.capture_scores(tiny_lm.model, appended, PAD, 1)
    for a, b in zip(zs.lmops.attn_out, direct.attn_out, strict=True):
        assert torch.allclose(a, b, atol=TOL)
    width = int(zs.query_len.max()) + 1  # the query's tokens and the label token
    assert zs.lmops.scores_query[0].shape == (len(QUERIES), tiny_lm.model.config.num_attention_heads, width)
    # the demos' positions cover exactly their own tokens: each demo's text decodes back from them
    for positions in icl.lmops.demo_positions:
        for demo, pos in zip(DEMOS, positions, strict=True):
            text = tiny_lm.tokenizer.decode([icl.ids[0][p] for p in pos])
            assert text.strip() == SENTIMENT.demo(demo.fields, demo.answer).strip()
    assert zs.lmops.demo_positions is None


def test_training_queries_keep_only_the_training_passes(tiny_lm, lmops_collected) -> None:
    recorder, batch = lmops_collected["recorder"], lmops_collected["batch"]
    assert [len(c) for c in recorder.calls] == [len(DEMOS)] * tiny_lm.model.config.num_hidden_layers
    per_demo = recorder.per_demo([len(ids) for ids, _ in batch])
    q_dim = tiny_lm.model.config.num_attention_heads * tiny_lm.model.model.layers[0].self_attn.head_dim
    for demo, (ids, _) in zip(per_demo, batch, strict=True):
        assert [x.shape for x in demo] == [(len(ids), q_dim)] * tiny_lm.model.config.num_hidden_layers
    # the first demo is trained on by the untouched model: its layer-0 queries are the untouched q_proj's
    layer = tiny_lm.model.model.layers[0]
    with torch.no_grad():
        x = layer.input_layernorm(tiny_lm.model.model.embed_tokens(torch.tensor([batch[0][0]])))
        expected = layer.self_attn.q_proj(x)[0] * layer.self_attn.scaling
    assert torch.allclose(per_demo[0][0], expected, atol=TOL)


# ---------------------------------------------------------------------------------------------------------
# Each metric against LMOps's formula


def stacked(c: dai.Collected, field: str) -> np.ndarray:
    """(n_examples, n_layers, ...) NumPy array of a per-layer LMOps capture, as LMOps's record_info holds it."""
    return torch.stack(getattr(c.lmops, field), dim=1).double().numpy()


def test_simaou_and_simam_equal_lmops_and_deutch_formulas(lmops_collected) -> None:
    zs, icl, ft = (lmops_collected[k] for k in ("zs", "icl", "ft"))
    values = dai.lmops_values(zs, icl, ft, SEED)
    z, i, f = (stacked(c, "attn_out") for c in (zs, icl, ft))
    np.testing.assert_allclose(values["simaou_lmops"].mean(1).numpy(), lmops_simaou(z, i, f), atol=1e-9)
    zq, iq, fq = (stacked(c, "scores_query") for c in (zs, icl, ft))
    np.testing.assert_allclose(values["simam_lmops"].mean(1).numpy(), lmops_simam(iq, fq), atol=1e-9)
    np.testing.assert_allclose(values["simam_zs_lmops"].mean(1).numpy(), lmops_simam(iq, zq), atol=1e-9)
    np.testing.assert_allclose(
        values["simam_diff_deutch"].mean(1).numpy(), deutch_simam_diff(zq, iq, fq), atol=1e-9
    )
    # the fine-tune moved the model: the numbers are not the degenerate 0 or 1
    assert 0 < abs(float(values["simaou_lmops"].mean())) < 1
    # LMOps-exact differs from the project's unnormalised SimAOU on the same captures
    assert not torch.allclose(dai.layer_values(zs, icl, ft, SEED)["simaou"], values["simaou_lmops"])


def test_random_simaou_is_lmops_uniform_update(lmops_collected) -> None:
    zs, icl, ft = (lmops_collected[k] for k in ("zs", "icl", "ft"))
    values = dai.lmops_values(zs, icl, ft, SEED)["simaou_random_uniform_lmops"]
    generator = torch.Generator().manual_seed(dai._stream_seed(SEED, dai._UNIFORM_STREAM))
    for layer in range(len(zs.attn_out)):
        z, i = (np_norm_hidden(stacked(c, "attn_out"))[:, layer] for c in (zs, icl))
        draw = L.uniform_update_like(zs.lmops.attn_out[layer], generator).numpy()
        assert draw.min() >= 0 and draw.max() < 1  # np.random.random's range
        np.testing.assert_allclose(values[layer].numpy(), np_cos(i - z, draw), atol=1e-9)
    # uniform [0, 1) has a positive mean, so its cosine with a fixed vector is not centred on 0 as N(0, 1)'s is
    g = torch.Generator().manual_seed(0)
    x = torch.ones(1000, 64, dtype=torch.float64)
    assert float(L.cosine(x, L.uniform_update_like(x, g)).mean()) == pytest.approx(math.sqrt(3) / 2, abs=0.02)


def test_kendall_hand_example() -> None:
    a, b = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 3.0, 2.0, 4.0])
    assert L.kendall(a, b) == pytest.approx((5 - 1) / 6)  # 5 concordant pairs, 1 discordant, of 6
    assert L.kendall(a, a.flip(0)) == pytest.approx(-1.0)
    assert L.kendall(a, 10 * a + 3) == pytest.approx(1.0)


def test_kendall_metrics_equal_lmops_compute_training_attn(lmops_collected, tiny_lm) -> None:
    zs, icl, ft = (lmops_collected[k] for k in ("zs", "icl", "ft"))
    batch = lmops_collected["batch"]
    training = dai.training_keys(
        lmops_collected["recorder"].per_demo([len(ids) for ids, _ in batch]),
        [ids for ids, _ in batch],
        tiny_lm.tokenizer.bos_token_id,
    )
    values = dai.lmops_values(zs, icl, ft, SEED, training=training)
    n_layers = len(zs.attn_out)
    for q in range(len(QUERIES)):
        positions = icl.lmops.demo_positions[q]
        counts_icl = [len(p) for p in positions]
        counts_ft = [t.shape[1] for t in training]
        flat = [p for demo in positions for p in demo]
        for layer in range(n_layers):
            # ICL: record_attn_map_ctx (summed over heads), sliced to the demos' tokens, softmaxed
            icl_map = np_softmax(icl.lmops.scores[layer][q].double().numpy().sum(0)[flat])
            # FT: ftzs q . ft q of every training token, softmaxed
            keys = np.concatenate([t[layer].double().numpy() for t in training])
            ft_map = np_softmax(keys @ ft.lmops.query[layer][q].double().numpy())
            icl_ex = [c.sum() for c in np.split(icl_map, np.cumsum(counts_icl)[:-1])]
            ft_ex = [c.sum() for c in np.split(ft_map, np.cumsum(counts_ft)[:-1])]
            expected = scipy.stats.kendalltau(icl_ex, ft_ex)[0]
            assert float(values["kendall_example_lmops"][layer, q]) == pytest.approx(expected, abs=1e-9)
            if counts_icl == counts_ft:
                token = scipy.stats.kendalltau(icl_map, ft_map)[0]
                assert float(values["kendall_token_lmops"][layer, q]) == pytest.approx(token, abs=1e-9)
    assert counts_icl == counts_ft  # this template tokenises each demo alike in the prompt and alone
    for name in dai.KENDALL_METRICS:
        assert torch.all(values[name].abs() <= 1)


def test_analyse_reports_every_lmops_key_with_degenerate_cases(lmops_collected) -> None:
    zs, icl, ft = (lmops_collected[k] for k in ("zs", "icl", "ft"))
    layers, _, metrics = dai.analyse(zs, icl, icl, QUERY_IDS, seed=0, unrelated=ft)
    assert metrics["simaou_lmops"] == pytest.approx(1.0) and metrics["simam_lmops"] == pytest.approx(1.0)
    # layer 0 sees no context (rotary scores depend on relative positions only), so its ICL - ZS score update is
    # float noise, near the 1e-20 of the denominator: cos(d, d) falls just short of 1 there
    assert metrics["simam_diff_deutch"] == pytest.approx(1.0, abs=1e-3)
    assert {*dai.LMOPS_METRICS, *dai.UNRELATED_METRICS} <= metrics.keys()
    assert {*dai.LMOPS_METRICS, *dai.UNRELATED_METRICS} <= set(layers.columns)
    _, _, metrics = dai.analyse(zs, icl, zs, QUERY_IDS, seed=0)
    assert metrics["simaou_lmops"] == 0.0  # the GD update is zero
    assert not any(k.startswith("kendall") for k in metrics)  # no training record: no Kendall


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_neox], ids=["gpt2", "gpt_neox"])
def test_capture_scores_on_other_architectures(build) -> None:
    torch.manual_seed(0)
    model = build().eval()
    cap = hooks.capture_scores(model, SEQS, 0, batch_size=2)
    maps = hooks.capture(model, SEQS, 0, 2).attn_map
    for layer in range(len(maps)):
        for i, seq in enumerate(SEQS):
            scores = cap.scores[layer][i, :, : len(seq)]
            assert torch.allclose(scores.softmax(-1), maps[layer][i, :, : len(seq)], atol=TOL)
    assert cap.query is None  # q, k, v fused in one projection: no separate query vector to read
    assert not hooks.TrainingQueries(model).available
