"""The calibrated sweep at the sweep level: order pairs of every method (GD's noise floor beside ICL's), the
shuffled-label null control, and the GD search's points collected into the sweep folder and reported.

Pairing rules run on hand-built Job objects; the compare step and the report on a sweep folder of tiny real jobs
(ICL, GD with batch size 1, both in two orders and on shuffled labels) plus copies of GD job folders made into
method=gd_search jobs with a hand-written search.parquet, so that every number of the search section is known.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from icl_gd import io
from icl_gd.runner import run
from icl_gd.sweep import report, sections, tables, verdicts
from icl_gd.sweep import search as S
from icl_gd.sweep.compare import compare_sweep
from icl_gd.sweep.jobs import Job, demo_order, label_jobs, load_jobs
from icl_gd.sweep.loading import Sweep, load_sweep
from icl_gd.sweep.pair_types import GD_ORDER_PAIR, ORDER_PAIR, is_control
from icl_gd.sweep.pairs import find_pairs
from tests.helpers.config import compose_config
from tests.helpers.jobs import hand_job

PNG_MAGIC = b"\x89PNG"
NONE = {"name": "none"}
METRIC = "overlap@k"
STEPS = (0, 1, 3)
# (search optimizer, torch optimizer, momentum, lr, params): the fabricated grid, in grid order
GRID = (
    ("sgd", "sgd", 0.0, 0.1, "attn_kv"),
    ("adam", "adam", 0.0, 0.001, "attn_kv"),
    ("sgdm", "sgd", 0.9, 0.01, "all"),
)
LABELS = {"sgd": "sgd lr=0.1 attn_kv", "adam": "adam lr=0.001 attn_kv", "sgdm": "sgd m=0.9 lr=0.01 all"}
COLLAPSED_VALUE = 0.99  # the collapsed point's value: it must be in no curve


# ---------------------------------------------------------------------------------------------------------
# Pairing rules on hand-built jobs (no files: every realised order counts as different)


job = hand_job


def pair_set(jobs: list[Job]) -> set[tuple[str, str, str]]:
    return {(t, a.folder.name, b.folder.name) for t, a, b in find_pairs(label_jobs(jobs))}


def test_order_pairs_for_every_method_and_controls_only_across_labels() -> None:
    jobs = [
        job("icl"),
        job("icl_o1", order_seed=1),
        job("gd", "gd"),
        job("gd_o1", "gd", order_seed=1),
        job("gd_o2", "gd", order_seed=2),
        job("icl_sh", demo_labels="shuffled"),
        job("icl_sh_o1", demo_labels="shuffled", order_seed=1),
        job("gd_sh", "gd", demo_labels="shuffled"),
        job("gd_sh_o1", "gd", demo_labels="shuffled", order_seed=1),
    ]
    assert pair_set(jobs) == {
        # method pairs: one per realised order, never across demo labels
        ("icl_vs_gd", "icl", "gd"),
        ("icl_vs_gd", "icl_o1", "gd_o1"),
        ("icl_vs_gd_both_shuffled", "icl_sh", "gd_sh"),
        ("icl_vs_gd_both_shuffled", "icl_sh_o1", "gd_sh_o1"),
        # order pairs of each method: the sampled order first, then by order_seed
        (ORDER_PAIR, "icl", "icl_o1"),
        (GD_ORDER_PAIR, "gd", "gd_o1"),
        (GD_ORDER_PAIR, "gd", "gd_o2"),
        (GD_ORDER_PAIR, "gd_o1", "gd_o2"),
        ("icl_vs_icl_order_both_shuffled", "icl_sh", "icl_sh_o1"),
        ("gd_vs_gd_order_both_shuffled", "gd_sh", "gd_sh_o1"),
        # the null control: ICL on the original labels, sampled order, against each shuffled job of that order
        ("icl_vs_icl_shuffled_labels", "icl", "icl_sh"),
        ("icl_vs_gd_shuffled_labels", "icl", "gd_sh"),
    }


def test_a_job_without_demo_labels_is_on_the_original_labels() -> None:
    old = job("old_gd", "gd")
    del old.config["demo_labels"]
    assert old.demo_labels == "original" and not old.shuffled and old.shown_label == "gd"
    assert job("x", "gd", demo_labels="shuffled").shown_label == "gd (shuffled labels)"


def test_pair_names_say_floor_and_shuffled_labels() -> None:
    assert tables.pair_name(ORDER_PAIR) == "ICL vs ICL in another order (floor)"
    assert tables.pair_name(GD_ORDER_PAIR) == "gd vs gd in another order (gd's floor)"
    assert tables.pair_name("icl_vs_gd_best_shuffled_labels") == "icl vs gd_best on shuffled labels (control)"
    assert tables.pair_name("icl_vs_gd_both_shuffled") == "icl vs gd, both on shuffled labels"
    assert tables.pair_name("icl_vs_gd(lr=0.001)") == "icl vs gd(lr=0.001)"


def floor_queries() -> pd.DataFrame:
    """Per-query rows: icl_vs_gd at 0.5 against an ICL floor at 0.9; GD's own floor at 0.6; a control at 0.2."""

    def rows(pair: str, method_a: str, method_b: str, value: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "pair_type": pair,
                "method_a": method_a,
                "method_b": method_b,
                "model": "m",
                "dataset": "d",
                "demos": 4,
                "seed": [0, 0, 1, 1],
                "query_id": ["q0", "q1", "q0", "q1"],
                METRIC: [value, value + 0.02, value - 0.02, value],
                "ocs": value,
                "accuracy_a": 1.0,
                "accuracy_b": 0.5,
            }
        )

    return pd.concat(
        [
            rows("icl_vs_gd", "icl", "gd", 0.5),
            rows(ORDER_PAIR, "icl", "icl", 0.9),
            rows(GD_ORDER_PAIR, "gd", "gd", 0.6),
            rows("icl_vs_gd_shuffled_labels", "icl", "gd", 0.2),
            rows("icl_vs_gd_both_shuffled", "icl", "gd", 0.4),
            rows("icl_vs_icl_order_both_shuffled", "icl", "icl", 0.1),  # must not be the floor
        ],
        ignore_index=True,
    )


def test_gd_floor_is_a_headline_row_and_the_icl_floor_stays_the_verdicts_floor() -> None:
    q = floor_queries()
    table = verdicts.headline_table(q.assign(eval="")).set_index("pair_type")
    assert set(table.index) == {
        GD_ORDER_PAIR,
        "icl_vs_gd",
        "icl_vs_gd_shuffled_labels",
        "icl_vs_gd_both_shuffled",
        "icl_vs_icl_order_both_shuffled",
    }
    assert table.loc[GD_ORDER_PAIR, METRIC] == pytest.approx(0.6)
    assert table.loc[GD_ORDER_PAIR, f"floor_{METRIC}"] == pytest.approx(0.9)  # ICL's floor beside GD's
    assert table.loc[GD_ORDER_PAIR, "verdict"] == verdicts.FLOOR_ROW
    assert table.loc["icl_vs_icl_order_both_shuffled", "verdict"] == verdicts.FLOOR_ROW
    assert table.loc["icl_vs_gd_both_shuffled", "verdict"] == verdicts.BOTH_CONTROL_ROW
    tests = verdicts.paired_tests(q.assign(eval=""), primary=METRIC).set_index("pair_type")
    assert set(tests.index) == {"icl_vs_gd", "icl_vs_gd_shuffled_labels"}  # floors and both-shuffled untested
    assert tests.loc["icl_vs_gd", "d_mean"] == pytest.approx(0.5 - 0.9)  # against ICL's floor, not 0.1
    assert tests.loc["icl_vs_gd_shuffled_labels", "d_mean"] == pytest.approx(0.2 - 0.9)
    curves = tables.agreement_curves(q)
    floors = curves.drop_duplicates("pair_type").set_index("pair_type")
    assert floors.loc[GD_ORDER_PAIR, "floor"] and not floors.loc[GD_ORDER_PAIR, "icl_floor"]
    assert floors.loc[ORDER_PAIR, "icl_floor"] and not floors.loc["icl_vs_gd", "floor"]


# ---------------------------------------------------------------------------------------------------------
# Fabricated search points


def search_points(seed: int, best: str, matched: str) -> pd.DataFrame:
    """Every (setting, step) of GRID with select_value = 0.3 + 0.1 * step + 0.05 * seed + 0.01 * setting index;
    sgd lr=0.1 collapsed at step 3 (value COLLAPSED_VALUE); `best` / `matched`: "<search optimizer>@<step>"."""
    rows = []
    for i, (search_opt, opt, momentum, lr, params) in enumerate(GRID):
        for step in STEPS:
            collapsed = search_opt == "sgd" and step == 3
            value = COLLAPSED_VALUE if collapsed else 0.3 + 0.1 * step + 0.05 * seed + 0.01 * i
            point = f"{search_opt}@{step}"
            chosen = ",".join(c for c, p in (("best", best), ("acc_matched", matched)) if p == point)
            rows.append(
                {
                    "search_optimizer": search_opt,
                    "optimizer": opt,
                    "momentum": momentum,
                    "lr": lr,
                    "params": params,
                    "step": step,
                    "select_metric": METRIC,
                    "select_value": value,
                    "select_score": value,
                    "select_accuracy": 0.25 * step,
                    "icl_select_accuracy": 0.5,
                    "train_loss": 2.0 - 0.5 * step,
                    "select_entropy": 1.0,
                    "collapsed": collapsed,
                    "chosen": chosen,
                    "collapse_reason": "near uniform" if collapsed else "",
                }
            )
    return pd.DataFrame(rows)


def test_search_table_names_each_seeds_choice() -> None:
    points = pd.concat(
        [
            search_points(0, "adam@3", "sgd@1").assign(seed=0, job="a"),
            search_points(1, "sgdm@1", "sgdm@1").assign(seed=1, job="b"),
        ],
        ignore_index=True,
    ).assign(model="m", dataset="d", demos=4, method="gd_best", demo_labels="original", order_seed=pd.NA)
    table = S.search_table(points).set_index("seed")
    assert table.loc[0, ["optimizer", "momentum", "lr", "params", "step"]].tolist() == [
        "adam",
        0.0,
        0.001,
        "attn_kv",
        3,
    ]
    assert table.loc[0, "acc_matched"] == "sgd lr=0.1 attn_kv, step 1"
    assert table.loc[1, ["optimizer", "momentum", "lr", "params", "step"]].tolist() == [
        "sgd",
        0.9,
        0.01,
        "all",
        1,
    ]
    assert table.loc[1, "acc_matched"] == "the best point"
    assert table["n_points"].tolist() == [9, 9] and table["n_collapsed"].tolist() == [1, 1]
    assert S.setting_label("sgd", 0.0, 1e-6, "all") == "sgd lr=1e-6 all"


def fabricated_panels(n: int) -> pd.DataFrame:
    parts = []
    for k in range(n):
        for seed in (0, 1):
            parts.append(
                search_points(seed, "adam@3", "sgd@1").assign(
                    seed=seed, job=f"j{k}-{seed}", dataset=f"d{k}", demos=4
                )
            )
    return pd.concat(parts, ignore_index=True).assign(
        model="m", method="gd_best", demo_labels="original", order_seed=pd.NA
    )


def test_trajectory_curves_mean_over_seeds_and_leave_collapsed_points_out(tmp_path: Path) -> None:
    points = fabricated_panels(6)
    every = S.panels(points)
    assert [p["title"] for p in every][:2] == ["d0, N=4", "d1, N=4"] and len(every) == 6
    curves = S.trajectory_curves(points, every[: S.MAX_PANELS])
    assert sorted(curves["panel"].unique()) == [f"d{k}, N=4" for k in range(4)]
    adam = curves[(curves["panel"] == "d0, N=4") & (curves["setting"] == LABELS["adam"])].set_index("step")
    # seeds 0 and 1: 0.3 + 0.1 step + 0.01 (adam is the second setting) + 0.05 seed, averaged
    assert adam["mean"].tolist() == pytest.approx([0.3 + 0.1 * s + 0.01 + 0.025 for s in STEPS])
    assert (adam["lo"] <= adam["mean"]).all() and (adam["mean"] <= adam["hi"]).all()
    assert (adam["n_seeds"] == 2).all()
    sgd = curves[(curves["panel"] == "d0, N=4") & (curves["setting"] == LABELS["sgd"])]
    assert sorted(sgd["step"]) == [0, 1] and COLLAPSED_VALUE not in sgd["mean"].tolist()
    one_seed = S.trajectory_curves(points[points["seed"] == 0], every[:1])
    assert one_seed["lo"].isna().all() and one_seed["hi"].isna().all()  # one seed: the line only
    chosen = S.chosen_points(points, every[:1])
    assert chosen["step"].tolist() == [3, 3] and chosen["select_value"].tolist() == pytest.approx(
        [0.61, 0.66]
    )


def test_search_section_caps_the_panels_and_draws_the_figure(tmp_path: Path) -> None:
    """The section on six (dataset, N) cells: four panels drawn and said so, every search in the table."""
    sweep = Path(tmp_path)
    empty = pd.DataFrame()
    frame = Sweep(  # what the report reads, without a sweep folder behind it
        folder=sweep,
        status={},
        jobs=empty,
        queries=empty,
        orders=empty,
        accuracy=empty,
        dai_layers=empty,
        dai_queries=empty,
        sparsity=empty,
        top_k=10,
        logger=NONE,
        search=fabricated_panels(6),
    )
    sec = sections.search_section(frame, sweep / io.FIGURES)
    assert sec is not None and sec.figure == sweep / io.FIGURES / sections.FIG_TRAJECTORY
    assert "traj" in sec.figure.name and sec.figure.read_bytes()[:4] == PNG_MAGIC
    assert "first 4 of 6 (model, dataset, N) panels" in sec.markdown
    assert sec.markdown.startswith("## GD given its best chance")
    assert len(sec.table) == 12  # 6 cells x 2 seeds
    assert sections.search_section(dataclasses.replace(frame, search=empty), sweep) is None


# ---------------------------------------------------------------------------------------------------------
# A sweep folder of tiny real jobs and fabricated gd_search jobs


REAL = {
    "icl": ["method=icl"],
    "icl_o1": ["method=icl", "order_seed=1"],
    "gd": ["method=gd", "method.batch_size=1"],
    "gd_o1": ["method=gd", "method.batch_size=1", "order_seed=1"],
    "icl_sh": ["method=icl", "demo_labels=shuffled"],
    "icl_sh_o1": ["method=icl", "demo_labels=shuffled", "order_seed=1"],
    "gd_sh": ["method=gd", "method.batch_size=1", "demo_labels=shuffled"],
    "gd_d1": ["method=gd", "method.batch_size=1", "demos=1"],  # one demo: both orders are the same
    "gd_d1_o1": ["method=gd", "method.batch_size=1", "demos=1", "order_seed=1"],
}
GD_SEARCH = {"name": "gd_search", "tag": "gd_best", "select": "agreement", "metric": METRIC}


def as_gd_search(sweep: Path, source: str, name: str, points: pd.DataFrame | bytes, **config: Any) -> None:
    """A copy of a GD job folder made into a gd_search job (method, `config` changes) with `points` as its
    search.parquet (bytes: written as they are)."""
    folder = sweep / name
    shutil.copytree(sweep / source, folder)
    cfg = yaml.safe_load((folder / io.CONFIG).read_text())
    cfg.update(method=GD_SEARCH, output_dir=str(folder), **config)
    io.write_yaml(folder / io.CONFIG, cfg)
    if isinstance(points, bytes):
        (folder / io.SEARCH).write_bytes(points)
    else:
        io.write_parquet(folder / io.SEARCH, points)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep = tmp_path_factory.mktemp("calibrated")
    for name, overrides in REAL.items():
        run(compose_config(["debug=smoke", "logger=none", f"output_dir={sweep / name}", *overrides]))
    as_gd_search(sweep, "gd", "gd_best", search_points(0, "adam@3", "sgd@1"))
    as_gd_search(sweep, "gd", "gd_best_s1", search_points(1, "sgdm@1", "sgdm@1"), seed=1)  # no ICL partner
    as_gd_search(sweep, "gd_sh", "gd_best_sh", search_points(0, "sgdm@3", "adam@1"))
    as_gd_search(
        sweep, "gd", "gd_best_nocol", search_points(3, "adam@3", "sgd@1").drop(columns="chosen"), seed=3
    )
    as_gd_search(sweep, "gd", "gd_best_corrupt", b"not a parquet file", seed=2)
    return sweep


@pytest.mark.slow
def test_calibrated_pairs_on_real_folders(calibrated: Path) -> None:
    jobs = load_jobs(calibrated)
    assert demo_order(next(j for j in jobs if j.folder.name == "gd_d1")) == demo_order(
        next(j for j in jobs if j.folder.name == "gd_d1_o1")
    )
    pairs = {(t, a.folder.name, b.folder.name) for t, a, b in find_pairs(jobs)}
    assert pairs == {
        ("icl_vs_gd", "icl", "gd"),
        ("icl_vs_gd", "icl_o1", "gd_o1"),
        ("icl_vs_gd_best", "icl", "gd_best"),
        ("gd_vs_gd_best", "gd", "gd_best"),
        ("icl_vs_gd_both_shuffled", "icl_sh", "gd_sh"),
        ("icl_vs_gd_best_both_shuffled", "icl_sh", "gd_best_sh"),
        ("gd_vs_gd_best_both_shuffled", "gd_sh", "gd_best_sh"),
        (ORDER_PAIR, "icl", "icl_o1"),
        (GD_ORDER_PAIR, "gd", "gd_o1"),  # and none for gd_d1 / gd_d1_o1: the same realised order
        ("icl_vs_icl_order_both_shuffled", "icl_sh", "icl_sh_o1"),
        ("icl_vs_icl_shuffled_labels", "icl", "icl_sh"),
        ("icl_vs_gd_shuffled_labels", "icl", "gd_sh"),
        ("icl_vs_gd_best_shuffled_labels", "icl", "gd_best_sh"),
    }
    assert "gd_best_corrupt" not in {j.folder.name for j in jobs}  # its search.parquet does not read back
    for t, a, b in find_pairs(jobs):  # only the control pairs original with shuffled labels
        assert (a.shuffled != b.shuffled) == is_control(t)


@pytest.mark.slow
def test_calibrated_compare_and_report(calibrated: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        summary = compare_sweep(calibrated, logger_cfg=NONE)
    assert "gd_best_nocol" in caplog.text and "search.parquet" in caplog.text and "chosen" in caplog.text
    assert "gd_best_corrupt" in caplog.text
    assert {GD_ORDER_PAIR, ORDER_PAIR, "icl_vs_gd_best_shuffled_labels"} <= set(summary["pair_type"])

    # the sweep's search.parquet: the points of the three readable searches, each with its job's columns
    points = pd.read_parquet(calibrated / io.SWEEP_SEARCH)
    assert list(points.columns[: len(S.SEARCH_META)]) == S.SEARCH_META
    assert set(search_points(0, "", "").columns) <= set(points.columns)
    assert len(points) == 3 * len(GRID) * len(STEPS)
    jobs = {j.folder.name: j for j in load_jobs(calibrated)}
    by_job = points.groupby("job").first()
    expect = {"gd_best": (0, "original"), "gd_best_s1": (1, "original"), "gd_best_sh": (0, "shuffled")}
    assert set(by_job.index) == {str(calibrated / n) for n in expect}
    for name, (seed, labels) in expect.items():
        row = by_job.loc[str(calibrated / name)]
        assert (row["seed"], row["demo_labels"], row["method"]) == (seed, labels, "gd_best")
        assert (row["model"], row["dataset"], row["demos"]) == (
            jobs[name].model_label,
            jobs[name].config["dataset"]["name"],
            2,
        )
        assert pd.isna(row["order_seed"])
    assert points["collapsed"].sum() == 3

    md = report.build_report(calibrated, logger_cfg=NONE).read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## GD vs ICL against the order noise floor", "## GD given its best chance"]
    assert "| gd vs gd in another order (gd's floor) |" in md and "GD's noise floor" in md
    assert "| icl vs gd_best on shuffled labels (control) |" in md and "Null control (shuffled labels)" in md
    assert (calibrated / io.FIGURES / "gd_trajectory.png").read_bytes()[:4] == PNG_MAGIC
    assert "](figures/gd_trajectory.png)" in md
    section = md.split("## GD given its best chance")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "gd_best" in line]
    assert len(rows) == 3
    cells = {tuple(c.strip() for c in r.strip("|").split("|"))[3:] for r in rows}
    assert ("gd_best", "original", "0", "adam", "0", "0.001", "attn_kv", "3") in {c[:8] for c in cells}
    assert ("gd_best", "original", "1", "sgd", "0.9", "0.01", "all", "1") in {c[:8] for c in cells}
    assert ("gd_best", "shuffled labels", "0", "sgd", "0.9", "0.01", "all", "3") in {c[:8] for c in cells}
    assert {c[-2] for c in cells} == {
        "sgd lr=0.1 attn_kv, step 1",
        "the best point",
        "adam lr=0.001 attn_kv, step 1",
    }
    assert {c[-1] for c in cells} == {"1 of 9"}

    # the figure's numbers: two seeds on the original labels (a band), one on shuffled labels (a line)
    sweep = load_sweep(calibrated)
    drawn = S.panels(sweep.search)
    assert [p.get("demo_labels") for p in drawn] == ["original", "shuffled"]
    curves = S.trajectory_curves(sweep.search, drawn)
    orig = curves[curves["panel"] == drawn[0]["title"]]
    adam = orig[orig["setting"] == LABELS["adam"]].set_index("step")["mean"]
    assert adam.tolist() == pytest.approx([0.3 + 0.1 * s + 0.01 + 0.025 for s in STEPS])
    assert orig["lo"].notna().all()
    assert curves[curves["panel"] == drawn[1]["title"]]["lo"].isna().all()
    floors = S.trajectory_floors(sweep.queries, drawn)
    q = sweep.queries
    assert floors[drawn[0]["title"]] == pytest.approx(q.loc[q["pair_type"] == ORDER_PAIR, METRIC].mean())
    shuffled_floor = q.loc[q["pair_type"] == "icl_vs_icl_order_both_shuffled", METRIC].mean()
    assert floors[drawn[1]["title"]] == pytest.approx(shuffled_floor)
    assert "shuffled labels" in drawn[1]["title"]
    # the headline's ICL floor is the ICL-order pair's alone (the shuffled ICL order pair is a row of its own)
    head = verdicts.headline_table(q).set_index("pair_type")
    floor = head.loc["icl_vs_gd", f"floor_{METRIC}"]
    assert floor == pytest.approx(q.loc[q["pair_type"] == ORDER_PAIR, METRIC].mean())
    assert head.loc[GD_ORDER_PAIR, METRIC] == pytest.approx(
        q.loc[q["pair_type"] == GD_ORDER_PAIR, METRIC].mean()
    )
    assert not math.isnan(floor) and np.isfinite(head.loc[GD_ORDER_PAIR, METRIC])


REAL_SEARCH = [
    "method=gd_search",
    "search.optimizer=[sgd,adam]",
    "search.lr=[1e-3,1e-1]",
    "search.params=[attn_kv]",
    "search.eval_at=[0,1,3]",
]


@pytest.mark.slow
def test_real_gd_search_jobs_reach_the_sweep_search_file_and_the_report(tmp_path: Path) -> None:
    """Two demo sets of ICL (two orders each) and of method=gd_search, run for real: the points of both searches
    (2 optimizers x 2 lrs x 1 params x 3 steps) in the sweep's search.parquet, and the report's section."""
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        for name, overrides in {
            "icl": ["method=icl"],
            "icl_o1": ["method=icl", "order_seed=1"],
            "gd_best": REAL_SEARCH,
        }.items():
            out = sweep / f"{name}_s{seed}"
            run(
                compose_config(
                    [
                        "debug=smoke",
                        "logger=none",
                        "eval.n_select=4",
                        f"seed={seed}",
                        f"output_dir={out}",
                        *overrides,
                    ]
                )
            )
    summary = compare_sweep(sweep, logger_cfg=NONE)
    # the accuracy-matched point of each search is a job of its own (companions/gd_acc_matched), paired with ICL
    assert {"icl_vs_gd_best", "icl_vs_gd_acc_matched", "gd_acc_matched_vs_gd_best", ORDER_PAIR} <= set(
        summary["pair_type"]
    )
    assert summary[summary.pair_type == "icl_vs_gd_acc_matched"]["n_clusters"].max() == 2  # pooled: both sets
    points = pd.read_parquet(sweep / io.SWEEP_SEARCH)
    assert list(points.columns[: len(S.SEARCH_META)]) == S.SEARCH_META
    assert len(points) == 2 * 2 * 2 * 3 and sorted(points["seed"].unique()) == [0, 1]
    assert set(points["method"]) == {"gd_best"} and set(points["demo_labels"]) == {"original"}
    assert (points.groupby("job")["chosen"].apply(lambda c: S.is_chosen(c, S.BEST).sum()) == 1).all()
    md = report.build_report(sweep, logger_cfg=NONE).read_text()
    assert "## GD given its best chance" in md and "](figures/gd_trajectory.png)" in md
    assert (sweep / io.FIGURES / "gd_trajectory.png").read_bytes()[:4] == PNG_MAGIC
