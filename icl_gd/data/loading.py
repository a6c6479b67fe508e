"""Examples from local files (../shared/data's layout, or any jsonl / word-pair file), or from the hub by name.

Local files come first; the hub loader (the `datasets` package) is used only when the local file is absent and
the dataset config names a hub source. One file alone is split into a demonstration pool and a test pool with
`split_seed`, which is fixed per dataset so that the test pool does not move with the job's seed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from icl_gd.data.paths import DATA_ENV
from icl_gd.errors import DataError
from icl_gd.labels import raw_label_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    id: str  # stable across jobs: "<split>:<row>"
    fields: dict[str, str]  # the text fields the template names
    label: str  # the raw label as in the file
    answer: str  # the word the model should say (label_words[label], or the output itself for word pairs)


@dataclass(frozen=True)
class Splits:
    pool: list[Example]  # demonstrations are drawn from here
    test: list[Example]  # queries are drawn from here


def _resolve(path: str, data_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else data_dir / p


def _missing(path: Path, data_dir: Path, ds: DictConfig) -> DataError:
    return DataError(
        f"dataset={ds.name}: data file {path} not found (data_dir={data_dir}). Point data_dir=<folder> "
        f"(or the env var {DATA_ENV}) at a folder with ../shared/data's layout, or set dataset.path to the file."
    )


def _read_text(path: Path) -> str:
    if path.is_dir():
        files = sorted(p.name for p in path.iterdir() if p.suffix in (".jsonl", ".json"))
        raise DataError(
            f"{path} is a folder, not a data file: point dataset.path (or dataset.test_path) at a .jsonl or .json "
            f"file in it ({', '.join(files) or 'it holds none'})."
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}): re-encode it as UTF-8.") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object a line; blank lines skipped; a bad line fails naming its number."""
    rows = []
    for i, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{i}: malformed JSON ({e.msg} at column {e.colno}): fix or delete that line."
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{i}: expected a JSON object per line, got {type(row).__name__}.")
        rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no examples: point dataset.path at a non-empty file.")
    return rows


def read_json_array(path: Path) -> list[dict[str, Any]]:
    """A JSON array of objects (the word-pair format)."""
    try:
        rows = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}).") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path} must be a non-empty JSON array of {{'input': ..., 'output': ...}} objects.")
    return rows


def to_examples(rows: list[dict[str, Any]], ds: DictConfig, split: str, source: str) -> list[Example]:
    """Check each row has the fields the template needs and a known label; build Examples."""
    fields = list(ds.text_fields)
    words = OmegaConf.to_container(ds.label_words) if ds.label_words else None
    out = []
    for i, row in enumerate(rows):
        missing = [f for f in [*fields, ds.label_field] if f not in row]
        if missing:
            raise DataError(
                f"{source}: row {i + 1} has no field(s) {missing} (it has {sorted(row)}): "
                "fix dataset.text_fields / dataset.label_field or the template."
            )
        empty = [f for f in [*fields, ds.label_field] if row[f] is None or not str(row[f]).strip()]
        if empty:
            raise DataError(
                f"{source}: row {i + 1} has an empty or null {empty[0]!r} ({row[empty[0]]!r}): every example "
                "needs its text and its answer. Fix or delete that row."
            )
        label = raw_label_text(row[ds.label_field])
        if words is not None and label not in words:
            raise DataError(
                f"{source}: row {i + 1} has label {label!r}, not in dataset.label_words {sorted(words)}: "
                "add it to label_words."
            )
        answer = words[label] if words is not None else label
        out.append(Example(f"{split}:{i}", {f: str(row[f]) for f in fields}, label, answer))
    return out


def check_labels(splits: Splits, ds: DictConfig) -> None:
    """A classification set whose examples all carry one label scores every answer right: refuse it."""
    if ds.kind != "classification":
        return
    labels = {e.label for e in [*splits.pool, *splits.test]}
    if len(labels) < 2:
        raise DataError(
            f"dataset={ds.name}: every example has the label {next(iter(labels))!r}: a classification needs at "
            f"least two labels. Check dataset.label_field={ds.label_field!r} (is it the label column?) and the file."
        )


def split_pool_test(examples: list[Example], test_fraction: float, seed: int) -> Splits:
    """A fixed seeded split of one file into (pool, test)."""
    perm = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = max(1, round(len(examples) * test_fraction))
    test = sorted((examples[i] for i in perm[:n_test]), key=lambda e: int(e.id.split(":")[1]))
    pool = sorted((examples[i] for i in perm[n_test:]), key=lambda e: int(e.id.split(":")[1]))
    return Splits(pool=pool, test=test)


def _read_local(path: Path, ds: DictConfig) -> list[dict[str, Any]]:
    return read_json_array(path) if ds.kind == "wordpairs" or path.suffix == ".json" else read_jsonl(path)


def load_from_hub(ds: DictConfig) -> Splits:
    """Load by name with the `datasets` package (needs a network or its cache)."""
    try:
        import datasets  # noqa: PLC0415 -- optional, only for users with a network
    except ImportError:
        raise DataError(
            f"dataset={ds.name}: the local file is missing and loading from the hub needs the `datasets` package: "
            "pip install datasets, or point data_dir at the local files."
        ) from None
    hub = ds.hub
    splits = {}
    for split in ("train", "test"):
        try:
            d = datasets.load_dataset(hub.path, hub.name, split=hub[f"{split}_split"])
        except Exception as e:  # the hub library raises many kinds; all mean "not reachable / not there"
            raise DataError(f"dataset={ds.name}: could not load {hub.path} from the hub ({e}).") from None
        cols = dict(hub.columns)
        rows = [{**{k: r[v] for k, v in cols.items()}, ds.label_field: r[hub.label_column]} for r in d]
        splits[split] = to_examples(rows, ds, split, f"{hub.path}[{split}]")
    return Splits(pool=splits["train"], test=splits["test"])


def load_splits(ds: DictConfig, data_dir: Path) -> Splits:
    """The demonstration pool and test pool of a dataset config, checked (see `check_labels`)."""
    splits = _load_splits(ds, data_dir)
    check_labels(splits, ds)
    return splits


def _load_splits(ds: DictConfig, data_dir: Path) -> Splits:
    path = _resolve(ds.path, data_dir)
    if not path.exists():
        if ds.get("hub"):
            log.info("%s not found locally; loading %s from the hub", path, ds.hub.path)
            try:
                return load_from_hub(ds)
            except DataError as e:
                raise DataError(f"{_missing(path, data_dir, ds)} (Hub fallback also failed: {e})") from None
        raise _missing(path, data_dir, ds)
    examples = to_examples(_read_local(path, ds), ds, "train" if ds.test_path else "all", str(path))
    if ds.test_path is None:
        return split_pool_test(examples, ds.test_fraction, ds.split_seed)
    test_path = _resolve(ds.test_path, data_dir)
    if not test_path.exists():
        raise _missing(test_path, data_dir, ds)
    if test_path.resolve() == path.resolve():
        raise DataError(
            f"dataset.test_path is dataset.path ({path}): the queries would be drawn from the demonstrations' own "
            "file. Give a separate test file, or test_path=null to split the one file with split_seed."
        )
    return Splits(pool=examples, test=to_examples(_read_local(test_path, ds), ds, "test", str(test_path)))
