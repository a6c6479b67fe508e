"""Parameter perturbation (analysis/perturb.py): eps = 0 changes nothing, the noise is eps * std(W) * Z per matrix
(per member with member_axis), the weights come back bit for bit, the scopes, and the lab's sensitivity job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from icl_gd.analysis import perturb
from icl_gd.errors import ConfigError
from icl_gd.linreg import sensitivity
from icl_gd.linreg.config import parse
from icl_gd.tracking import NullTracker
from tests.helpers.config import compose_config

EPS = 0.1
WIDTH = 300  # entries per side of the test matrix: its noise's sample std is within a few % of the target


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.LayerNorm(WIDTH))


def snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in m.named_parameters()}


def same(m: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(p, before[n]) for n, p in m.named_parameters())


def test_eps_zero_changes_nothing_and_restores() -> None:
    m = model()
    before = snapshot(m)
    with perturb.perturbed(dict(m.named_parameters()), 0.0, seed=1) as noise:
        assert noise == {} and same(m, before)
    assert same(m, before)


def test_noise_is_relative_to_each_matrix_std_and_restored_even_on_error() -> None:
    m = model()
    before = snapshot(m)
    params = dict(m.named_parameters())
    with pytest.raises(RuntimeError, match="inside"), perturb.perturbed(params, EPS, seed=1) as noise:
        delta = m[0].weight.detach() - before["0.weight"]
        assert torch.allclose(delta, noise["0.weight"])
        target = EPS * before["0.weight"].double().std()
        assert float(delta.double().std()) == pytest.approx(float(target), rel=0.03)
        assert not torch.equal(m[0].weight, before["0.weight"])
        raise RuntimeError("inside")
    assert same(m, before)
    with perturb.perturbed(params, EPS, seed=1) as a_noise:
        a = m[0].weight.detach().clone()
    with perturb.perturbed(params, EPS, seed=1):
        assert torch.equal(m[0].weight, a)  # the same seed draws the same noise
    with perturb.perturbed(params, EPS, seed=2):
        assert not torch.equal(m[0].weight, a)
    assert set(a_noise) == set(params)


def test_member_axis_scales_each_member_by_its_own_std() -> None:
    w = torch.randn(2, WIDTH, WIDTH, generator=torch.Generator().manual_seed(0))
    w[1] *= 100
    noise = perturb.relative_noise(w, EPS, torch.Generator().manual_seed(0), member_axis=True)
    ratio = float(noise[1].std() / noise[0].std())
    assert ratio == pytest.approx(100, rel=0.05)
    whole = perturb.relative_noise(w, EPS, torch.Generator().manual_seed(0))
    assert float(whole[0].std()) == pytest.approx(float(whole[1].std()), rel=0.05)  # one std for the tensor


def test_scopes_on_tiny_random(tiny_lm) -> None:
    every = perturb.select(tiny_lm.model, "all")
    attention = perturb.select(tiny_lm.model, "attention")
    assert all(p.dim() >= perturb.MATRIX_DIMS for p in every.values())
    assert set(attention) < set(every)
    assert attention and all(".self_attn." in n for n in attention)
    layers = tiny_lm.model.config.num_hidden_layers
    assert len(attention) == 4 * layers  # q, k, v, o per layer
    assert any("embed_tokens" in n for n in every)
    with pytest.raises(ConfigError, match="scope"):
        perturb.select(tiny_lm.model, "mlp")


@pytest.fixture(scope="module")
def lab_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path, dict]:
    out = tmp_path_factory.mktemp("sens")
    cfg = compose_config(
        [
            "experiment=linreg_sensitivity",
            "method.steps=20",
            "method.seeds=1",
            "method.warmup=5",
            "method.tune_tasks=512",
            "method.sensitivity.eval_tasks=512",
            "method.sensitivity.noise_seeds=2",
            "method.sensitivity.eps=[0,0.1,1]",
            f"output_dir={out}",
            "logger=none",
        ]
    )
    metrics = sensitivity.run(parse(cfg), out, NullTracker())
    return pd.read_csv(out / sensitivity.TABLE), out, metrics


def test_lab_sensitivity_table_and_figure(lab_table) -> None:
    table, out, metrics = lab_table
    assert sorted(table["eps"].unique()) == [0.0, 0.1, 1.0]
    assert set(table["model"]) == set(sensitivity.MODELS)
    assert len(table) == len(sensitivity.MODELS) * (1 + 2 + 2)  # eps=0 once, two noise seeds otherwise
    assert (out / "figures" / sensitivity.FIGURE).exists()
    # unperturbed, the construction is one-step GD: the same risk on the same tasks
    c0 = table[(table["model"] == "gd_construction") & (table["eps"] == 0)].iloc[0]
    assert c0["risk"] == pytest.approx(c0["risk_gd_1step"], rel=1e-5)
    # noise of the size of the weights themselves ruins every model
    for name in sensitivity.MODELS:
        assert (
            metrics[f"risk/sensitivity_ratio/{name}/eps=1"] > metrics[f"risk/sensitivity_ratio/{name}/eps=0"]
        )
        assert metrics[f"risk/sensitivity_ratio/{name}/eps=0"] == pytest.approx(1.0)


def test_the_sensitivity_figure_keeps_its_legend_outside_the_data(tmp_path, monkeypatch) -> None:
    import matplotlib.pyplot as plt
    import pandas as pd

    from icl_gd import style
    from icl_gd.analysis import perturb

    table = pd.DataFrame(
        [
            {"model": m, "eps": e, "noise_seed": s, "risk": 1.0 + e + s / 10}
            for m in ("lsa", "h3")
            for e in (0.0, 0.1, 1.0)
            for s in (0, 1)
        ]
    )
    kept: list[plt.Figure] = []
    monkeypatch.setattr(style, "save", lambda fig, p: kept.append(fig) or p)
    perturb.draw(table, {"risk": "risk"}, "model", tmp_path / "r.png", "t", log_y=True)
    (fig,) = kept
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["h3", "lsa"]
    plt.close(fig)
