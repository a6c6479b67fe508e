"""Shared fixtures: configs composed the way the command line composes them, each job writing into tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, no W&B uploads, W&B's own folders inside tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))


def compose_config(overrides: list[str]) -> DictConfig:
    """compose() with the command line's override syntax (typos fail as they would there)."""
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../conf"):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """make_cfg("method=gd", ...) -> a config whose output_dir is a fresh folder under tmp_path."""
    counter = iter(range(10_000))

    def make(*overrides: str, out: Path | None = None) -> DictConfig:
        folder = out or tmp_path / f"job{next(counter)}"
        return compose_config([f"output_dir={folder}", "logger=none", *overrides])

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture
def smoke(make_cfg) -> Callable[..., DictConfig]:
    """A config on tiny_random with few queries: the whole pipeline in seconds."""

    def make(*overrides: str, out: Path | None = None) -> DictConfig:
        return make_cfg("debug=smoke", *overrides, out=out)

    return make


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("WANDB_API_KEY", None)
    return env
