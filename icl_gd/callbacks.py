"""Hydra callback: compare the jobs of a sweep once all of them have run (with any launcher)."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class CompareOnMultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from icl_gd.compare import compare_sweep  # noqa: PLC0415

        try:
            compare_sweep(config.hydra.sweep.dir, logger_cfg=config.get("logger"))
        except Exception as e:  # the jobs' own files are the record; a failed comparison can be rerun
            log.error(
                "comparison of %s failed: %s (rerun: python -m icl_gd.compare %s)",
                config.hydra.sweep.dir,
                e,
                config.hydra.sweep.dir,
            )
