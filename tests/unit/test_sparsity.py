"""Sparsity of weight updates and of the one-step-GD construction: exact fractions on hand-built tensors."""

from __future__ import annotations

import pytest
import torch

from icl_gd.analysis.sparsity import (
    COLUMNS,
    DEFAULT_THRESHOLDS,
    summarize_sparsity,
    update_sparsity,
    weights_sparsity,
)
from icl_gd.linreg.constructions import construction_weights
from icl_gd.metrics.sparsity import below_counts
from icl_gd.models.anatomy import parse_param

THRESHOLDS = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]


def known_update() -> torch.Tensor:
    """4x4: six zeros, four 1e-7, three 1e-4, three 0.5 (float64, so 1e-4 is not rounded below the threshold)."""
    values = [0.0] * 6 + [1e-7] * 4 + [1e-4] * 3 + [0.5] * 3
    return torch.tensor(values, dtype=torch.float64)[
        torch.randperm(16, generator=torch.Generator().manual_seed(0))
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.layers.12.self_attn.v_proj.weight", (12, "v_proj")),
        ("layer3.self_attn.v_proj.weight", (3, "v_proj")),
        ("transformer.h.4.attn.c_attn.weight", (4, "c_attn")),
        ("transformer.h.4.attn.c_attn.bias", (4, "c_attn.bias")),
        ("model.layers.0.self_attn.v_proj.bias", (0, "v_proj.bias")),
        ("gpt_neox.layers.2.attention.query_key_value.weight", (2, "query_key_value")),
        ("base_model.model.model.layers.1.self_attn.q_proj.lora_A.default.weight", (1, "q_proj.lora_A")),
        ("base_model.model.model.layers.7.mlp.down_proj.lora_B.default.weight", (7, "down_proj.lora_B")),
        ("model.layers.5.input_layernorm.weight", (5, "input_layernorm")),
        ("model.embed_tokens.weight", (-1, "embed_tokens")),
        ("model.norm.weight", (-1, "norm")),
        ("lm_head.weight", (-1, "lm_head")),
        ("transformer.ln_f.bias", (-1, "ln_f.bias")),
    ],
)
def test_parse_param(name: str, expected: tuple[int, str]) -> None:
    assert parse_param(name) == expected


def test_update_sparsity_exact_fractions() -> None:
    df = update_sparsity({"model.layers.0.self_attn.v_proj.weight": known_update().reshape(4, 4)}, THRESHOLDS)
    assert list(df.columns) == COLUMNS and len(df) == len(THRESHOLDS)
    assert set(df["source"]) == {"gd_update"} and set(df["layer"]) == {0} and set(df["matrix"]) == {"v_proj"}
    assert set(df["n_entries"]) == {16}
    # |d| < 1e-2 and 1e-3: zeros, 1e-7s and 1e-4s; < 1e-4 (strict) and 1e-5, 1e-6: zeros and 1e-7s
    expected = {1e-2: 13 / 16, 1e-3: 13 / 16, 1e-4: 10 / 16, 1e-5: 10 / 16, 1e-6: 10 / 16}
    assert dict(zip(df["threshold"], df["fraction"], strict=True)) == expected


def test_relative_mode_divides_by_the_largest_entry() -> None:
    t = known_update() * 3e3  # 0, 3e-4, 0.3, 1500: relative values 0, 2e-7, 2e-4, 1
    df = update_sparsity({"lm_head.weight": t}, THRESHOLDS, relative=True)
    expected = {1e-2: 13 / 16, 1e-3: 13 / 16, 1e-4: 10 / 16, 1e-5: 10 / 16, 1e-6: 10 / 16}
    assert dict(zip(df["threshold"], df["fraction"], strict=True)) == expected
    assert set(zip(df["layer"], df["matrix"], strict=True)) == {(-1, "lm_head")}
    absolute = update_sparsity({"lm_head.weight": t}, THRESHOLDS)
    assert absolute["fraction"].tolist() == [10 / 16, 10 / 16, 6 / 16, 6 / 16, 6 / 16]
    zeros = update_sparsity({"lm_head.weight": torch.zeros(3, 3)}, THRESHOLDS, relative=True)
    assert zeros["fraction"].tolist() == [1.0] * len(THRESHOLDS)


def test_chunks_pool_to_the_same_counts() -> None:
    t = torch.randn(1000, generator=torch.Generator().manual_seed(1)) * 1e-3
    assert below_counts(t, THRESHOLDS, chunk=7) == below_counts(t, THRESHOLDS)
    assert below_counts(t.to(torch.bfloat16), THRESHOLDS)[1] == 1000


def test_tensors_sharing_a_layer_and_matrix_are_pooled_and_layers_summarised() -> None:
    update = {
        "model.layers.0.self_attn.v_proj.weight": torch.zeros(2, 2),  # fully sparse
        "model.layers.1.self_attn.v_proj.weight": torch.ones(2, 2),  # dense
        "model.layers.1.self_attn.k_proj.weight": torch.tensor([0.0, 1.0]),
    }
    df = update_sparsity(update, [1e-3])
    by_key = {(r.layer, r.matrix): r.fraction for r in df.itertuples()}
    assert by_key == {(0, "v_proj"): 1.0, (1, "v_proj"): 0.0, (1, "k_proj"): 0.5}
    summary = summarize_sparsity(df)
    got = {r.matrix: (r.fraction, r.n_layers) for r in summary.itertuples()}
    assert got == {"v_proj": (0.5, 2), "k_proj": (0.5, 1)}


def test_construction_sparsity_for_d3_by_hand() -> None:
    d, D = 3, 4
    df = weights_sparsity(construction_weights(d, n=10, lr=0.7), THRESHOLDS)
    assert (
        set(df["source"]) == {"construction"} and set(df["layer"]) == {0} and set(df["n_entries"]) == {D * D}
    )
    nonzeros = {
        "wk": d,  # [[I, 0], [0, 0]]
        "wq": d,  # [[H^T, 0], [0, 0]] with H = I
        "wv": 1,  # [[0, 0], [w0^T, -1]] with w0 = 0
        "proj": D,  # (lr / n) I
        "wk_t_wq": d,  # diag(1, 1, 1, 0)
        "proj_wv": 1,  # (lr / n) W_V
    }
    for matrix, nz in nonzeros.items():
        rows = df[df["matrix"] == matrix]
        assert len(rows) == len(THRESHOLDS)
        assert rows["fraction"].tolist() == [(D * D - nz) / (D * D)] * len(THRESHOLDS), matrix


def test_fractions_do_not_increase_as_the_threshold_falls() -> None:
    gen = torch.Generator().manual_seed(2)
    update = {
        f"model.layers.{i}.mlp.up_proj.weight": torch.randn(8, 8, generator=gen)
        * 10.0 ** -torch.randint(1, 7, (8, 8))
        for i in range(3)
    }
    df = update_sparsity(update, sorted(DEFAULT_THRESHOLDS, reverse=True))
    for _, rows in df.groupby(["layer", "matrix"]):
        fractions = rows.sort_values("threshold", ascending=False)["fraction"].tolist()
        assert fractions == sorted(fractions, reverse=True) and fractions[0] > fractions[-1]
    construction = weights_sparsity(construction_weights(5, 20))
    for _, rows in construction.groupby("matrix"):
        fractions = rows.sort_values("threshold", ascending=False)["fraction"].tolist()
        assert fractions == sorted(fractions, reverse=True)


def test_update_and_weights_under_the_same_relative_definitions() -> None:
    from icl_gd.analysis import sparsity as S  # noqa: PLC0415

    w = torch.tensor([[1.0, -1.0], [1.0, -1.0]], dtype=torch.float64)  # std (ddof 1) = 2 / sqrt(3)
    update = torch.tensor([[1e-3, 0.0], [0.5, 2.0]], dtype=torch.float64)  # max |d| = 2
    name = "model.layers.0.self_attn.v_proj.weight"
    df = update_sparsity({name: update}, [1e-2, 0.3], relative=True, reference={name: w})
    assert list(df.columns) == COLUMNS + S.REFERENCE_COLUMNS
    at = df.set_index("threshold")
    # |d| / max|d| = 5e-4, 0, 0.25, 1: below 1e-2 two of four, below 0.3 three
    assert at.loc[1e-2, "fraction"] == 0.5 and at.loc[0.3, "fraction"] == 0.75
    # |d| / std(w) = 8.7e-4, 0, 0.43, 1.73: below 1e-2 two, below 0.3 two
    assert at.loc[1e-2, S.STD_RELATIVE] == 0.5 and at.loc[0.3, S.STD_RELATIVE] == 0.5
    # the weights themselves: |w| / max|w| = 1 and |w| / std(w) = 0.87 everywhere: nothing below either threshold
    assert (df[S.WEIGHTS_MAX] == 0).all() and (df[S.WEIGHTS_STD] == 0).all()
    assert list(update_sparsity({name: update}, [1e-2]).columns) == COLUMNS  # without originals: as before


def test_construction_sparsity_std_relative_by_hand() -> None:
    """scale="std": |w| / std(w) of each matrix; the construction's zeros are below every threshold either way."""
    d, D = 3, 4
    weights = construction_weights(d, n=10, lr=0.7)
    by_max = weights_sparsity(weights, THRESHOLDS)
    by_std = weights_sparsity(weights, THRESHOLDS, scale="std")
    wk = weights["wk"].to(torch.float64)
    expected = float(((wk.abs() / wk.std()) < THRESHOLDS[0]).double().mean())
    got = by_std[(by_std["matrix"] == "wk") & (by_std["threshold"] == THRESHOLDS[0])]["fraction"].item()
    assert got == expected == (D * D - d) / (D * D)
    assert by_std["n_entries"].tolist() == by_max["n_entries"].tolist()
    with pytest.raises(ValueError, match="scale"):
        weights_sparsity(weights, THRESHOLDS, scale="mean")


def test_markdown_cells_with_pipes_stay_one_cell() -> None:
    """A definition such as |Δw| / max|Δw| in a cell is escaped, so the row keeps its column count."""
    import pandas as pd

    from icl_gd.sweep.markdown import md_table, text

    md = md_table(
        pd.DataFrame({"definition": ["|Δw| / max|Δw|"], "x": ["1"]}), [text("definition"), text("x")]
    )
    row = md.splitlines()[2]
    assert row == r"| \|Δw\| / max\|Δw\| | 1 |"
    assert len(row.replace(r"\|", "").split("|")) - 2 == 2  # two cells
