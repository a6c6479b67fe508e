"""`WandbTracker`: a live wandb run behind the `Tracker` protocol, which never lets a W&B error fail the job.

Each call catches its own errors (logged as warnings); after `_MAX_FAILURES` of them the tracker stops calling
wandb but still finishes the run. Also the conversions W&B needs (table cells, flattened histogram values).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icl_gd.tracking.naming import DEFAULTS, artifact_name
from icl_gd.tracking.offline import _after_offline_run
from icl_gd.tracking.protocol import _ContextManager

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_MAX_FAILURES = 3


class WandbTracker(_ContextManager):
    """A live wandb run. Every call catches its own errors, so tracking can never fail the job."""

    def __init__(
        self, run: Any, output_dir: Path | None = None, knobs: Mapping[str, Any] | None = None
    ) -> None:
        self._run = run
        self._failures = 0
        self.mode: str | None = "offline" if run.offline else "online"
        self.run_dir: Path | None = _run_dir(run)
        self.run_id: str | None = getattr(run, "id", None)
        self.output_dir = output_dir
        knobs = {**DEFAULTS, **(knobs or {})}
        self._bins = int(knobs["hist_bins"])
        self._max_rows = int(knobs["max_table_rows"])

    @property
    def run(self) -> Any:
        """The underlying `wandb.Run` (None once finished or given up on), for what this class lacks."""
        return self._run

    def _call(self, what: str, fn, *args, **kwargs) -> None:
        if self._run is None or self._failures >= _MAX_FAILURES:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # W&B must never break a job
            self._failures += 1
            log.warning("W&B %s failed (%s: %s); the job goes on", what, type(e).__name__, e)
            if self._failures == _MAX_FAILURES:
                log.warning("W&B failed %d times: no more logging to W&B in this run", _MAX_FAILURES)

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        self._call("log", lambda: self._run.log(dict(data), step=step))

    def summary(self, data: dict[str, Any]) -> None:
        self._call("summary", lambda: self._run.summary.update(dict(data)))

    def log_table(self, key: str, df: pd.DataFrame) -> None:
        """A W&B Table of `df`: list and array cells stay lists (top-K tokens, probabilities); at most
        `logger.max_table_rows` rows (the rest are in the job's files, as a warning says)."""

        def go() -> None:
            import wandb

            frame = df
            if len(frame) > self._max_rows:
                log.warning(
                    "W&B table %r: %d rows, logging the first %d (logger.max_table_rows); the files hold all",
                    key,
                    len(frame),
                    self._max_rows,
                )
                frame = frame.head(self._max_rows)
            self._run.log({key: wandb.Table(dataframe=_table_frame(frame))})

        self._call(f"log_table({key!r})", go)

    def log_histogram(
        self, key: str, values: Sequence[float], bounds: tuple[float, float] | None = None
    ) -> None:
        """A histogram of the finite values; with `bounds`, `logger.hist_bins` fixed bins on them (so the
        histograms of every run line up, e.g. PROB_RANGE for probabilities)."""

        def go() -> None:
            import numpy as np
            import wandb

            finite = [float(v) for v in _flat(values) if math.isfinite(float(v))]  # np.histogram rejects NaN
            if not finite:
                log.debug("W&B histogram %r skipped: no finite values", key)
                return
            if bounds is None:
                hist = wandb.Histogram(finite)
            else:
                hist = wandb.Histogram(np_histogram=np.histogram(finite, bins=self._bins, range=bounds))
            self._run.log({key: hist})

        self._call(f"log_histogram({key!r})", go)

    def log_image(self, key: str, path: str | Path) -> None:
        def go() -> None:
            import wandb

            self._run.log({key: wandb.Image(str(path))})

        self._call(f"log_image({key!r})", go)

    def log_line_series(
        self,
        key: str,
        xs: Sequence[Sequence[float]],
        ys: Sequence[Sequence[float]],
        keys: Sequence[str],
        title: str,
        xname: str,
    ) -> None:
        """A W&B line plot (`wandb.plot.line_series`, redrawn by the dashboard): one line per `keys` entry.
        Its data is the Table `<key>_table` of the run's summary."""

        def go() -> None:
            import wandb

            xs_, ys_ = [list(map(float, x)) for x in xs], [list(map(float, y)) for y in ys]
            chart = wandb.plot.line_series(xs=xs_, ys=ys_, keys=list(keys), title=title, xname=xname)
            self._run.log({key: chart})

        self._call(f"log_line_series({key!r})", go)

    def log_artifact(self, path: str | Path | Sequence[str | Path], name: str, type: str) -> None:
        """One artifact of the file(s) or folder at `path`, referenced in place (nothing is copied)."""

        def go() -> None:
            import wandb

            paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
            art = wandb.Artifact(artifact_name(name), type=type)
            # "immutable": reference the job's own files instead of copying them into wandb's staging
            # folder (predictions with full distributions are large); the output folder is not rewritten.
            for p in paths:
                if p.is_dir():
                    art.add_dir(str(p), policy="immutable")
                else:
                    art.add_file(str(p), policy="immutable")
            self._run.log_artifact(art)

        self._call(f"log_artifact({name!r})", go)

    def use_artifact(self, name: str, type: str) -> None:
        """Declare that this run read the latest version of artifact `name` (lineage on the W&B server). wandb
        has no lineage offline (use_artifact raises there): an offline run names its inputs in its config."""
        if self.mode != "online":
            return
        self._call(
            f"use_artifact({name!r})",
            lambda: self._run.use_artifact(f"{artifact_name(name)}:latest", type=type),
        )

    def finish(self, exit_code: int = 0) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as e:
            log.warning("W&B finish failed (%s: %s); the job's own files are complete", type(e).__name__, e)
        if self.mode == "offline" and self.run_dir is not None:
            _after_offline_run(self.run_dir, self.output_dir)


def _run_dir(run: Any) -> Path | None:
    try:
        return Path(run.settings.sync_dir).resolve()
    except Exception:
        try:
            return Path(run.dir).resolve().parent
        except Exception:
            return None


def _flat(values: Any) -> list[Any]:
    if hasattr(values, "reshape") and hasattr(values, "tolist"):  # torch tensor or numpy array
        return list(values.reshape(-1).tolist())
    return list(values)


_SCALARS = (str, int, float, bool, type(None))


def _table_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose cells W&B tables accept: scalars kept, lists and arrays as lists (W&B list columns), numpy
    scalars as Python ones, anything else (dicts, bytes) as JSON text."""

    def cell(v: Any) -> Any:
        if isinstance(v, _SCALARS):
            return v
        if getattr(v, "ndim", None) == 0 and hasattr(v, "item"):  # numpy scalar, 0-d tensor
            return v.item()
        if hasattr(v, "tolist"):  # numpy array, tensor
            v = v.tolist()
        if isinstance(v, (list, tuple)) and all(isinstance(x, _SCALARS) for x in v):
            return list(v)
        return json.dumps(v, default=str)

    out = df.copy()
    out.columns = [str(c) for c in out.columns]
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(cell)
    return out
