"""The same seed on CPU gives byte-identical job files: in one process (with the model cached or loaded afresh, and
after other jobs changed and restored its weights) and through the command line. tests/test_runner.py checks gd
twice in a row; this covers icl, lora and zeroshot, the order of jobs in a sweep, and run.py."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from icl_gd.models import clear_cache
from icl_gd.runner import run
from tests.helpers.cli import run_py

FILES = ("metrics.json", "demos.jsonl")


def assert_identical(a: Path, b: Path) -> None:
    for f in FILES:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    pa, pb = pd.read_parquet(a / "predictions.parquet"), pd.read_parquet(b / "predictions.parquet")
    assert pa.equals(pb)  # top-K ids and probabilities, label probabilities, the float16 full distributions
    assert (a / "train_curve.csv").exists() == (b / "train_curve.csv").exists()
    if (a / "train_curve.csv").exists():
        assert (a / "train_curve.csv").read_bytes() == (b / "train_curve.csv").read_bytes()


@pytest.mark.parametrize("method", ["icl", "lora", "zeroshot"])
def test_same_seed_twice_gives_identical_files(smoke, tmp_path: Path, method: str) -> None:
    args = (f"method={method}", "seed=3")
    run(smoke(*args, out=tmp_path / "warm1"))
    run(smoke(*args, out=tmp_path / "warm2"))  # the model from the per-process cache
    clear_cache()
    run(smoke(*args, out=tmp_path / "fresh"))  # the model loaded again
    assert_identical(tmp_path / "warm1", tmp_path / "warm2")
    assert_identical(tmp_path / "warm1", tmp_path / "fresh")


def test_a_job_does_not_depend_on_the_jobs_before_it(smoke, tmp_path: Path) -> None:
    """A sweep runs many jobs in one process on one cached model, in an order the launcher picks (and a resumed
    sweep runs only some of them): what a job writes must not depend on the jobs before it."""
    clear_cache()
    for name, method in [
        ("icl1", "icl"),
        ("lora1", "lora"),
        ("gd", "gd"),
        ("lora2", "lora"),
        ("icl2", "icl"),
    ]:
        run(smoke(f"method={method}", out=tmp_path / name))
    assert_identical(tmp_path / "icl1", tmp_path / "icl2")  # gd and lora restored the weights
    assert_identical(
        tmp_path / "lora1", tmp_path / "lora2"
    )  # the adapter's random init follows the seed alone


def test_another_seed_gives_other_demos_and_queries(smoke, tmp_path: Path) -> None:
    """The control: identical files above are not identical because the seed is ignored."""
    run(smoke("seed=0", out=tmp_path / "s0"))
    run(smoke("seed=1", out=tmp_path / "s1"))
    assert (tmp_path / "s0/demos.jsonl").read_text() != (tmp_path / "s1/demos.jsonl").read_text()
    q0, q1 = (pd.read_parquet(tmp_path / s / "predictions.parquet").query_id.tolist() for s in ("s0", "s1"))
    assert q0 != q1


@pytest.mark.slow
def test_the_command_line_twice_gives_identical_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        run_py("debug=smoke", "method=lora", "seed=3", f"hydra.run.dir={tmp_path / name}", timeout=600)
    assert_identical(tmp_path / "a", tmp_path / "b")
