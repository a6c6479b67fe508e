"""Progress: tqdm bars on a terminal, a log line every LOG_INTERVAL seconds (and a summary) in a log file,
nothing with progress=false; the fine-tuning's per-step callback still called through the bar."""

from __future__ import annotations

import logging
import time

import pytest
from tqdm.std import tqdm

from icl_gd import progress as P


@pytest.fixture(autouse=True)
def restore():
    yield
    P.configure(True)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == P.__name__]


def test_a_log_file_gets_a_summary_line_of_the_training_with_its_loss(caplog) -> None:
    P.configure(True, interactive=False)
    seen = []
    update = P.step_progress(seen.append, total=3)
    with caplog.at_level(logging.INFO, logger=P.__name__):
        for step, loss in enumerate([2.0, 1.5, 1.25]):
            update({"step": step, "epoch": 0, "train_loss": loss})
    assert [r["step"] for r in seen] == [0, 1, 2]  # the loop's own callback still gets every row
    (line,) = lines(caplog)  # a short loop: the end line only
    assert line.startswith("train: 100% 3/3 [") and "step/s" in line and line.endswith("loss=1.25]")


def test_a_long_loop_logs_a_line_every_interval_and_a_short_one_nothing(caplog, monkeypatch) -> None:
    P.configure(True, interactive=False)
    with caplog.at_level(logging.INFO, logger=P.__name__):
        list(P.bar(range(4), desc="queries", unit="query"))
        assert lines(caplog) == []  # under LOG_INTERVAL: silent
        monkeypatch.setattr(P, "LOG_INTERVAL", 0.0)
        list(P.bar(range(4), desc="queries", unit="query"))
    got = lines(caplog)
    assert [g.split(" [")[0] for g in got] == [
        "queries:  25% 1/4",
        "queries:  50% 2/4",
        "queries:  75% 3/4",
        "queries: 100% 4/4",
    ]


def test_progress_false_shows_nothing_and_leaves_the_callback_as_it_is(caplog) -> None:
    P.configure(False)
    callback = print
    assert P.step_progress(callback, total=10) is callback and P.step_progress(None, total=10) is None
    with caplog.at_level(logging.INFO, logger=P.__name__), P.waiting("model=m: loading"):
        bar = P.bar(range(3), desc="queries")
        assert list(bar) == [0, 1, 2] and not isinstance(bar, tqdm)
    assert lines(caplog) == []


def test_a_terminal_gets_a_tqdm_bar() -> None:
    P.configure(True, interactive=True)
    bar = P.bar(total=2, desc="queries")
    assert isinstance(bar, tqdm) and bar.leave is False
    bar.close()


def test_a_silent_call_gets_a_still_running_line_every_interval(caplog, monkeypatch) -> None:
    P.configure(True, interactive=False)
    interval = 0.02
    monkeypatch.setattr(P, "LOG_INTERVAL", interval)
    with caplog.at_level(logging.INFO, logger=P.__name__), P.waiting("model=m: dequantising x.gguf"):
        time.sleep(interval * 5)
    got = lines(caplog)
    assert len(got) >= 2 and all(g.startswith("model=m: dequantising x.gguf: still running, ") for g in got)


def test_a_sweep_job_is_numbered_from_one_of_the_sweepers_total(monkeypatch) -> None:
    monkeypatch.setenv(P.SWEEP_JOBS_ENV, "9")
    assert P.job_tag(2) == "job 3/9" and P.job_tag(None) == "job"
    monkeypatch.delenv(P.SWEEP_JOBS_ENV)
    assert P.job_tag(0) == "job 1" and P.job_tag(0, 4) == "job 1/4"


def test_a_log_file_gets_no_dequantisation_bar_from_transformers() -> None:
    gguf = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    original = gguf.tqdm
    P.configure(True, interactive=False)
    with P.waiting("model=m: dequantising"):
        assert gguf.tqdm(range(2)).disable  # the bar transformers would draw, off
    assert gguf.tqdm is original
    P.configure(True, interactive=True)
    with P.waiting("model=m: dequantising"):
        assert gguf.tqdm is original  # a terminal keeps it
