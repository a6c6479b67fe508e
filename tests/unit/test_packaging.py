"""Packaging: the console script and `python -m icl_gd` point at the one Hydra app, the configs are found from a
checkout and from a wheel's package data, and every third-party package the code imports is declared."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from icl_gd import confdir
from tests.helpers.config import CONF, ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# import name -> distribution name, where they differ
DIST = {"hydra": "hydra-core", "yaml": "pyyaml", "huggingface_hub": "huggingface-hub"}
FIRST_PARTY = {"icl_gd", "hydra_plugins", "benchmarks", "tests"}
# imported inside a function, for users with a network only; the ImportError says how to install it
OPTIONAL = {"datasets"}
# import name -> the extra ([project.optional-dependencies]) that brings it, where it is not the extra's own name
BY_EXTRA = {
    "wandb_workspaces": "dashboard",
    "pydantic": "dashboard",  # wandb-workspaces' own dependency, imported beside it
    "submitit": "slurm",  # hydra-submitit-launcher's dependency, imported by the project's launchers
}
BOUND = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*[0-9]")


def _imports(folder: Path) -> set[str]:
    """Top-level module names imported anywhere under folder (absolute imports)."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def _declared() -> dict[str, str]:
    """Normalised distribution name -> requirement string, of [project] dependencies."""
    out = {}
    for req in PYPROJECT["project"]["dependencies"]:
        m = BOUND.match(req)
        assert m, f"dependency {req!r} has no lower bound (name>=version)"
        out[m.group(1).lower().replace("_", "-")] = req
    return out


def test_the_console_script_and_the_module_run_the_same_app() -> None:
    assert PYPROJECT["project"]["scripts"] == {"icl-gd": "icl_gd.app:main"}
    main_py = (ROOT / "icl_gd" / "__main__.py").read_text()
    run_py = (ROOT / "run.py").read_text()
    assert "from icl_gd.app import main" in main_py and "from icl_gd.app import main" in run_py


def test_every_imported_third_party_package_is_declared_with_a_lower_bound() -> None:
    imported = _imports(ROOT / "icl_gd") | _imports(ROOT / "hydra_plugins")
    third = {n for n in imported if n not in sys.stdlib_module_names and n not in FIRST_PARTY | OPTIONAL}
    declared = _declared()
    extras = PYPROJECT["project"]["optional-dependencies"]
    in_extras = {BOUND.match(r).group(1).lower() for reqs in extras.values() for r in reqs if BOUND.match(r)}
    missing = sorted(
        n
        for n in third
        if DIST.get(n, n).lower().replace("_", "-") not in declared
        and n.replace("_", "-") not in in_extras
        and BY_EXTRA.get(n) not in extras
    )
    assert missing == []
    assert {"numpy", "pyyaml", "safetensors", "tqdm"} <= set(declared)


def test_configs_come_from_the_checkout_when_it_has_them(tmp_path: Path) -> None:
    assert confdir.hydra_config_path() == str(CONF)
    assert confdir.config_file("config.yaml") == CONF / "config.yaml"
    # a tree without conf/config.yaml, as an installed wheel is: Hydra's package search path
    assert confdir.hydra_config_path(tmp_path) == "pkg://icl_gd.conf"


def test_the_build_ships_conf_without_machine_local_files() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        import setup  # noqa: PLC0415 -- the repository root's setup.py, which runs setup() only as __main__
    finally:
        sys.path.remove(str(ROOT))
    assert setup.CONF == CONF and Path("icl_gd", "conf") == setup.TARGET
    assert setup._skip_local(str(CONF / "local"), ["default.yaml", ".gitkeep"]) == ["default.yaml"]
    assert setup._skip_local(str(CONF / "model"), ["gpt2.yaml", "__pycache__"]) == ["__pycache__"]
    manifest = (ROOT / "MANIFEST.in").read_text()
    assert "graft conf" in manifest and "prune conf/local" in manifest
