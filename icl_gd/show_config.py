"""`--cfg job` with types: the composed job config as YAML, each value followed by the type its schema gives it.

Hydra's own `--cfg job` prints values only, so a reader cannot tell `lr: 0.0001` (a float) from a string, nor which
keys a group's schema knows. Here each group is merged onto its dataclass schema (the ones `validation` checks
against: `schemas.SCHEMAS`, the method's `Method.schema`, the lab's schemas for dataset=linreg), and every leaf
says its type: `lr: 0.0001  # float`. A key no schema types (the top-level knobs, `search`, `logger`) shows the
type of its value. An unknown key or a wrong type fails here, naming the key and the fix, as it would when the
job starts; the checks that read files (data, model weights) still run only when a job starts.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.base import Node

from icl_gd import config
from icl_gd.confdir import CONFIG_NAME, HYDRA_VERSION, PKG_PREFIX, hydra_config_path
from icl_gd.errors import EXIT_CONFIG, ConfigError, DataError
from icl_gd.methods import method_class
from icl_gd.methods.registry import TARGET_KEY
from icl_gd.schemas import SCHEMAS
from icl_gd.validation import LAB_DATASET

SHOW_FLAGS = ("--cfg", "-c")  # Hydra's flag for printing the config
SHOWN_PART = "job"  # the part of `--cfg job|hydra|all` shown here; the others stay Hydra's
INDENT = "  "


@dataclass(frozen=True)
class ShowRequest:
    """A command line that asks for `--cfg job` and nothing else Hydra must handle: its overrides."""

    overrides: list[str]


def requested(argv: Sequence[str]) -> ShowRequest | None:
    """The request when `argv` is `--cfg job` (or `-c job`, `--cfg=job`) plus overrides; else None (Hydra's turn).

    Any other flag (-m, --resolve, --package, --config-dir, ...) leaves the command to Hydra, which prints values.
    """
    args, overrides, asked = list(argv), [], False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in SHOW_FLAGS and i + 1 < len(args) and args[i + 1] == SHOWN_PART:
            asked, i = True, i + 2
            continue
        if arg == f"--cfg={SHOWN_PART}":
            asked, i = True, i + 1
            continue
        if arg.startswith("-"):
            return None
        overrides.append(arg)
        i += 1
    return ShowRequest(overrides) if asked else None


def type_name(tp: Any) -> str:
    """`float`, `list[str]`, `dict[str, str]`, a dataclass's name: how a schema's annotation reads."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(tp))
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{args}]" if args else name
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _value_type(value: Any) -> str:
    """The type of a value no schema types; a list's element type when its items share one."""
    if isinstance(value, list | tuple):
        kinds = sorted({_value_type(v) for v in value})
        return f"list[{kinds[0]}]" if len(kinds) == 1 else "list"
    if isinstance(value, dict):
        return "dict"
    return "None" if value is None else type(value).__name__


def node_type(node: Node) -> str:
    """The type a node's schema declares (`| None` when it may be null), else the type of its value."""
    declared = node._metadata.ref_type
    if node._is_interpolation():
        what = "interpolation, resolved when the job runs"
        return what if declared in (Any, object, None) else f"{type_name(declared)} ({what})"
    if declared in (Any, object, None):
        if isinstance(node, ListConfig | DictConfig):
            return _value_type(OmegaConf.to_container(node, resolve=False))
        return _value_type(node._value())
    name = type_name(declared)
    if node._metadata.optional and "None" not in name:
        name += " | None"
    return name


def _scalar(value: Any) -> str:
    """One YAML scalar or flow collection, quoted where YAML needs it; a string with a line break on one line."""
    if isinstance(value, str) and ("\n" in value or "\t" in value):
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar: "Q: {input}\nA: {label}"
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def _emit(node: DictConfig, depth: int, lines: list[str]) -> None:
    pad = INDENT * depth
    for key in node:
        child = node._get_node(key)
        assert isinstance(child, Node)
        if isinstance(child, DictConfig) and not (
            child._is_none() or child._is_interpolation() or child._is_missing()
        ):
            schema = child._metadata.object_type
            label = f"  # {schema.__name__ if dataclasses.is_dataclass(schema) else node_type(child)}"
            if len(child) == 0:
                lines.append(f"{pad}{key}: {{}}{label}")
                continue
            lines.append(f"{pad}{key}:{label}")
            _emit(child, depth + 1, lines)
            continue
        if isinstance(child, ListConfig) and not (child._is_none() or child._is_interpolation()):
            value: Any = OmegaConf.to_container(child, resolve=False)
        else:
            value = child._value()
            value = "???" if child._is_missing() else value
        lines.append(f"{pad}{key}: {_scalar(value)}  # {node_type(child)}")


def annotated_yaml(cfg: DictConfig) -> str:
    """The config as YAML with `# type` after every leaf and `# Schema` after every typed group."""
    lines: list[str] = []
    _emit(cfg, 0, lines)
    return "\n".join(lines) + "\n"


def _lm_schemas(cfg: DictConfig) -> dict[str, type]:
    schemas = {group: schema for group, schema in SCHEMAS.items() if group in cfg and group != "job"}
    schemas["method"] = method_class(cfg.method).schema
    return schemas


def _lab_schemas(cfg: DictConfig) -> dict[str, type]:
    from icl_gd.linreg.config import MODEL_SCHEMAS, DataConfig, TrainConfig, validate  # noqa: PLC0415

    validate(cfg)  # the lab's own checks: the same messages as when its job starts
    return {"dataset": DataConfig, "model": MODEL_SCHEMAS[cfg.model.name], "method": TrainConfig}


def typed_config(cfg: DictConfig) -> DictConfig:
    """`cfg` with each group merged onto its schema (raises ConfigError naming an unknown key or a wrong type)."""
    config.check_groups(cfg)
    lab = cfg.dataset.get("name") == LAB_DATASET
    schemas = _lab_schemas(cfg) if lab else _lm_schemas(cfg)
    out = OmegaConf.create({})
    for key in cfg:
        node = cfg._get_node(key)
        if key not in schemas:
            out[key] = node
            continue
        group = cfg[key]
        kept = [k for k in group if k != TARGET_KEY]  # the class path is not a key of the method's schema
        merged = config.typed(schemas[key], OmegaConf.masked_copy(group, kept), str(key))
        if TARGET_KEY in group:
            OmegaConf.set_struct(merged, False)
            merged[TARGET_KEY] = group[TARGET_KEY]
        out[key] = merged
    return out


def compose_job(overrides: list[str]) -> DictConfig:
    """The job config Hydra would compose for `overrides`, from the same conf/ as the app (confdir)."""
    from hydra import compose, initialize_config_dir, initialize_config_module  # noqa: PLC0415

    path = hydra_config_path()
    if path.startswith(PKG_PREFIX):
        init = initialize_config_module(
            config_module=path.removeprefix(PKG_PREFIX), version_base=HYDRA_VERSION
        )
    else:
        init = initialize_config_dir(config_dir=path, version_base=HYDRA_VERSION)
    with init:
        return compose(config_name=CONFIG_NAME, overrides=overrides)


def show(request: ShowRequest) -> int | None:
    """Print the typed config; returns the exit code, or None when Hydra should answer (it cannot compose)."""
    from hydra.errors import HydraException  # noqa: PLC0415
    from omegaconf.errors import OmegaConfBaseException  # noqa: PLC0415

    try:
        cfg = compose_job(request.overrides)
    except (HydraException, OmegaConfBaseException):
        return None  # a grammar error or an unknown option: Hydra's own `--cfg job` says it in its words
    try:
        text = annotated_yaml(typed_config(cfg))
    except (ConfigError, DataError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_CONFIG
    sys.stdout.write(text)
    return 0
