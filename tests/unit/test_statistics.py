"""The statistics a verdict rests on: the two-level cluster bootstrap, Wilson, Holm, the paired test, sweep integrity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from icl_gd import io
from icl_gd.metrics.intervals import (
    CLUSTER_BOOTSTRAP,
    QUERY_BOOTSTRAP,
    cluster_bootstrap,
    holm,
    summarize_binary,
    wilson,
)
from icl_gd.sweep import stats
from icl_gd.sweep.jobs import Job, unique_jobs
from icl_gd.sweep.pair_types import ORDER_PAIR
from icl_gd.sweep.pairs import find_pairs
from icl_gd.sweep.summary import summarize, with_zero_shot_distances
from icl_gd.sweep.verdicts import ABOVE, BELOW, WITHIN, paired_tests

Z = 1.959963984540054


def simulate(rng: np.random.Generator, n_sets: int, per_set: int, between_sd: float, within_sd: float = 1.0):
    """Values with a random effect per demo set: (values, cluster labels)."""
    effects = rng.normal(0, between_sd, n_sets)
    values = np.concatenate([e + rng.normal(0, within_sd, per_set) for e in effects])
    return values, np.repeat(np.arange(n_sets), per_set)


def test_the_interval_widens_with_the_variance_between_demo_sets() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for between in (0.0, 0.5, 2.0):
        v, c = simulate(rng, 6, 30, between)
        r = cluster_bootstrap(v, c, n_boot=2000, seed=1)
        widths.append(r.hi - r.lo)
        assert r.method == CLUSTER_BOOTSTRAP and r.n == 180 and r.n_clusters == 6
    assert widths[0] < widths[1] < widths[2]
    v, c = simulate(rng, 6, 30, 2.0)
    pooled = cluster_bootstrap(v, np.zeros(len(v)), n_boot=2000, seed=1)  # as if the queries were independent
    clustered = cluster_bootstrap(v, c, n_boot=2000, seed=1)
    assert pooled.method == QUERY_BOOTSTRAP and (pooled.hi - pooled.lo) < 0.5 * (clustered.hi - clustered.lo)


def test_coverage_on_simulated_demo_sets_is_near_the_level() -> None:
    """95% intervals of the mean over 300 simulated sweeps cover the true mean (0) 95% of the time, within MC error."""
    rng = np.random.default_rng(7)
    hits = 0
    sims = 300
    for i in range(sims):
        v, c = simulate(rng, 20, 10, 1.0)
        r = cluster_bootstrap(v, c, n_boot=400, seed=i)
        hits += r.lo <= 0 <= r.hi
    # MC sd of the coverage is ~0.013; percentile cluster bootstraps run slightly narrow with 20 clusters
    assert 0.88 <= hits / sims <= 0.99


def test_the_bootstrap_is_seeded_and_a_ratio_is_a_ratio_of_means() -> None:
    v, c = simulate(np.random.default_rng(3), 4, 12, 1.0)
    assert cluster_bootstrap(v, c, 500, seed=5) == cluster_bootstrap(v, c, 500, seed=5)
    r = cluster_bootstrap(2 * np.abs(v), c, 500, ratio_to=np.abs(v))
    assert r.mean == pytest.approx(2.0) and r.lo == pytest.approx(2.0) and r.hi == pytest.approx(2.0)
    assert math.isnan(cluster_bootstrap([], [], 100).mean)


@pytest.mark.parametrize(("k", "n"), [(9, 10), (0, 7), (10, 10), (33, 50)])
def test_wilson_matches_the_formula(k: int, n: int) -> None:
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(max(0.0, centre - half), abs=1e-9) and hi == pytest.approx(
        min(1.0, centre + half), abs=1e-9
    )


def test_a_perfect_zero_one_metric_reaches_one_and_no_further() -> None:
    m = summarize_binary("accuracy", [1.0] * 12)
    assert m["accuracy"] == 1.0 and m["accuracy_ci_hi"] == 1.0 and m["accuracy_ci_lo"] < 1.0
    m = summarize_binary("accuracy", [0.0] * 12)
    assert m["accuracy_ci_lo"] == 0.0 and m["accuracy_ci_hi"] > 0.0


def test_holm_on_a_hand_example() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04); the NaN is not counted
    assert holm([0.04, 0.01, np.nan, 0.03]).tolist()[:2] == pytest.approx([0.06, 0.03])
    assert holm([0.04, 0.01, np.nan, 0.03])[3] == pytest.approx(0.06) and np.isnan(holm([np.nan])[0])
    assert holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])  # 2 * 0.5 caps at 1; monotone after


# ---------------------------------------------------------------------------------------------------------
# The paired test and the share, on synthetic per-query frames


def pair_rows(
    pair: str, method_b: str, values: dict[str, np.ndarray], seeds: int = 4, per: int = 10
) -> pd.DataFrame:
    n = seeds * per
    return pd.DataFrame(
        {
            "model": "m",
            "dataset": "d",
            "demos": 4,
            "eval": "top_k=10",
            "pair_type": pair,
            "method_a": "icl",
            "method_b": method_b,
            "seed": np.repeat(np.arange(seeds), per),
            "query_id": np.tile(np.arange(per), seeds),
            "job_a": np.repeat([f"icl{s}" for s in range(seeds)], per),
            **{k: v[:n] for k, v in values.items()},
        }
    )


@pytest.fixture(autouse=True)
def _boot() -> None:
    stats.use(stats.Boot(n_boot=1000, level=0.95, seed=0))
    yield
    stats.use(stats.default_settings())


def test_the_paired_test_says_below_within_or_above_from_the_difference() -> None:
    rng = np.random.default_rng(0)
    floor = pair_rows(ORDER_PAIR, "icl", {"overlap@k": 0.9 + rng.normal(0, 0.02, 40)})
    far = pair_rows("icl_vs_gd", "gd", {"overlap@k": 0.5 + rng.normal(0, 0.02, 40)})
    same = pair_rows(
        "icl_vs_gd(lr=1)", "gd(lr=1)", {"overlap@k": floor["overlap@k"] + rng.normal(0, 0.001, 40)}
    )
    zs = pair_rows("icl_vs_zeroshot", "zeroshot", {"overlap@k": 0.2 + rng.normal(0, 0.02, 40)})
    tests = paired_tests(pd.concat([floor, far, same, zs]), primary="overlap@k").set_index("pair_type")
    assert set(tests.index) == {"icl_vs_gd", "icl_vs_gd(lr=1)"}  # zero-shot is a control, not tested
    assert tests.loc["icl_vs_gd", "verdict"] == BELOW and tests.loc["icl_vs_gd", "d_mean"] == pytest.approx(
        -0.4, abs=0.02
    )
    assert tests.loc["icl_vs_gd(lr=1)", "verdict"] == WITHIN
    assert (tests["p_holm"] >= tests["p"]).all() and tests.loc["icl_vs_gd", "n_clusters"] == 4
    # a distance: lower is more alike, so a GD closer than the floor is above it
    tv_floor = pair_rows(ORDER_PAIR, "icl", {"label_tv": 0.3 + rng.normal(0, 0.01, 40)})
    tv_gd = pair_rows("icl_vs_gd", "gd", {"label_tv": 0.05 + rng.normal(0, 0.01, 40)})
    assert paired_tests(pd.concat([tv_floor, tv_gd]), primary="auto")["verdict"].tolist() == [ABOVE]


def test_the_share_of_icls_shift_is_one_minus_a_ratio_of_mean_distances() -> None:
    zs = pair_rows("icl_vs_zeroshot", "zeroshot", {"tv": np.full(40, 0.4)})
    gd = pair_rows("icl_vs_gd", "gd", {"tv": np.full(40, 0.1)})
    queries = with_zero_shot_distances(pd.concat([zs, gd], ignore_index=True))
    rows = summarize(queries)
    share = rows[(rows["metric"] == "share_tv") & rows["seed"].isna()].set_index("pair_type")["mean"]
    assert share["icl_vs_gd"] == pytest.approx(0.75) and share["icl_vs_zeroshot"] == pytest.approx(0.0)
    pooled = rows[rows["seed"].isna() & (rows["metric"] == "tv")]
    assert set(pooled["n_clusters"]) == {4} and set(pooled["ci_method"]) == {CLUSTER_BOOTSTRAP}


# ---------------------------------------------------------------------------------------------------------
# Sweep integrity


def write_job(
    folder: Path,
    method: str = "icl",
    order_seed: int | None = None,
    demos: list[str] | None = None,
    top_k: int = 10,
) -> Job:
    config = {
        "method": {"name": method},
        "model": {"name": "m"},
        "dataset": {"name": "d", "split_seed": 0},
        "demos": 2,
        "seed": 0,
        "order_seed": order_seed,
        "eval": {"top_k": top_k},
        "output_dir": str(folder),
    }
    folder.mkdir(parents=True)
    (folder / io.CONFIG).write_text(yaml.safe_dump(config))
    io.write_jsonl(folder / io.DEMOS, [{"id": i} for i in (demos or ["a", "b"])])
    return Job(folder, config)


def test_a_job_under_two_folder_names_is_counted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = write_job(tmp_path / "seed_default"), write_job(tmp_path / "seed=0")
    c = write_job(tmp_path / "gd", method="gd")
    assert [j.folder for j in unique_jobs([a, b, c])] == [a.folder, c.folder]
    assert "same job" in caplog.text and "seed=0" in caplog.text


def test_an_order_pair_of_two_equal_realised_orders_is_no_pair(tmp_path: Path) -> None:
    ref = write_job(tmp_path / "o_null", demos=["a", "b"])
    same = write_job(tmp_path / "o1", order_seed=1, demos=["a", "b"])
    other = write_job(tmp_path / "o2", order_seed=2, demos=["b", "a"])
    pairs = [(t, a.folder.name, b.folder.name) for t, a, b in find_pairs([ref, same, other])]
    assert pairs == [(ORDER_PAIR, "o_null", "o2"), (ORDER_PAIR, "o1", "o2")]


def test_one_demo_jobs_have_no_order_pair(tmp_path: Path) -> None:
    ref = write_job(tmp_path / "a", demos=["x"])
    other = write_job(tmp_path / "b", order_seed=3, demos=["x"])
    assert find_pairs([ref, other]) == []


def test_jobs_with_other_evaluation_settings_never_pair(tmp_path: Path) -> None:
    icl = write_job(tmp_path / "icl")
    gd_same = write_job(tmp_path / "gd", method="gd")
    gd_k50 = write_job(tmp_path / "gd50", method="gd", top_k=50)
    pairs = [(a.folder.name, b.folder.name) for _, a, b in find_pairs([icl, gd_same, gd_k50])]
    assert pairs == [("icl", "gd")]
    assert json.loads(icl.key("method"))["eval"] != json.loads(gd_k50.key("method"))["eval"]
