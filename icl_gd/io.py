"""Job files, written atomically (temporary file in the same folder, then rename): a killed job leaves no half file."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import yaml

STATUS = "status.json"
METRICS = "metrics.json"
CONFIG = "config.yaml"
PREDICTIONS = "predictions.parquet"
DEMOS = "demos.jsonl"
TRAIN_CURVE = "train_curve.csv"
DAI_LAYERS = "dai_layers.parquet"  # analysis.dai: one row per (query, layer)
DAI_QUERIES = "dai_queries.parquet"  # analysis.dai: zero-shot / ICL / GD correctness per query
SPARSITY = "sparsity.parquet"  # analysis.sparsity: one row per (layer, matrix, threshold)
LR_SEARCH = "lr_search.csv"  # method.lr_grid: the held-out loss of each learning rate
QUERIES = "queries.json"  # the job's query ids: {"select": [...], "test": [...]} (eval.n_select)
SEARCH = "search.parquet"  # method=gd_search: one row per (setting, step) with its selection score
SWEEP_SEARCH = (
    "gd_search.parquet"  # a sweep's gd_search jobs' search.parquet stacked (its own name: never a job's)
)
WEIGHT_UPDATE = (
    "weight_update.safetensors"  # method.save_update: trained minus original, per trained parameter
)
LINREG_SUMMARY = "linreg_summary.json"  # linear-regression lab: grid keys and metrics of the job
# linreg lab tables, each written as <name>.csv in the job folder when it has rows (in this order)
LINREG_TABLES = ("risks", "theory", "curves", "curve_theory", "evolution", "sparsity", "train_loss", "lora")
FIG_RISK_VS_AXIS = "risk_vs_{axis}.png"  # linreg lab: risk against the job's first varying grid key

# Sweep files (in the sweep folder, written by icl_gd.sweep)
COMPARISON = "comparison.parquet"  # one row per (pair, key, metric): the summary of every comparison
COMPARISON_MD = "comparison.md"
COMPARISON_QUERIES = "comparison_queries.parquet"  # one row per (pair, query): the per-query values
ORDER_SENSITIVITY = "order_sensitivity.parquet"  # one row per (job group, query): std across demo orders
REPORT = "report.md"
FIGURES = "figures"  # the report's figures folder
FIG_ACCURACY = "accuracy_vs_demos.png"
FIG_AGREEMENT = "agreement_vs_demos.png"
FIG_WANDB = "wandb_plots.png"  # the report run's W&B line plots, drawn from the same data
WANDB_PLOTS = "wandb_plots.json"  # the W&B plots the report run logged: what the dashboard draws
DASHBOARD = "dashboard.json"  # python -m icl_gd.dashboard --dry-run: the workspace and report spec
FIG_DAI = "simaou_layers.png"
FIG_ORDER = "order_sensitivity.png"
FIG_SPARSITY = "sparsity.png"
FIG_EVOLUTION = "weight_evolution.png"
FIG_RISK_VS_CONTEXT = "risk_vs_context.png"  # linreg lab figures (in the job folder)
FIG_RISK_VS_LORA_RANK = "risk_vs_lora_rank.png"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a reader never sees half a file.

    mkstemp creates the file 0600; it is given the mode any new file gets (0666 less the umask) before the rename,
    so colleagues on a shared file system can read results.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic(path, write)


def _jsonable(v: Any) -> Any:
    """NaN/inf become null so the file is strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_yaml(path: Path, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    _atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_figure(path: Path, fig: Any, dpi: int) -> None:
    """A matplotlib figure, in the format its suffix names (png, pdf, svg), written atomically."""
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png"))


def write_safetensors(path: Path, tensors: dict[str, Any]) -> None:
    """name -> tensor, as a .safetensors file (contiguous copies), written atomically."""
    from safetensors.torch import save_file  # noqa: PLC0415 -- only jobs that keep a weight update need it

    _atomic(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp))


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet file, or only those of `columns` it has (reads no other column: predictions carry big ones)."""
    if columns is None:
        return pd.read_parquet(path)
    have = set(pq.read_schema(path).names)
    return pd.read_parquet(path, columns=[c for c in columns if c in have])


def write_csv(path: Path, df: pd.DataFrame) -> None:
    _atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def write_status(folder: Path, state: str, **extra: Any) -> None:
    write_json(folder / STATUS, {"status": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})


def read_status(folder: Path) -> dict[str, Any] | None:
    try:
        return read_json(folder / STATUS)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_done(folder: Path, config_hash: str) -> bool:
    """True when the folder holds a finished job of the same resolved config (and its metrics)."""
    st = read_status(folder)
    return bool(
        st
        and st.get("status") == "done"
        and st.get("config_hash") == config_hash
        and (folder / METRICS).exists()
    )
