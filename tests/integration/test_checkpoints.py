"""The checkpoint maker (icl_gd/checkpoints.py) on tiny_random: save_pretrained folders side by side, each
different from the others and from the start, their distances growing, tiny_random put back afterwards, and the
weight-evolution report's distance table read from them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from icl_gd import checkpoints

STEPS = [0, 2, 5]


@pytest.fixture(scope="module")
def made(tiny_lm, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("ckpts")
    cfg = checkpoints.load_config(
        [f"out={out}", f"steps={STEPS}", "batch_size=2", "max_tokens=16", "lr=1e-2"]
    )
    return checkpoints.make(cfg, lm=tiny_lm)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(next(folder.glob("*.safetensors")))


def test_checkpoints_are_save_pretrained_folders_side_by_side(made) -> None:
    assert [f.name for f in made] == [f"step{s}" for s in STEPS]
    assert len({f.parent for f in made}) == 1
    for f in made:
        assert (f / "config.json").exists() and list(f.glob("*.safetensors"))
        assert (f / "tokenizer_config.json").exists() or (f / "tokenizer.json").exists()


def test_checkpoints_differ_from_each_other_and_from_the_start(made, tiny_lm) -> None:
    start = {n: p.detach() for n, p in tiny_lm.model.state_dict().items()}
    saved = [weights(f) for f in made]
    assert all(torch.equal(saved[0][n], start[n]) for n in saved[0])  # step0 is the start itself
    for later in saved[1:]:
        assert any(not torch.equal(later[n], start[n]) for n in later)
    for i in range(len(saved)):
        for j in range(i + 1, len(saved)):
            assert any(not torch.equal(saved[i][n], saved[j][n]) for n in saved[i])
    distances = [json.loads((f / checkpoints.META).read_text())["relative_distance"] for f in made]
    assert distances[0] == 0 and 0 < distances[1] < distances[2]


def test_distance_table_of_a_sweep(made, tmp_path: Path) -> None:
    jobs = []
    for f in made:
        job = tmp_path / f.name
        job.mkdir()
        (job / "config.yaml").write_text(f"model:\n  path: {f.parent}\n  revision: {f.name}\n")
        jobs.append({"folder": str(job), "revision": f.name})
    table = checkpoints.distance_table(pd.DataFrame(jobs))
    assert table["revision"].tolist() == [f.name for f in made] and table["step"].tolist() == STEPS
    text = checkpoints.distance_md(pd.DataFrame(jobs))
    assert "distance" in text and all(f.name in text for f in made)
    assert checkpoints.distance_md(pd.DataFrame({"folder": [], "revision": []})) == ""


def test_bad_steps_are_refused() -> None:
    with pytest.raises(Exception, match="steps"):
        checkpoints.load_config(["steps=[3,3]"])
