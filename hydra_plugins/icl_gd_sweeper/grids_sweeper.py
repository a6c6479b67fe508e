"""Hydra's entry point for the `grids` sweeper (hydra/sweeper=grids): registers its config; the code is in _grids.py.

Hydra re-executes every public module under hydra_plugins each time it scans for plugins, which would redefine
the classes here (an `except GridsConfigError` holding the first definition would stop matching). The scan skips
modules whose name starts with "_", so the classes live in _grids.py, defined once. See _grids.py for the rules.
"""

from hydra.core.config_store import ConfigStore

from hydra_plugins.icl_gd_sweeper._grids import (
    EXAMPLE,
    GRIDS,
    PARAMS,
    GridsConfigError,
    GridsSweeper,
    GridsSweeperConf,
    batches,
    dedup_by_grid,
    expand,
    expand_grids,
)

__all__ = [
    "EXAMPLE",
    "GRIDS",
    "GridsConfigError",
    "GridsSweeper",
    "GridsSweeperConf",
    "PARAMS",
    "batches",
    "dedup_by_grid",
    "expand",
    "expand_grids",
]

ConfigStore.instance().store(group="hydra/sweeper", name="grids", node=GridsSweeperConf, provider="icl_gd")
