"""Order sensitivity: the std across demo orders of each label's probability, averaged over labels."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from icl_gd import io
from icl_gd.metrics.order import label_prob_std
from icl_gd.sweep.jobs import Job, label_jobs
from icl_gd.sweep.order import order_sensitivity, order_table


def test_label_prob_std_by_hand() -> None:
    # 2 orders, 1 query, 2 labels: p = (0.2, 0.8) then (0.6, 0.4): each label's sample std = 0.4 / sqrt(2)
    probs = torch.tensor([[[0.2, 0.8]], [[0.6, 0.4]]], dtype=torch.float64)
    assert label_prob_std(probs).item() == pytest.approx(0.4 / math.sqrt(2), abs=1e-12)
    # identical orders: no sensitivity
    same = torch.tensor([[[0.3, 0.7], [0.5, 0.5]]] * 3)
    assert torch.equal(label_prob_std(same), torch.zeros(2, dtype=torch.float64))


def test_label_prob_std_needs_two_orders() -> None:
    with pytest.raises(ValueError, match="orders>=2"):
        label_prob_std(torch.ones(1, 3, 2))


def _job(root: Path, name: str, method: dict, order_seed: int | None, probs: list[list[float]]) -> Job:
    folder = root / name
    folder.mkdir(parents=True)
    config = {
        "model": {"name": "m", "revision": None, "random_init": False},
        "dataset": {"name": "d"},
        "method": method,
        "demos": 4,
        "seed": 0,
        "order_seed": order_seed,
    }
    df = pd.DataFrame({"query_id": [f"q{i}" for i in range(len(probs))], "label_probs": probs})
    io.write_parquet(folder / io.PREDICTIONS, df)
    return Job(folder, config)


def test_order_sensitivity_groups_jobs_that_differ_only_in_order(tmp_path: Path) -> None:
    gd1 = {"name": "gd", "batch_size": 1}
    gdall = {"name": "gd", "batch_size": "all"}
    jobs = label_jobs(
        [
            _job(tmp_path, "icl0", {"name": "icl"}, 0, [[0.2, 0.8], [0.5, 0.5]]),
            _job(tmp_path, "icl1", {"name": "icl"}, 1, [[0.6, 0.4], [0.5, 0.5]]),
            _job(tmp_path, "gd0", gd1, 0, [[0.1, 0.9], [0.3, 0.7]]),
            _job(tmp_path, "gd1", gd1, 1, [[0.1, 0.9], [0.3, 0.7]]),
            _job(tmp_path, "full0", gdall, 0, [[0.4, 0.6], [0.3, 0.7]]),
            _job(tmp_path, "lone", {"name": "zeroshot"}, 0, [[0.4, 0.6], [0.3, 0.7]]),  # one order: no row
        ]
    )
    df = order_sensitivity(jobs)
    by = {(r.method, r.query_id): r.std for r in df.itertuples()}
    assert set(df.method) == {"icl", "gd(batch_size=1)"}  # the full-batch job has a single order here
    assert by[("icl", "q0")] == pytest.approx(0.4 / math.sqrt(2))
    assert by[("icl", "q1")] == 0.0 and by[("gd(batch_size=1)", "q0")] == 0.0
    assert set(df.n_orders) == {2}
    table = order_table(df)
    icl = table[table.method == "icl"].iloc[0]
    assert icl["std"] == pytest.approx(0.4 / math.sqrt(2) / 2) and icl["n"] == 2
