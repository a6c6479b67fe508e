"""The value checks of the linreg config: merge a group onto its schema, check a number, a grid, a choice.

Each check raises a `ConfigError` whose message names the key, the bad value, what is allowed and how to fix it,
so that `icl_gd.linreg.config` only says which key must satisfy what. Nothing here knows the lab's keys but the
YAML file each group's defaults live in (named in the messages).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from omegaconf import ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from icl_gd.errors import ConfigError

GROUP_FILES = {
    "model": "conf/model/{name}.yaml",
    "dataset": "conf/dataset/linreg.yaml",
    "method": "conf/method/train.yaml",
}


def fail(key: str, value: Any, allowed: str, fix: str) -> None:
    """Raise the ConfigError for `key=value`: what was expected and how to fix it."""
    raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}. {fix}")


def _fields(schema: Any) -> dict[str, Any]:
    """A dataclass schema's field names and types ({} for anything else), for the messages."""
    return {f.name: f.type for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}


def typed(schema: type, node: Any, group: str) -> Any:
    """`node` merged onto its dataclass schema, as dataclass instances; errors name `group.key` and the fix."""
    where = GROUP_FILES[group].format(name=node.get("name"))
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except ConfigKeyError as e:
        parent, _, leaf = f"{group}.{e.full_key}".rpartition(".")
        allowed = sorted(set(_fields(e.object_type) or _fields(schema)) - {"name"})
        raise ConfigError(
            f"{parent} has unknown key(s) {[leaf]} for {group}={node.get('name')}; allowed: {allowed}. "
            f"Remove them (a preset's {group}.<key> survives a command-line {group}=<other option>)."
        ) from None
    except MissingMandatoryValue as e:
        raise ConfigError(
            f"{group}.{e.full_key} is not set: expected a value (the default is in {where}). "
            f"Give it there or as {group}.{e.full_key}=<value>."
        ) from None
    except OmegaConfBaseException as e:
        kind = _fields(e.object_type).get(str(e.key), "the type of the schema")
        reason = str(e.msg).splitlines()[0]
        raise ConfigError(
            f"{group}.{e.full_key}={e.value!r} is not allowed: expected {kind} ({reason}). "
            f"Fix the override or {where}."
        ) from None


def listify(key: str, value: Any) -> list:
    """A grid key as a non-empty list (a scalar is a one-value grid)."""
    if isinstance(value, ListConfig | list | tuple):
        out = list(value)
        if not out:
            fail(key, out, "a value or a non-empty list", f"give {key} at least one value")
        return out
    return [value]


def _show(bound: float) -> str:
    """A bound as written in a message: 0, 1, 0.5, 9223372036854775807 (no '0.0', no exponent for an int)."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _bounds(lo: float | None, hi: float | None, gt: float | None) -> str:
    """The allowed range in words: '> 0', '>= 1', 'in [0, 1]', 'in (0, 1]' ('' when unbounded)."""
    low = gt if gt is not None else lo
    if low is not None and hi is not None:
        return f"in {'(' if gt is not None else '['}{_show(low)}, {_show(hi)}]"
    if low is not None:
        return f"{'>' if gt is not None else '>='} {_show(low)}"
    return "" if hi is None else f"<= {_show(hi)}"


def number(
    key: str,
    value: Any,
    kind: type,
    lo: float | None = None,
    hi: float | None = None,
    *,
    gt: float | None = None,
    fix: str | None = None,
) -> Any:
    """`value` as a finite `kind` within lo <= value <= hi (both inclusive) and value > gt (strict), else ConfigError.

    `fix` replaces the default advice ("set <key> <range>") where the bound comes from another key.
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and isinstance(value, float):  # no nan/inf; an integer kind takes 3.0, never 3.5
        ok = math.isfinite(value) and (kind is not int or value.is_integer())
    rng = _bounds(lo, hi, gt)
    what = f"a{'n integer' if kind is int else ' finite number'}{' ' + rng if rng else ''}"
    bad = ok and (
        (lo is not None and value < lo)
        or (hi is not None and value > hi)
        or (gt is not None and not value > gt)
    )
    if not ok or bad:
        fail(key, value, what, fix or f"set {key} {rng or 'to such a value'}")
    return kind(value)


def grid_values(
    key: str,
    value: Any,
    kind: type,
    lo: float | None = None,
    hi: float | None = None,
    *,
    gt: float | None = None,
    fix: str | None = None,
) -> list:
    """A grid key as a list, each value checked as `number` checks one."""
    return [number(key, v, kind, lo, hi, gt=gt, fix=fix) for v in listify(key, value)]


def choice(key: str, value: Any, allowed: tuple, fix: str = "pick one") -> None:
    """Fail unless `value` is one of `allowed`."""
    if value not in allowed:
        fail(key, value, f"one of {allowed}", fix)
