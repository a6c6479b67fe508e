"""Progress of the long steps (model load and dequantisation, fine-tuning steps, query batches, a sweep's jobs).

One switch, the top-level config key `progress` (true by default; the app calls `configure`). Where it goes:

- an interactive terminal (stderr is a TTY): tqdm bars on stderr, gone when done (`leave=False`), so the log
  keeps only its own lines; transformers' own bars (weight loading, GGUF dequantisation) stay on;
- a non-interactive log (a file, a pipe, a SLURM log): no carriage-return bars, but a log line (logger
  `icl_gd.progress`) at most every LOG_INTERVAL seconds, in tqdm's format ("train: 40/80 [00:02<00:02,
  19.5step/s, loss=1.23]"), and one at the end of a loop that took that long or asked for it (`summary=True`:
  the fine-tuning's one line per job); a call that cannot report itself says it is still running after
  LOG_INTERVAL seconds, then at doubling intervals; transformers' bars are off;
- `progress=false`: nothing, transformers' bars off too.

`bar` makes one (an iterable wrapper and `update` / `set_postfix` / `close`, as tqdm); `step_progress` wraps a
fine-tuning loop's per-step callback; `waiting` reports a call that cannot report itself (a model load).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.std import tqdm as _tqdm

log = logging.getLogger(__name__)

SWEEP_JOBS_ENV = "ICL_GD_SWEEP_JOBS"  # how many jobs the running sweep has (the grids sweeper sets it)
LOG_INTERVAL = 5.0  # seconds between two progress lines of a non-interactive log
# the longest wait between two "still running" lines of a call that cannot report itself
WAIT_MAX_INTERVAL = 60.0
BAR_INTERVAL = 0.2  # seconds between two redraws of an interactive bar
LOSS_DIGITS = 4  # significant digits of the loss in a fine-tuning bar
_STATE = {"enabled": True, "interactive": None}


def configure(enabled: bool, interactive: bool | None = None) -> None:
    """Turn progress on or off for this process (the `progress` config key); interactive: force the bar (True)
    or the log lines (False); None = bars when stderr is a terminal. Sets transformers' own bars to match."""
    _STATE["enabled"] = bool(enabled)
    _STATE["interactive"] = interactive
    with contextlib.suppress(ImportError):  # transformers is a dependency; a stripped test env may lack it
        from transformers.utils import logging as hf_logging  # noqa: PLC0415

        if enabled and is_interactive():
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()


def enabled() -> bool:
    return bool(_STATE["enabled"])


def is_interactive() -> bool:
    """Bars (a terminal) or log lines (anything else)."""
    forced = _STATE["interactive"]
    if forced is not None:
        return bool(forced)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class _Null:
    """A progress that shows nothing (progress=false)."""

    def __init__(self, iterable: Iterable | None = None) -> None:
        self.iterable = iterable
        self.n = 0

    def __iter__(self) -> Iterator:
        yield from self.iterable or ()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **_: Any) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Lines(_Null):
    """A progress written as log lines, at most one every LOG_INTERVAL seconds, in tqdm's format."""

    def __init__(
        self, iterable: Iterable | None, total: int | None, desc: str, unit: str, summary: bool
    ) -> None:
        super().__init__(iterable)
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.summary = total, desc, unit, summary
        self.start = self.last = time.monotonic()
        self.postfix: dict[str, Any] = {}
        self.closed = False

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        postfix = ", ".join(f"{k}={v}" for k, v in self.postfix.items()) or None
        return _tqdm.format_meter(
            self.n, self.total, elapsed, prefix=self.desc, unit=self.unit, postfix=postfix, ncols=0
        )

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= LOG_INTERVAL and not (self.total is not None and self.n >= self.total):
            self.last = now
            log.info("%s", self.line())

    def set_postfix(self, **postfix: Any) -> None:
        self.postfix.update(postfix)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.summary or time.monotonic() - self.start >= LOG_INTERVAL:
            log.info("%s", self.line())


def bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str = "it",
    summary: bool = False,
) -> Any:
    """A progress over `iterable` (or `total` updates): a tqdm bar, log lines or nothing (module docstring).

    summary: in a non-interactive log, a line at the end however short the loop was (else only after
    LOG_INTERVAL seconds)."""
    if not enabled():
        return _Null(iterable)
    if not is_interactive():
        return _Lines(iterable, total, desc, unit, summary)
    return _auto_tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=False,
        mininterval=BAR_INTERVAL,
        dynamic_ncols=True,
        file=sys.stderr,
    )


def step_progress(
    on_step: Callable[[dict[str, float]], None] | None, total: int, desc: str = "train"
) -> Callable[[dict[str, float]], None] | None:
    """Wrap a fine-tuning loop's per-step callback (rows {step, epoch, train_loss}): a bar of `total` optimizer
    steps with the last loss in it, closed at the last step; the callback is still called. progress=false:
    the callback as it is."""
    if not enabled() or total <= 0:
        return on_step
    progress = bar(total=total, desc=desc, unit="step", summary=True)

    def update(row: dict[str, float]) -> None:
        progress.set_postfix(loss=f"{row['train_loss']:.{LOSS_DIGITS}g}")
        progress.update(1)
        if progress.n >= total:
            progress.close()
        if on_step is not None:
            on_step(row)

    return update


@contextlib.contextmanager
def _third_party_bars_off() -> Iterator[None]:
    """transformers' GGUF dequantisation bar (its own tqdm, which its progress-bar switch does not reach) off for
    the duration: in a log file it is a carriage-return bar of hundreds of updates."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf  # noqa: PLC0415
    except ImportError:  # no transformers, or one without GGUF support: nothing to silence
        yield
        return
    original = gguf.tqdm
    gguf.tqdm = functools.partial(_auto_tqdm, disable=True)
    try:
        yield
    finally:
        gguf.tqdm = original


@contextlib.contextmanager
def waiting(what: str) -> Iterator[None]:
    """Report a call that cannot report itself (a model load, a dequantisation): in a non-interactive log a line
    "<what>: still running, 10 s" after LOG_INTERVAL seconds, then at doubling intervals up to WAIT_MAX_INTERVAL,
    with transformers' own bars off; interactively its own bars show (transformers'), so nothing is added;
    progress=false: nothing (transformers' bars off)."""
    if enabled() and is_interactive():
        yield
        return
    if not enabled():
        with _third_party_bars_off():
            yield
        return
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        interval = LOG_INTERVAL
        while not done.wait(interval):
            log.info("%s: still running, %.0f s", what, time.monotonic() - start)
            interval = min(interval * 2, WAIT_MAX_INTERVAL)

    thread = threading.Thread(target=beat, name="icl_gd-progress", daemon=True)
    thread.start()
    try:
        with _third_party_bars_off():
            yield
    finally:
        done.set()
        thread.join()


def job_tag(num: int | None, total: int | str | None = None) -> str:
    """A sweep job's place in its sweep, 1-based: "job 3/9" ("job 3" when the total is not known), "job"
    outside a sweep; total None = the sweeper's SWEEP_JOBS_ENV."""
    if num is None:
        return "job"
    total = os.environ.get(SWEEP_JOBS_ENV) if total is None else total
    return f"job {num + 1}/{total}" if total else f"job {num + 1}"
