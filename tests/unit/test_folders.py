"""Folder names: outputs/<experiment or adhoc>/<date>_<time> for a sweep, the distinguishing keys plus a short
hash of the other overrides for a job; one path component, stable per job, short for a preset's jobs."""

from __future__ import annotations

import doctest

from icl_gd import folders
from icl_gd.folders import job_name, sweep_name

PRESET_LIMIT = 64  # characters of a preset's job folder name (the UX acceptance check)
EXCLUDE = ["rerun", "logger", "hydra.sweep.dir"]


def test_a_job_is_named_by_its_distinguishing_keys_and_a_hash_of_the_rest() -> None:
    name = job_name(["seed=0", "method=gd", "demos=4", "dataset=sst2", "method.lr=1e-3", "model=tiny_random"])
    assert name.startswith("gd,sst2,N=4,seed=0~") and len(name.split("~")[1]) == folders.HASH_DIGITS
    assert job_name(["method=icl", "order_seed=1", "demo_labels=shuffled"]) == "icl,order=1,shuffled"
    assert job_name(["method=icl", "order_seed=null", "demo_labels=original"]) == "icl"  # defaults: unsaid
    assert job_name([]) == "default"


def test_the_name_is_stable_and_tells_jobs_apart() -> None:
    a = ["method=gd", "demos=4", "method.lr=1e-3", "model=tiny_random"]
    assert job_name(a) == job_name(list(reversed(a)))  # the order typed does not matter
    assert job_name(a) != job_name([*a[:2], "method.lr=1e-4", "model=tiny_random"])
    assert job_name(a) == job_name(
        [*a, "rerun=true", "logger=none"], EXCLUDE
    )  # where it writes is not who it is


def test_a_path_value_never_nests_folders() -> None:
    name = job_name(["method=icl", "dataset.path=/data/x/y.jsonl", "model.path=/data/llama-7b"])
    assert "/" not in name and name.startswith("icl~")
    assert "/" not in job_name(["dataset=a/b"])


def test_a_presets_job_names_stay_short() -> None:
    longest = job_name(
        [
            "experiment=shen_main",
            "model=tiny_random",
            "eval.n_queries=4",
            "dataset=country_currency",
            "demos=16",
            "method=gd_search",
            "method.params=layer_v",
            "method.layer=-1",
            "method.lr=1e-3",
            "order_seed=null",
            "seed=10",
            "demo_labels=shuffled",
        ]
    )
    assert len(longest) < PRESET_LIMIT, longest


def test_a_sweep_is_named_by_its_experiment() -> None:
    assert sweep_name("shen_main") == "shen_main" and sweep_name(None) == sweep_name("null") == folders.ADHOC


def test_the_docstring_example_holds() -> None:
    assert doctest.testmod(folders).failed == 0
