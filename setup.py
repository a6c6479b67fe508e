"""setuptools hook: ship the top-level conf/ inside the wheel as the package data icl_gd/conf.

Everything else is in pyproject.toml. conf/ stays at the project root (where Hydra users look for it); an
installed wheel has no project root, so the build copies conf/ to icl_gd/conf (a package: Hydra's `pkg://`
search path imports it) and icl_gd.app falls back to `pkg://icl_gd.conf` when no source conf/ is beside it.
An editable install needs no copy: it reads conf/ from the checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"
TARGET = Path("icl_gd") / "conf"
LOCAL = "local"  # conf/local/*.yaml are this machine's paths (git-ignored): never shipped


def _skip_local(folder: str, names: list[str]) -> list[str]:
    """shutil.copytree's ignore: the machine-local yaml files of conf/local and caches."""
    if Path(folder).name == LOCAL:
        return [n for n in names if n.endswith(".yaml")]
    return [n for n in names if n == "__pycache__"]


class BuildPyWithConf(build_py):
    """build_py, then conf/ copied into the built package as icl_gd/conf (with an __init__.py)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or not CONF.is_dir():
            return
        target = Path(self.build_lib) / TARGET
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(CONF, target, ignore=_skip_local)
        (target / "__init__.py").write_text(
            '"""The configs of icl-gd (a copy of conf/), for pkg://icl_gd.conf."""\n'
        )


if __name__ == "__main__":  # how setuptools' build backend runs this file; tests import it
    setup(cmdclass={"build_py": BuildPyWithConf})
