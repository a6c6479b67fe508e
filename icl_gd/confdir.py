"""Where the Hydra configs are: conf/ of a source checkout, else the copy an installed wheel carries.

A leaf module (no Hydra, no torch): the app (icl_gd.app) composes from `hydra_config_path()`, and code that
reads a config file directly (the sweep's default statistics settings) takes its path from `config_file()`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

HYDRA_VERSION = "1.3"  # version_base of the app and of compose (show_config)
PKG_PREFIX = "pkg://"  # hydra_config_path() of an installed wheel
CONFIG_NAME = "config"  # conf/config.yaml, the primary config
CONF_PACKAGE = "icl_gd.conf"  # where a wheel carries conf/ (setup.py's build_py copies it there)
SOURCE_CONF = Path(__file__).resolve().parent.parent / "conf"  # conf/ at the top of a source checkout


def _in_source(source: Path) -> bool:
    return (source / f"{CONFIG_NAME}.yaml").is_file()


def hydra_config_path(source: Path = SOURCE_CONF) -> str:
    """Hydra's config_path: the source checkout's conf/ when it is there, else `pkg://icl_gd.conf`."""
    return str(source) if _in_source(source) else f"{PKG_PREFIX}{CONF_PACKAGE}"


def config_file(name: str, source: Path = SOURCE_CONF) -> Path:
    """A file under conf/ (e.g. "config.yaml"), from the source checkout or the installed package data."""
    if _in_source(source):
        return source / name
    return Path(str(resources.files(CONF_PACKAGE).joinpath(name)))
