"""Torch threads per job: a joblib sweep's parallel jobs share the cores instead of each taking all of them."""

from __future__ import annotations

import pytest
import torch

from icl_gd import threads
from icl_gd.errors import ConfigError
from tests.helpers.config import compose_config

JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}
BASIC = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}


@pytest.mark.parametrize(
    ("launcher", "cores", "expected"),
    [
        (None, 16, 1),
        (BASIC, 16, 1),
        (JOBLIB, 16, 16),  # -1: one job per core
        ({**JOBLIB, "n_jobs": -2}, 16, 15),  # joblib's count: all cores but one
        ({**JOBLIB, "n_jobs": 4}, 16, 4),
        ({**JOBLIB, "n_jobs": -32}, 16, 1),
    ],
)
def test_concurrent_jobs_counts_as_joblib_does(launcher: dict | None, cores: int, expected: int) -> None:
    assert threads.concurrent_jobs(launcher, cores) == expected


def test_auto_shares_the_cores_among_parallel_jobs_and_leaves_a_lone_job_alone() -> None:
    assert threads.job_threads("auto", 16, 4) == 4
    assert threads.job_threads("auto", 2, 2) == 1
    assert threads.job_threads("auto", 2, 8) == 1  # never zero
    assert threads.job_threads("auto", 16, 1) is None  # torch's default
    assert threads.job_threads(3, 16, 4) == 3  # an integer wins


def test_apply_sets_torchs_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setenv(threads.OMP_ENV, "1")
    assert threads.apply("auto", {**JOBLIB, "n_jobs": 4}) is None  # the user's OMP_NUM_THREADS stands
    monkeypatch.delenv(threads.OMP_ENV)
    try:
        assert threads.apply("auto", {**JOBLIB, "n_jobs": 4}) == 2
        assert torch.get_num_threads() == 2
        assert threads.apply("auto", BASIC) is None and torch.get_num_threads() == 2  # untouched
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", ["0", "-1", "many", "1.5"])
def test_a_bad_threads_value_is_refused_with_the_fix(bad: str) -> None:
    from icl_gd.validation import validate

    with pytest.raises(ConfigError, match=r"threads=.* must be auto .* or an integer >= 1"):
        validate(compose_config([f"threads={bad}"]))


def test_threads_is_not_part_of_a_jobs_identity() -> None:
    from icl_gd.config import config_hash

    fixed = ["output_dir=/tmp/job"]
    assert config_hash(compose_config([*fixed, "threads=1"])) == config_hash(compose_config(fixed))
