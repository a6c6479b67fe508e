"""The `grids` sweeper: a sweep that is the union of named cartesian grids, not one grid.

Hydra's basic sweeper runs one cartesian product of the command line's sweeps. A paper's table is often a union
(ICL with two orders; GD over learning rates; GD of one layer), and one product would cross ICL with every lr.
Here each named grid is expanded with Hydra's own override parser and the jobs of all grids run as one sweep:

    defaults:
      - override /hydra/sweeper: grids
    hydra:
      sweeper:
        params:                       # shared by every grid, as in the basic sweeper
          dataset: agnews,cb,sst2,rte
          demos: 1,2,4,8
        grids:                        # name -> {override key: sweep string in Hydra's override grammar}
          icl: {method: icl, order_seed: "null,1"}
          gd: {method: gd, method.lr: "1e-3,5e-3,1e-4,5e-4"}

Rules. A job's overrides are params, then one grid's keys, then the command line's, a key keeping the position
where it first appears; for the same key (its `+`/`++`/`~` prefix aside) the grid beats params and the command
line beats both, so `dataset=sst2` on the command line narrows every grid to sst2. Jobs are ordered by grid as
written, then in the cartesian order of the basic sweeper (the first key varies slowest); a job whose overrides
(in any order) equal an earlier job's runs once. With no grids it is the basic sweeper over params + command line.
Every job is composed (load_sweep_config) before the first one is launched, and the jobs go to whatever launcher
is configured, in batches of max_batch_size, so launchers and the multirun callbacks work unchanged.
"""

import importlib
import itertools
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException, OverrideParseException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

from icl_gd.progress import SWEEP_JOBS_ENV

log = logging.getLogger(__name__)

PARAMS = "hydra.sweeper.params"
GRIDS = "hydra.sweeper.grids"
EXAMPLE = '"1,2,4" (or "range(0,10)", "choice(a,b)", a single value)'


@dataclass
class GridsSweeperConf:
    """hydra/sweeper=grids. Values are checked by the sweeper, not typed here, so a bad one gets a message with the fix.

    params and grids default to {} (not None, as the basic sweeper's params): OmegaConf cannot merge a mapping into
    a None-valued typed dict, so with None `+hydra.sweeper.params={demos: "1,2"}` fails on the command line.
    """

    _target_: str = (
        "hydra_plugins.icl_gd_sweeper._grids.GridsSweeper"  # its defining module: Hydra registers it there
    )
    max_batch_size: int | None = None  # jobs per launcher.launch() call; null = all at once
    check: str | None = "icl_gd.validation.check_sweep_job"  # f(job config) raising on a bad job; null = none
    params: dict[str, Any] | None = field(default_factory=dict)  # key -> sweep string, shared by every grid
    grids: dict[str, Any] = field(default_factory=dict)  # name -> {key -> sweep string}


class GridsConfigError(CompactHydraException):
    """A malformed hydra.sweeper.params or grids entry (Hydra prints a compact exception without a traceback)."""


def _scalar_str(value: Any, where: str) -> str:
    """A config value as the text of an override's value; only strings, numbers, booleans and null are allowed."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "null"
    hint = f'"{",".join(map(str, value))}"' if isinstance(value, list | tuple) else EXAMPLE
    raise GridsConfigError(
        f"{where}: expected a sweep string or a single value, got {type(value).__name__} {value!r}. "
        f"Write it as {where}: {hint}"
    )


def _overrides(
    entries: Mapping[str, Any] | None, where: str, parser: OverridesParser
) -> list[tuple[str, Override]]:
    """Parse a {key: sweep string} mapping (params or one grid) into (where, override) pairs, naming a bad entry."""
    if entries is None:
        return []
    if not isinstance(entries, Mapping):
        raise GridsConfigError(
            f"{where} must be a mapping from override key to sweep string, got {type(entries).__name__} "
            f'{entries!r}. Expected form:\n  {where}.<key>: {EXAMPLE}\ne.g. {where}: {{demos: "1,2,4"}}'
        )
    parsed = []
    for key, value in entries.items():
        if not isinstance(key, str) or not key:
            raise GridsConfigError(
                f"{where}: a key must be a non-empty override key (demos, +foo.bar), got {key!r}"
            )
        text = f"{key}={_scalar_str(value, f'{where}.{key}')}"
        try:
            (override,) = parser.parse_overrides([text])
        except OverrideParseException as e:
            raise GridsConfigError(f"{where}.{key}: cannot parse {text!r} as an override: {e}") from None
        parsed.append((f"{where}.{key}", override))
    return parsed


def _identity(override: Override) -> str:
    """The key an override sets, without its +/++/~ prefix: what precedence and the job's slots go by."""
    return (
        override.key_or_group if override.package is None else f"{override.key_or_group}@{override.package}"
    )


def _choices(override: Override, where: str) -> list[str]:
    """The 'key=value' strings one override sweeps over (a single one for a plain value), as the basic sweeper."""
    key = override.get_key_element()
    if override.is_sweep_override():
        if not override.is_discrete_sweep():
            raise GridsConfigError(
                f"{where}: {override.input_line!r} is an interval sweep, which cannot be enumerated into jobs "
                '(use a list "1,2,4", "range(0,10)" or "choice(a,b)")'
            )
        return [f"{key}={value}" for value in override.sweep_string_iterator()]
    if override.is_delete() and override.value_type is None:
        return [key]  # "~foo": no value (the basic sweeper would write "~foo=null")
    return [f"{key}={override.get_value_element_as_str()}"]


def _product(layers: Iterable[list[tuple[str, Override]]]) -> list[list[str]]:
    """Cartesian product of the layers' overrides; a later layer's key replaces an earlier one in place."""
    slots: dict[str, list[str]] = {}
    for layer in layers:
        for where, override in layer:
            slots[_identity(override)] = _choices(override, where)
    return [list(job) for job in itertools.product(*slots.values())]


def _as_container(node: Any) -> Any:
    """DictConfig/ListConfig -> plain dicts/lists (interpolations resolved); anything else unchanged."""
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def expand_grids(
    params: Mapping[str, Any] | None,
    grids: Mapping[str, Any] | None,
    cli_overrides: Sequence[str],
    parser: OverridesParser | None = None,
) -> dict[str, list[list[str]]]:
    """Each grid's jobs (params + grid + command line, the later winning per key), before dropping duplicates.

    With no grids the one entry is "" (params + command line, as the basic sweeper). A malformed entry raises
    GridsConfigError naming it (hydra.sweeper.grids.<name>.<key>) and the form it should have.
    """
    parser = parser or OverridesParser.create()
    params, grids = _as_container(params), _as_container(grids)
    if grids is not None and not isinstance(grids, Mapping):
        raise GridsConfigError(
            f"{GRIDS} must map a grid's name to its {{key: sweep string}} mapping, got {type(grids).__name__}. "
            f"Expected form:\n  {GRIDS}.<name>.<key>: {EXAMPLE}"
        )
    shared = _overrides(params, PARAMS, parser)
    grid_overrides = {
        name: _overrides(grid, f"{GRIDS}.{name}", parser) for name, grid in (grids or {}).items()
    }
    cli = [(f"the command line's {o.input_line!r}", o) for o in parser.parse_overrides(list(cli_overrides))]
    if not grid_overrides:
        return {"": _product([shared, cli])}
    return {name: _product([shared, grid, cli]) for name, grid in grid_overrides.items()}


def dedup_by_grid(by_grid: Mapping[str, list[list[str]]]) -> list[tuple[str, list[str]]]:
    """(grid, job) in grid order, dropping a job whose overrides, in any order, equal an earlier job's (the same
    config and folder): it is kept under the first grid that has it."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for name, jobs in by_grid.items():
        for job in jobs:
            signature = tuple(sorted(job))
            if signature not in seen:
                seen.add(signature)
                kept.append((name, job))
    return kept


def expand(
    params: Mapping[str, Any] | None,
    grids: Mapping[str, Any] | None,
    cli_overrides: Sequence[str],
    parser: OverridesParser | None = None,
) -> list[list[str]]:
    """Every job's final override list: the union of the grids in order, each job once.

    expand({"demos": "1,2"}, {"icl": {"method": "icl"}, "gd": {"method": "gd", "method.lr": "1e-3,1e-4"}}, [])
    -> [demos=1 method=icl], [demos=2 method=icl], [demos=1 method=gd method.lr=0.001], ... (6 jobs)
    """
    return [job for _, job in dedup_by_grid(expand_grids(params, grids, cli_overrides, parser))]


def batches(jobs: list[list[str]], max_batch_size: int | None) -> list[list[list[str]]]:
    """Split the jobs into launcher calls of at most max_batch_size (None or -1: one call)."""
    if max_batch_size is None or max_batch_size == -1:
        return [jobs] if jobs else []
    if max_batch_size < 1:
        raise GridsConfigError(f"hydra.sweeper.max_batch_size must be null, -1 or >= 1, got {max_batch_size}")
    return [jobs[i : i + max_batch_size] for i in range(0, len(jobs), max_batch_size)]


def _load_check(path: str | None):
    """The function named by hydra.sweeper.check ("module.function"), or None."""
    if not path:
        return None
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise GridsConfigError(
            f"hydra.sweeper.check={path!r} cannot be imported ({e}): name a function module.function, or null."
        ) from None


class GridsSweeper(Sweeper):
    """Launches the union of hydra.sweeper.grids (each crossed with params and the command line) as one sweep."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: Mapping[str, Any] | None = None,
        grids: Mapping[str, Any] | None = None,
        check: str | None = None,
    ) -> None:
        super().__init__()
        self.max_batch_size = max_batch_size
        self.check = check
        self.params = _as_container(params) or {}
        self.grids = _as_container(grids) or {}
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Instantiate the configured launcher, as the basic sweeper does."""
        from hydra.core.plugins import Plugins  # noqa: PLC0415  (imported late, as Hydra's own sweepers do)

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def validate_all(self, named: list[tuple[str, list[str]]]) -> None:
        """Compose and check every job before the first runs (a bad value in the last grid point fails now, not
        after the others ran), naming the grid, the job and the key."""
        assert self.config is not None and self.hydra_context is not None
        check = _load_check(self.check)
        for i, (name, job) in enumerate(named):
            source = f"{GRIDS}.{name}" if name else "the sweep"
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            except CompactHydraException as e:
                message = f"{source}: the job {' '.join(job)} cannot be composed:\n{e}"
                # Hydra prints an OmegaConf cause (it names the key) below the message
                raise GridsConfigError(message) from (e.__cause__ or e)
            if check is None:
                continue
            try:
                check(cfg)
            except (
                ValueError
            ) as e:  # the project's ConfigError / DataError: the message names the key and fix
                raise GridsConfigError(
                    f"{source}: job {i + 1} of {len(named)} ({' '.join(job)}) is invalid, so no job ran:\n"
                    f"{type(e).__name__}: {e}"
                ) from None

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """Expand the grids, compose every job, then launch them batch by batch; returns each batch's returns."""
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        by_grid = expand_grids(self.params, self.grids, arguments, parser)
        named = dedup_by_grid(by_grid)
        jobs = [job for _, job in named]
        split = batches(jobs, self.max_batch_size)
        sizes = ", ".join(f"{name} {len(g)}" for name, g in by_grid.items()) if self.grids else "no grids"
        dropped = sum(len(g) for g in by_grid.values()) - len(jobs)
        log.info(f"Grids sweeper: {len(jobs)} jobs ({sizes}; {dropped} duplicate(s) dropped)")
        os.environ[SWEEP_JOBS_ENV] = str(
            len(jobs)
        )  # each job's end line says "job 3/9" (launchers inherit it)
        self.validate_all(named)

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns: list[Sequence[JobReturn]] = []
        initial_job_idx = 0
        for batch in split:
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for r in results:
                _ = r.return_value  # raises if the job raised, as in the basic sweeper
            initial_job_idx += len(batch)
            returns.append(results)
        return returns
