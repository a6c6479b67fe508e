"""Weight evolution offline: checkpoints of a tiny model saved at two training steps, reloaded by model.revision."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from icl_gd.errors import ModelNotFoundError
from icl_gd.models import load_model
from icl_gd.models.loading import clear_cache, local_revision
from icl_gd.runner import run
from icl_gd.sweep.compare import compare_sweep
from tests.helpers.cli import run_py
from tests.helpers.config import compose_config

STEPS = (0, 30)
TEXT = "word: walk\npast: walked\n\nword: jump\npast: jumped\n\nword: sing\npast: sang"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ckpts/step0 (random weights) and ckpts/step30 (after 30 Adam steps on word pairs), as save_pretrained writes."""
    root = tmp_path_factory.mktemp("ckpts")
    lm = load_model(
        compose_config(["model=tiny_random", "output_dir=/tmp/x", "model.arch.num_hidden_layers=1"]).model
    )
    model = lm.model
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = lm.tokenizer(TEXT, return_tensors="pt").input_ids
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for step in range(max(STEPS) + 1):
        if step in STEPS:
            model.save_pretrained(root / f"step{step}")
            lm.tokenizer.save_pretrained(root / f"step{step}")
        model.train()
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # the per-process model cache holds this object: leave it as it was loaded
        for n, p in model.named_parameters():
            p.copy_(saved[n])
    model.eval()
    clear_cache()
    return root


def ckpt_overrides(root: Path) -> list[str]:
    return [
        "model=tiny_random",
        "model.random_init=false",
        f"model.path={root}",
        "model.package=null",
        "model.gguf_file=null",
    ]


def test_local_revision_picks_the_checkpoint_subfolder(checkpoints: Path) -> None:
    assert local_revision(checkpoints, "step30") == checkpoints / "step30"
    assert local_revision(checkpoints / "step0", "main") == checkpoints / "step0"  # a single checkpoint
    with pytest.raises(ModelNotFoundError, match=r"revisions there: \['step0', 'step30'\]"):
        local_revision(checkpoints, "step7")


def test_each_revision_loads_its_own_weights(checkpoints: Path) -> None:
    a = load_model(
        compose_config([*ckpt_overrides(checkpoints), "model.revision=step0", "output_dir=/tmp/x"]).model
    )
    b = load_model(
        compose_config([*ckpt_overrides(checkpoints), "model.revision=step30", "output_dir=/tmp/x"]).model
    )
    wa, wb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    assert any(not torch.equal(wa[n], wb[n]) for n in wa)


def test_a_sweep_over_revisions_compares_icl_and_gd_per_checkpoint(checkpoints: Path, tmp_path: Path) -> None:
    for step in STEPS:
        for method in ("icl", "gd"):
            cfg = compose_config(
                [
                    *ckpt_overrides(checkpoints),
                    f"model.revision=step{step}",
                    f"method={method}",
                    "dataset=present_past",
                    "demos=2",
                    "eval.n_queries=4",
                    "logger=none",
                    f"output_dir={tmp_path / f'step{step}_{method}'}",
                ]
            )
            run(cfg, raise_on_failure=True)
    compare_sweep(tmp_path, logger_cfg={"name": "none"})
    q = pd.read_parquet(tmp_path / "comparison_queries.parquet")
    assert set(q.model) == {"tiny_random@step0", "tiny_random@step30"}  # revisions vary: they label the model
    assert set(q.revision) == {"step0", "step30"} and set(q.pair_type) == {"icl_vs_gd"}
    # the checkpoint matters: the trained one puts more probability on the pairs it was trained on
    acc = q.groupby("model")["overlap@k"].mean()
    assert len(acc) == 2


@pytest.mark.slow
def test_the_weight_evolution_preset_on_local_checkpoints(checkpoints: Path, tmp_path: Path) -> None:
    """experiment=weight_evolution with model.path at a checkpoints folder: one ICL/GD comparison per revision."""
    sweep = tmp_path / "evolution"
    overrides = [*ckpt_overrides(checkpoints), "model.revision=step0,step30", "dataset=present_past"]
    run_py(
        "-m",
        "experiment=weight_evolution",
        *overrides,
        "eval.n_queries=4",
        "demos=2",
        "seed=0",  # the preset sweeps five demo sets; one is enough here
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        timeout=None,
    )
    # a path in the overrides nests the job folders (Hydra keeps the "/" of model.path=...): search below
    assert len(list(sweep.rglob("status.json"))) == 2 * 3  # per revision: ICL, ICL in another order, GD
    q = pd.read_parquet(sweep / "comparison_queries.parquet")
    assert set(q.model) == {"tiny_random@step0", "tiny_random@step30"}
    assert (sweep / "figures" / "weight_evolution.png").stat().st_size > 0
    assert "Weight evolution" in (sweep / "report.md").read_text()
