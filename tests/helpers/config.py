"""Where the project and the shared data are, configs composed as the command line composes them, and the
environment a subprocess of the test suite runs in. Plain functions: the fixtures built on them live in conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[2]  # tests/helpers/config.py -> the repository root
CONF = ROOT / "conf"
DATA = ROOT.parent / "shared" / "data"


def compose_config(overrides: list[str]) -> DictConfig:
    """compose() with the command line's override syntax (typos fail as they would there)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=overrides)


def subprocess_env() -> dict[str, str]:
    """os.environ for a child process: W&B offline and without a key, the hub offline, output unbuffered."""
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("WANDB_API_KEY", None)
    return env


def job_folder(*overrides: str) -> str:
    """The folder name a sweep job with these task overrides gets (conf/config.yaml's hydra.sweep.subdir)."""
    from omegaconf import OmegaConf  # noqa: PLC0415

    from icl_gd.folders import job_name  # noqa: PLC0415

    exclude = OmegaConf.load(CONF / "config.yaml").hydra.job.config.override_dirname.exclude_keys
    return job_name(list(overrides), [str(k) for k in exclude])
