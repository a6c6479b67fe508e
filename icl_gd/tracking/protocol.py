"""The `Tracker` protocol the runner and sweep steps log through, and `NullTracker`, its no-op stand-in.

Kept free of wandb so code that only types against a tracker (or logs nothing) never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd


@runtime_checkable
class Tracker(Protocol):
    """What the runner and the sweep steps log through; `make_tracker` returns one."""

    run_dir: Path | None  # the wandb run folder (offline-run-... / run-...), None when nothing is written

    def log(self, data: dict[str, Any], step: int | None = None) -> None: ...
    def summary(self, data: dict[str, Any]) -> None: ...
    def log_table(self, key: str, df: pd.DataFrame) -> None: ...
    def log_histogram(
        self, key: str, values: Sequence[float], bounds: tuple[float, float] | None = None
    ) -> None: ...
    def log_image(self, key: str, path: str | Path) -> None: ...
    def log_line_series(
        self,
        key: str,
        xs: Sequence[Sequence[float]],
        ys: Sequence[Sequence[float]],
        keys: Sequence[str],
        title: str,
        xname: str,
    ) -> None: ...
    def log_artifact(self, path: str | Path | Sequence[str | Path], name: str, type: str) -> None: ...
    def use_artifact(self, name: str, type: str) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


class _ContextManager:
    """`with make_tracker(...) as t:` finishes the run, with exit code 1 when the block raised."""

    def finish(self, exit_code: int = 0) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


class NullTracker(_ContextManager):
    """`logger=none` (or W&B disabled or broken): every call is a no-op and no file is written."""

    run_dir: Path | None = None
    mode: str | None = None
    run_id: str | None = None

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        pass

    def summary(self, data: dict[str, Any]) -> None:
        pass

    def log_table(self, key: str, df: pd.DataFrame) -> None:
        pass

    def log_histogram(
        self, key: str, values: Sequence[float], bounds: tuple[float, float] | None = None
    ) -> None:
        pass

    def log_image(self, key: str, path: str | Path) -> None:
        pass

    def log_line_series(
        self,
        key: str,
        xs: Sequence[Sequence[float]],
        ys: Sequence[Sequence[float]],
        keys: Sequence[str],
        title: str,
        xname: str,
    ) -> None:
        pass

    def log_artifact(self, path: str | Path | Sequence[str | Path], name: str, type: str) -> None:
        pass

    def use_artifact(self, name: str, type: str) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass
