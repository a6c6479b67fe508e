"""Pairing jobs of a sweep and the per-query comparison metrics, on constructed frames and on real job folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from icl_gd.runner import run
from icl_gd.sweep import cli
from icl_gd.sweep.compare import compare_sweep, pair_metrics
from icl_gd.sweep.jobs import Job, label_jobs
from icl_gd.sweep.pair_types import ORDER_PAIR, method_label, model_label
from icl_gd.sweep.pairs import find_pairs


def frame(
    topk: list[list[int]], probs: list[list[float]], full: list[list[float]] | None = None
) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "query_id": [f"q{i}" for i in range(len(topk))],
            "topk_ids": topk,
            "topk_probs": probs,
            "correct": [True] * len(topk),
            "label_probs": [[p[0], p[1]] for p in probs],
        }
    )
    if full is not None:
        df["full_dist"] = [np.asarray(f, dtype=np.float16).tobytes() for f in full]
    return df


def test_identical_predictions_are_maximally_alike() -> None:
    a = frame([[1, 2, 3]], [[0.5, 0.3, 0.2]], [[0.0, 0.5, 0.3, 0.2]])
    m = pair_metrics(a, a).iloc[0]
    assert (m["overlap@k"], m["ocs"], m["top1_agreement"], m["label_agreement"]) == (1, 1, 1, 1)
    assert m["tv"] == pytest.approx(0) and m["js"] == pytest.approx(0) and m["label_tv"] == pytest.approx(0)


def test_partial_and_disjoint_overlap_by_hand() -> None:
    a = frame([[1, 2, 3], [1, 2, 3]], [[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]], [[0, 0.5, 0.3, 0.2, 0, 0]] * 2)
    b = frame(
        [[2, 1, 4], [5, 4, 0]],
        [[0.6, 0.3, 0.1], [0.7, 0.2, 0.1]],
        [[0, 0.3, 0.6, 0, 0.1, 0], [0.1, 0, 0, 0, 0.2, 0.7]],
    )
    m = pair_metrics(a, b)
    assert m["overlap@k"].tolist() == pytest.approx([2 / 3, 0])
    # shared tokens {1, 2}: a = (0.5, 0.3), b = (0.3, 0.6): cos = 0.33 / (sqrt(.34) * sqrt(.45))
    assert m["ocs"].tolist() == pytest.approx([0.33 / (0.34**0.5 * 0.45**0.5), 0.0], abs=1e-6)
    assert m["top1_agreement"].tolist() == [0, 0]
    assert m["tv"].tolist() == pytest.approx([0.5 * (0.2 + 0.3 + 0.2 + 0.1), 1.0], abs=1e-3)
    assert m["ocs_n_common"].tolist() == [2, 0]  # the tokens OCS is computed over
    # only the normalised shares of ICL's shift are named "share" (a token count is not one)
    assert not [c for c in m.columns if "share" in c]


def job(tmp: Path, method: str, **cfg) -> Job:
    base = {
        "model": {"name": "m"},
        "dataset": {"name": "d"},
        "demos": 8,
        "seed": 0,
        "order_seed": None,
        "method": {"name": method},
        "output_dir": str(tmp / method),
        "logger": {"name": "none"},
    }
    return Job(tmp / f"{method}{cfg}", {**base, **cfg})


def test_pairs_differ_only_in_method_or_only_in_order(tmp_path: Path) -> None:
    jobs = [
        job(tmp_path, "gd"),
        job(tmp_path, "icl"),
        job(tmp_path, "zeroshot"),
        job(tmp_path, "icl", order_seed=1),
        job(tmp_path, "gd", demos=4),
        job(tmp_path, "icl", seed=1),
    ]
    pairs = {
        (t, a.method, b.method, a.config["order_seed"], b.config["order_seed"])
        for t, a, b in find_pairs(jobs)
    }
    assert pairs == {
        ("icl_vs_gd", "icl", "gd", None, None),
        ("icl_vs_zeroshot", "icl", "zeroshot", None, None),
        ("gd_vs_zeroshot", "gd", "zeroshot", None, None),
        (ORDER_PAIR, "icl", "icl", None, 1),
    }


def test_method_variants_get_labels_from_what_varies(tmp_path: Path) -> None:
    """An lr grid, a layer choice and a tag each give the variant its own label and its own pair with ICL."""
    gd = {"name": "gd", "lr": 1e-4, "params": "all", "layer": None}
    jobs = label_jobs(
        [
            job(tmp_path, "icl"),
            Job(tmp_path / "a", {**job(tmp_path, "gd").config, "method": {**gd, "lr": 1e-3}}),
            Job(tmp_path / "b", {**job(tmp_path, "gd").config, "method": gd}),
            Job(
                tmp_path / "c",
                {**job(tmp_path, "gd").config, "method": {**gd, "params": "layer_v", "layer": 15}},
            ),
            Job(tmp_path / "d", {**job(tmp_path, "gd").config, "method": {**gd, "tag": "mine"}}),
        ]
    )
    assert [j.method_label for j in jobs] == [
        "icl",
        "gd(lr=0.001,params=all)",
        "gd(lr=0.0001,params=all)",
        "gd(layer=15,lr=0.0001,params=layer_v)",
        "mine",
    ]
    types = sorted(t for t, _, _ in find_pairs(jobs) if t.startswith("icl_vs"))
    assert types == [
        "icl_vs_gd(layer=15,lr=0.0001,params=layer_v)",
        "icl_vs_gd(lr=0.0001,params=all)",
        "icl_vs_gd(lr=0.001,params=all)",
        "icl_vs_mine",
    ]
    assert method_label({"name": "gd", "lr": 1e-3}, []) == "gd"  # nothing varies: the bare name


def test_model_labels_show_revisions_only_when_they_vary_and_mark_untrained() -> None:
    assert model_label({"name": "p", "revision": "step1"}, False) == "p"
    assert model_label({"name": "p", "revision": "step1"}, True) == "p@step1"
    assert model_label({"name": "p", "random_init": True}, False) == "p (untrained)"


def test_compare_sweep_on_real_job_folders(smoke, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for name, ov in {
        "icl": ["method=icl"],
        "gd": ["method=gd"],
        "icl_o1": ["method=icl", "order_seed=1"],
    }.items():
        run(smoke(*ov, out=sweep / name))
    summary = compare_sweep(sweep)
    assert set(summary.pair_type) == {"icl_vs_gd", ORDER_PAIR}
    assert (sweep / "comparison.parquet").exists() and (sweep / "comparison.md").exists()
    assert pd.read_parquet(sweep / "comparison.parquet").equals(summary)
    row = summary[(summary.pair_type == "icl_vs_gd") & (summary.metric == "overlap@k")].iloc[0]
    assert row["n"] == 4 and 0 <= row["mean"] <= 1 and row["ci_lo"] <= row["mean"] <= row["ci_hi"]
    assert {"tv", "js", "kl", "ocs", "top1_agreement"} <= set(summary.metric)
    assert "icl_vs_gd" in (sweep / "comparison.md").read_text()


def test_cli_compare_names_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both commands of `python -m icl_gd.sweep` refuse a path that is not a folder the same way."""
    with pytest.raises(SystemExit) as missing:
        cli.main(["compare", str(tmp_path / "nowhere"), "--logger", "none"])
    assert missing.value.code == 2 and "is not a folder" in capsys.readouterr().err
