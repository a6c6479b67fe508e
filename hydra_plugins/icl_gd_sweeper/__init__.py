"""Hydra sweeper plugin `grids` (hydra/sweeper=grids): a sweep that is the union of named cartesian grids.

It lives under the `hydra_plugins` namespace package because Hydra only accepts (and only scans for) plugins
there; see grids_sweeper.py for the config and the rules.
"""

__version__ = "0.1.0"
