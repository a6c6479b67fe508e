"""Read an offline W&B run back from its .wandb file (wandb writes no summary file offline)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any


def read_records(wandb_file: Path) -> list[Any]:
    """Records of a .wandb file: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks,
    each chunk = crc32 (4 bytes) + length (2, little endian) + type (1: full, 2: first, 3: middle, 4: last)."""
    from wandb.proto import wandb_internal_pb2 as pb  # noqa: PLC0415

    data, block = wandb_file.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a chunk header: the block is padded
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def finished_records(run_dir: Path, timeout_s: float = 60.0) -> list[Any]:
    """The records of a run once its `exit` record is on disk: wandb-core flushes the file shortly after
    `finish()` returns, later still on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while True:
        files = list(run_dir.glob("run-*.wandb"))
        records = read_records(files[0]) if len(files) == 1 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def run_folder(run_dir: Path) -> dict[str, Any]:
    """What an offline run holds: run record fields, config, summary and history keys."""
    info: dict[str, Any] = {
        "config": {},
        "summary": {},
        "history_keys": set(),
        "history": [],
        "artifacts": [],
        "metrics": {},
        "exit_code": None,
    }
    for r in finished_records(run_dir):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            info |= {"group": r.run.run_group, "job_type": r.run.job_type, "name": r.run.display_name}
            info["run_id"] = r.run.run_id
            info["tags"] = list(r.run.tags)
            info["config"] |= {u.key: json.loads(u.value_json) for u in r.run.config.update}
        elif kind == "summary":
            for u in r.summary.update:
                path = list(u.nested_key) or [u.key]
                node = info["summary"]
                for k in path[:-1]:
                    node = node.setdefault(k, {})
                node[path[-1]] = json.loads(u.value_json)
        elif kind == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            info["history_keys"] |= {(list(i.nested_key) or [i.key])[0] for i in r.history.item}
            info["history"].append(items)
        elif kind == "exit":
            info["exit_code"] = r.exit.exit_code
        elif kind == "artifact":
            a = r.artifact
            info["artifacts"].append((a.name, a.type, sorted(Path(m.path).name for m in a.manifest.contents)))
        elif kind == "metric":
            info["metrics"][r.metric.name or r.metric.glob_name] = r.metric.step_metric
    return info


def logged_keys(info: dict[str, Any]) -> set[str]:
    """Every key a run logged, slash paths and each of their prefixes: summary (nested), history, config."""
    keys: set[str] = set()

    def add(path: str) -> None:
        parts = path.split("/")
        keys.update("/".join(parts[: i + 1]) for i in range(len(parts)))

    def walk(node: dict[str, Any], prefix: str) -> None:
        for k, v in node.items():
            add(prefix + k)
            if isinstance(v, dict) and "_type" not in v:
                walk(v, f"{prefix}{k}/")

    walk(info["summary"], "")
    for row in info["history"]:
        for k in row:
            add(k)
    for k in info["config"]:
        add(k)
    return keys


def sweep_runs(sweep: Path) -> list[dict[str, Any]]:
    """Every W&B run of a sweep folder (its own and its jobs'), each with `folder` (the output dir it lives in)
    and `run_dir`, oldest first."""
    dirs = sorted(
        [*sweep.glob("wandb/offline-run-*"), *sweep.glob("*/wandb/offline-run-*")],
        key=lambda d: d.name.split("-")[2],
    )
    return [run_folder(d) | {"folder": d.parent.parent, "run_dir": d} for d in dirs]


def offline_runs(out: Path) -> list[Path]:
    return sorted((out / "wandb").glob("offline-run-*"))
