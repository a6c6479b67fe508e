"""The `grids` sweeper (hydra/sweeper=grids): a sweep that is the union of named cartesian grids.

Unit tests of the expansion (union, precedence, dedup, order, Hydra's sweep syntax, the error messages), the
command line's syntax for grids composed as run.py composes it, and real run.py multiruns: a preset with three
grids runs exactly its 8 jobs into readable folders and is compared at the end; a malformed or uncomposable grid
stops before any job folder exists.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from hydra_plugins.icl_gd_sweeper.grids_sweeper import GridsConfigError, batches, expand, expand_grids
from tests.helpers.cli import run_py
from tests.helpers.config import ROOT, job_folder, subprocess_env

ICL_GD = {"icl": {"method": "icl", "order_seed": "null,1"}, "gd": {"method": "gd", "method.lr": "1e-3,1e-4"}}


# ----------------------------------------------------------------------------------------------------------
# Expansion


def test_union_of_grids_in_grid_then_cartesian_order() -> None:
    assert expand({"demos": "1,2"}, ICL_GD, []) == [
        ["demos=1", "method=icl", "order_seed=null"],
        ["demos=1", "method=icl", "order_seed=1"],
        ["demos=2", "method=icl", "order_seed=null"],
        ["demos=2", "method=icl", "order_seed=1"],
        ["demos=1", "method=gd", "method.lr=0.001"],
        ["demos=1", "method=gd", "method.lr=0.0001"],
        ["demos=2", "method=gd", "method.lr=0.001"],
        ["demos=2", "method=gd", "method.lr=0.0001"],
    ]  # 2 demos x (2 icl + 2 gd): ICL is never crossed with an lr


def test_the_command_line_wins_over_params_and_grids_and_its_own_keys_cross_every_grid() -> None:
    grids = {**ICL_GD, "gd": {**ICL_GD["gd"], "demos": "8,16"}}  # a grid's own demos
    jobs = expand({"demos": "1,2,4", "dataset": "sst2,cb"}, grids, ["demos=8", "dataset=cb", "seed=0,1"])
    assert len(jobs) == 2 * 2 + 2 * 2  # (icl: order_seed x seed) + (gd: lr x seed)
    for job in jobs:
        assert [o for o in job if o.startswith(("demos=", "dataset="))] == ["demos=8", "dataset=cb"]
    assert jobs[:2] == [
        ["demos=8", "dataset=cb", "method=icl", "order_seed=null", "seed=0"],
        ["demos=8", "dataset=cb", "method=icl", "order_seed=null", "seed=1"],
    ]  # a key keeps the slot where it first appears; the command line's new keys come last
    # a command line sweep replaces a grid's sweep for that key
    assert [j[0] for j in expand({"demos": "1,2,4"}, {"a": {"method": "icl"}}, ["demos=2,8"])] == [
        "demos=2",
        "demos=8",
    ]


def test_a_grid_wins_over_params_and_a_key_is_matched_without_its_prefix() -> None:
    assert expand({"method.lr": "0.5", "seed": "0"}, {"gd": {"method": "gd", "method.lr": "1e-3"}}, []) == [
        ["method.lr=0.001", "seed=0", "method=gd"]
    ]
    assert expand({}, {"a": {"+extra": "1,2", "method": "icl"}}, []) == [
        ["+extra=1", "method=icl"],
        ["+extra=2", "method=icl"],
    ]
    assert expand({}, {"a": {"+extra": "1,2"}}, ["++extra=3"]) == [["++extra=3"]]
    assert expand({"order_seed": "1"}, {}, ["~order_seed"]) == [["~order_seed"]]  # no "=null" on a deletion


def test_a_job_in_two_grids_runs_once_under_the_first() -> None:
    grids = {
        "icl": {"method": "icl", "order_seed": "null,1"},
        "floor": {"order_seed": 1, "method": "icl"},  # the same job, its keys in another order
        "gd": {"method": "gd"},
    }
    by_grid = expand_grids({"demos": "1,2"}, grids, [])
    assert [len(jobs) for jobs in by_grid.values()] == [4, 2, 2]
    assert expand({"demos": "1,2"}, grids, []) == [
        ["demos=1", "method=icl", "order_seed=null"],
        ["demos=1", "method=icl", "order_seed=1"],
        ["demos=2", "method=icl", "order_seed=null"],
        ["demos=2", "method=icl", "order_seed=1"],
        ["demos=1", "method=gd"],
        ["demos=2", "method=gd"],
    ]


def test_range_choice_and_plain_yaml_values_use_hydras_parser() -> None:
    jobs = expand({}, {"a": {"demos": "range(1,4)", "method": "choice(icl,gd)"}}, [])
    assert jobs == [[f"demos={d}", f"method={m}"] for d in (1, 2, 3) for m in ("icl", "gd")]
    # numbers, booleans and null as YAML gives them are single values
    assert expand({}, {"a": {"demos": 8, "method.lr": 5e-5, "rerun": True, "order_seed": None}}, []) == [
        ["demos=8", "method.lr=5e-05", "rerun=True", "order_seed=null"]
    ]  # Hydra's own rendering of a parsed value (the basic sweeper turns rerun=true into rerun=True too)
    assert expand({}, {"a": {"demos": "'1,2'"}}, []) == [["demos='1,2'"]]  # quoted: one string value


def test_without_grids_it_is_the_basic_sweeper() -> None:
    params, cli = {"demos": "1,2", "seed": "0"}, ["method=icl,gd", "seed=3,4"]
    parser = OverridesParser.create()
    basic = BasicSweeper.split_arguments(
        parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + cli), None
    )
    assert expand(params, {}, cli) == expand(params, None, cli) == basic[0]
    assert len(basic[0]) == 8


def test_max_batch_size_splits_in_order() -> None:
    jobs = [[f"seed={i}"] for i in range(8)]
    assert [len(b) for b in batches(jobs, 3)] == [3, 3, 2] and sum(batches(jobs, 3), []) == jobs
    assert batches(jobs, None) == batches(jobs, -1) == [jobs]
    with pytest.raises(GridsConfigError, match="max_batch_size"):
        batches(jobs, 0)


@pytest.mark.parametrize(
    ("params", "grids", "needles"),
    [
        (
            {},
            {"icl": {"method": "icl"}, "gd": "method=gd"},
            [
                "hydra.sweeper.grids.gd must be a mapping",
                'hydra.sweeper.grids.gd.<key>: "1,2,4"',
                "'method=gd'",
            ],
        ),
        ({}, {"gd": ["method=gd"]}, ["hydra.sweeper.grids.gd must be a mapping", "list"]),
        ({}, ["icl", "gd"], ['hydra.sweeper.grids.<name>.<key>: "1,2,4"']),
        (
            {},
            {"gd": {"method": "gd", "method.lr": [1e-3, 1e-4]}},
            [
                "hydra.sweeper.grids.gd.method.lr",
                "got list",
                'hydra.sweeper.grids.gd.method.lr: "0.001,0.0001"',
            ],
        ),
        ({}, {"gd": {"method": {"name": "gd"}}}, ["hydra.sweeper.grids.gd.method", "got dict", '"1,2,4"']),
        ({}, {"a": {"demos": "1,,2"}}, ["hydra.sweeper.grids.a.demos: cannot parse 'demos=1,,2'"]),
        ({}, {"a": {"method.lr": "interval(0,1)"}}, ["hydra.sweeper.grids.a.method.lr", "interval sweep"]),
        ({"demos": [1, 2]}, {}, ['hydra.sweeper.params.demos: "1,2"']),
    ],
)
def test_a_malformed_entry_names_itself_and_the_expected_form(params, grids, needles: list[str]) -> None:
    with pytest.raises(GridsConfigError) as e:
        expand(params, grids, [])
    assert all(n in str(e.value) for n in needles), str(e.value)


# ----------------------------------------------------------------------------------------------------------
# The config: hydra/sweeper=grids and the command line's syntax


def test_grids_given_on_the_command_line_compose_and_expand() -> None:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = compose(
                "config",
                overrides=[
                    "hydra/sweeper=grids",
                    '+hydra.sweeper.params={demos: "1,2"}',
                    '+hydra.sweeper.grids={icl: {method: icl, order_seed: "null,1"}, '
                    'gd: {method: gd, method.lr: "1e-3,1e-4"}}',
                    "hydra.sweeper.max_batch_size=4",
                ],
                return_hydra_config=True,
            )
    finally:
        GlobalHydra.instance().clear()
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.icl_gd_sweeper._grids.GridsSweeper"
    assert sweeper.max_batch_size == 4
    assert expand(sweeper.params, sweeper.grids, []) == expand({"demos": "1,2"}, ICL_GD, [])


# ----------------------------------------------------------------------------------------------------------
# Real sweeps

PRESET = """\
# @package _global_
defaults:
  - override /hydra/sweeper: grids
hydra:
  sweeper:
    max_batch_size: 3
    params:
      demos: 1,2,4
    grids:
      icl: {method: icl, order_seed: "null,1"}
      gd: {method: gd, method.lr: "1e-3,1e-4"}
      floor_again: {method: icl, order_seed: 1}
"""


def run_grids(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """run.py -m on the smoke model with a preset `experiment=grids_smoke` from tmp_path/conf."""
    (tmp_path / "conf" / "experiment").mkdir(parents=True, exist_ok=True)
    (tmp_path / "conf" / "experiment" / "grids_smoke.yaml").write_text(PRESET)
    env = subprocess_env()
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return run_py(
        "-m",
        "--config-dir",
        str(tmp_path / "conf"),
        "debug=smoke",
        "logger=none",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *args,
        env=env,
        check=False,
        timeout=300,
    )


def test_a_preset_runs_the_union_of_its_grids_into_distinct_folders_and_compares_them(tmp_path: Path) -> None:
    # the command line's demos=1,2 narrows the preset's 1,2,4 in every grid
    proc = run_grids(tmp_path, "experiment=grids_smoke", "demos=1,2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Grids sweeper: 8 jobs (icl 4, gd 4, floor_again 2; 2 duplicate(s) dropped)" in out
    assert out.count("Launching 3 jobs locally") == 2 and out.count("Launching 2 jobs locally") == 1
    assert "#7 : " in out and "#8 : " not in out  # job indices run on across batches

    sweep = tmp_path / "sweep"
    jobs = {p.parent.name: p.parent for p in sweep.glob("*/status.json")}
    base = ["debug=smoke", "experiment=grids_smoke"]
    assert set(jobs) == {
        *(
            job_folder(*base, f"demos={d}", "method=icl", f"order_seed={o}")
            for d in (1, 2)
            for o in ("null", 1)
        ),
        *(
            job_folder(*base, f"demos={d}", f"method.lr={lr}", "method=gd")
            for d in (1, 2)
            for lr in ("0.001", "0.0001")
        ),
    }
    assert {d.name for d in sweep.iterdir() if (d / "status.json").exists()} == set(
        jobs
    )  # none for demos=4 nor a duplicate
    for name, folder in jobs.items():
        assert json.loads((folder / "status.json").read_text())["status"] == "done", name
        assert ("method.lr=" in name) == ("method=gd" in name)  # no ICL job has an lr
        # the launcher got the final per-job overrides: the grid's values, not the sweep strings
        overrides = (folder / ".hydra" / "overrides.yaml").read_text()
        assert "1,2" not in overrides and "null,1" not in overrides and "demos=" in overrides
    assert out.count("# Comparison of 8 jobs") == 1  # the end-of-multirun callback fired once, with every job
    comparison = (sweep / "comparison.md").read_text()
    assert "icl_vs_icl_order" in comparison and "icl_vs_gd" in comparison


@pytest.mark.parametrize(
    ("grids", "needles"),
    [
        (
            '+hydra.sweeper.grids={icl: {method: icl}, gd: "method=gd"}',
            ["hydra.sweeper.grids.gd must be a mapping", 'hydra.sweeper.grids.gd.<key>: "1,2,4"'],
        ),
        (
            "+hydra.sweeper.grids={gd: {method: gd, demos: [1, 2]}}",
            ['hydra.sweeper.grids.gd.demos: "1,2"'],
        ),
        # every job is composed before the first runs, even with one job per launch: gd would run first
        (
            '+hydra.sweeper.grids={gd: {method: gd}, icl: {method: icl, method.lr: "1e-3"}}',
            ["hydra.sweeper.grids.icl: the job method=icl method.lr=0.001", "Key 'lr' is not in struct"],
        ),
    ],
    ids=["not_a_mapping", "a_list", "uncomposable"],
)
def test_a_bad_grid_exits_with_its_name_before_any_job(
    tmp_path: Path, grids: str, needles: list[str]
) -> None:
    proc = run_grids(tmp_path, "hydra/sweeper=grids", "hydra.sweeper.max_batch_size=1", grids)
    assert proc.returncode != 0
    assert all(n in proc.stderr for n in needles), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    sweep = tmp_path / "sweep"
    assert not sweep.exists() or not [p for p in sweep.iterdir() if p.is_dir()]
