"""Readable output folder names: a sweep is outputs/<experiment or "adhoc">/<date>_<time>, a job is named by the
keys that tell jobs apart (method, dataset, demos, seed, order seed, labels) plus a short hash of its other
overrides.

conf/config.yaml's `hydra.sweep.dir` and `hydra.sweep.subdir` call these through the resolvers `icl_gd_sweep` and
`icl_gd_jobname` (registered by `register`, which icl_gd.config calls). A job's name is a pure function of its
command-line overrides, as Hydra's own `override_dirname` is, so rerunning a sweep's command into the same
`hydra.sweep.dir` lands every job in its folder again and the runner skips the ones already done (resume by
folder). Hydra's names (every override, in one folder level) stay available as
`hydra.sweep.subdir='${icl_gd_dirname:${hydra.job.override_dirname}}'`, for folders made before this naming.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from omegaconf import OmegaConf

ADHOC = "adhoc"  # the sweep folder's name part when no experiment=... preset ran
HASH_DIGITS = 6  # hex digits of the hash of a job's other overrides
PART_SEP = ","
HASH_SEP = "~"
NAMED = (  # (override key, how it shows in the name): the keys that tell a sweep's jobs apart, in this order
    ("method", "{}"),
    ("method.tag", "{}"),
    ("dataset", "{}"),
    ("demos", "N={}"),
    ("seed", "seed={}"),
    ("order_seed", "order={}"),
    ("demo_labels", "{}"),
)
OMITTED = {"order_seed": "null", "demo_labels": "original"}  # the defaults: said by their absence
UNSAFE = str.maketrans({"/": "_", "\\": "_", " ": "_"})  # one path component, whatever the values hold


def sweep_name(experiment: Any) -> str:
    """The sweep folder's first part: the experiment=... preset, or "adhoc" without one."""
    return ADHOC if experiment in (None, "", "null", "None") else str(experiment).translate(UNSAFE)


def _split(override: str) -> tuple[str, str]:
    key, _, value = str(override).partition("=")
    return key.lstrip("+~"), value


def job_name(overrides: Iterable[str], exclude: Sequence[str] = ()) -> str:
    """A job folder's name from its task overrides ("method=gd", "demos=4", ...): the NAMED keys' values in their
    order, then "~" and a hash of every other override (sorted, so the order typed does not matter), when there is
    any. Keys in `exclude` (where a job writes, rerun, ...) are left out, as from Hydra's override_dirname.

    >>> job_name(["demos=4", "method=gd", "method.lr=1e-3", "seed=0"])
    'gd,N=4,seed=0~e7e345'
    """
    excluded = set(exclude)
    values: dict[str, str] = {}
    rest: list[str] = []
    named = dict(NAMED)
    for override in overrides:
        key, value = _split(override)
        if key in excluded:
            continue
        if key in named and PART_SEP not in value:
            if OMITTED.get(key) != value:
                values[key] = value
        else:
            rest.append(f"{key}={value}")
    parts = [fmt.format(values[key]).translate(UNSAFE) for key, fmt in NAMED if key in values]
    name = PART_SEP.join(parts)
    if rest:
        digest = hashlib.sha256("\n".join(sorted(rest)).encode()).hexdigest()[:HASH_DIGITS]
        name = f"{name}{HASH_SEP}{digest}" if name else digest
    return name or "default"


def _job_name_resolver(overrides: Any, exclude: Any = ()) -> str:
    """The resolver's form: OmegaConf list nodes in, a name out."""
    to_list = lambda x: list(OmegaConf.to_container(x)) if OmegaConf.is_list(x) else list(x or ())  # noqa: E731
    return job_name([str(o) for o in to_list(overrides)], [str(k) for k in to_list(exclude)])


def register() -> None:
    """Register `icl_gd_sweep` and `icl_gd_jobname` (once per process)."""
    if not OmegaConf.has_resolver("icl_gd_sweep"):
        OmegaConf.register_new_resolver("icl_gd_sweep", sweep_name)
    if not OmegaConf.has_resolver("icl_gd_jobname"):
        OmegaConf.register_new_resolver("icl_gd_jobname", _job_name_resolver)
