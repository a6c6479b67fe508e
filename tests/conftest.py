"""Shared fixtures: configs composed the way the command line composes them, each job writing into tmp_path, and
the tiny random model loaded once per session. Plain helpers (paths, compose_config, the subprocess runner) live
in tests/helpers/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from icl_gd.models import load_model
from tests.helpers.config import compose_config


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, no W&B uploads, W&B's own folders inside tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    from icl_gd import tracking  # noqa: PLC0415

    tracking.reset_process_state()  # an earlier test's offline fallback or sync hints are not this test's


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


@pytest.fixture(scope="session")
def tiny_lm() -> Any:
    """The tiny random Llama of model=tiny_random (a LoadedModel), loaded once per session and shared by every test
    that asks for it. The object is held here, so a test that clears icl_gd.models' per-process cache does not
    unload it. A test that trains it or adds an adapter must put it back (finetune.restoring, LoRA's unload):
    _tiny_lm_intact checks that after every test that uses it."""
    return load_model(compose_config(["model=tiny_random", "output_dir=/tmp/x"]).model)


@pytest.fixture(autouse=True)
def _tiny_lm_intact(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that uses tiny_lm (itself or through another fixture), its parameters and buffers are those it
    had before, bit for bit, and no adapter is left in it."""
    if "tiny_lm" not in request.fixturenames:
        yield
        return
    model = request.getfixturevalue("tiny_lm").model
    before = {name: t.detach().clone() for name, t in model.state_dict().items()}
    yield
    after = model.state_dict()
    assert after.keys() == before.keys(), (
        f"the test left other tensors in tiny_lm: {sorted(after.keys() ^ before.keys())[:5]}"
    )
    changed = [name for name, t in after.items() if not torch.equal(t, before[name])]
    assert not changed, (
        f"the test left tiny_lm changed (restore it, e.g. with finetune.restoring): {changed[:5]}"
    )
