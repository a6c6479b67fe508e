"""Where the data lives: `data_dir`, else $ICL_GD_DATA, else ../shared/data beside the project root."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATA_ENV = "ICL_GD_DATA"


def resolve_data_dir(cfg: DictConfig) -> Path:
    """The data folder: cfg.data_dir, else $ICL_GD_DATA, else ../shared/data beside the project root."""
    raw = cfg.get("data_dir") or os.environ.get(DATA_ENV)
    return Path(raw).expanduser() if raw else (PROJECT_ROOT.parent / "shared" / "data").resolve()
