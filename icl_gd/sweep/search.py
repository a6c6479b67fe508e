"""GD given its best chance at the sweep level: every gd_search job's search points, their tables and curves.

A method=gd_search job writes search.parquet: one row per (GD setting, optimizer step) scored on the SELECTION
queries by its agreement with ICL (`select_value`, the raw metric mean; `select_score`, signed so that higher =
more alike), whether it collapsed and which point was `chosen` ("best", "acc_matched" or both). The compare step
stacks them into the sweep folder's gd_search.parquet (`search_rows`), each row with its job's SEARCH_META; the report
builds from it the table of the chosen settings per demo set (`search_table`) and the trajectories of agreement
against step (`trajectory_curves`, mean over seeds with a bootstrap band over seeds), beside the ICL-order floor of
the same metric on the test queries (`trajectory_floors`). Pure frames in, frames out, but `search_rows`, which
reads the job files (a file that does not read back skips that job's points, with an error naming it and the fix).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from icl_gd import io
from icl_gd.data.source import condition_words
from icl_gd.sweep import stats
from icl_gd.sweep.jobs import ORDER_KEY, ORIGINAL, Job, UnreadableJobFile, read_job_file
from icl_gd.sweep.pair_types import BOTH_SHUFFLED, BOTH_SOURCE, ORDER_PAIR

log = logging.getLogger(__name__)

BEST, ACC_MATCHED = "best", "acc_matched"  # the values of a point's `chosen` (comma-joined when both)
SETTING = ["optimizer", "momentum", "lr", "params"]  # what one training of the search uses
SEARCH_COLUMNS = (
    *SETTING,
    "step",
    "select_metric",
    "select_value",
    "collapsed",
    "chosen",
)  # what the sweep reads
SEARCH_META = [
    "model",
    "dataset",
    "demos",
    "seed",
    "order_seed",
    "demo_labels",
    "demo_source",
    "method",
    "job",
]  # added per job
JOB_KEYS = [
    "model",
    "dataset",
    "demos",
    "method",
    "demo_labels",
    "demo_source",
    "seed",
    "order_seed",
    "job",
]  # one search each
PANEL_KEYS = [
    "model",
    "dataset",
    "demos",
    "method",
    "demo_labels",
    "demo_source",
]  # one trajectory panel each
MAX_PANELS = 4  # trajectory panels drawn (the table lists every job)


def _read_search(path: Path) -> pd.DataFrame:
    """A job's search.parquet; ValueError naming the missing columns when it lacks one the sweep reads."""
    df = io.read_parquet(path)
    missing = [c for c in SEARCH_COLUMNS if c not in df]
    if missing:
        raise ValueError(f"it has no column {', '.join(missing)}")
    return df


def search_rows(jobs: list[Job]) -> pd.DataFrame:
    """Every job's search.parquet stacked, each row led by its job's SEARCH_META (model label, dataset, demos, seed,
    order_seed, demo_labels, method label, job folder); no rows when no job has one."""
    frames = []
    for j in jobs:
        if not (j.folder / io.SEARCH).exists():
            continue
        try:
            df = read_job_file(j.folder, io.SEARCH, _read_search)
        except UnreadableJobFile as e:
            log.error("%s", e)
            continue
        c = j.config
        meta = {
            "model": j.model_label,
            "dataset": c["dataset"]["name"],
            "demos": int(c["demos"]),
            "seed": int(c["seed"]),
            "order_seed": c.get(ORDER_KEY),
            "demo_labels": j.demo_labels,
            "demo_source": j.demo_source or "",  # "" (not None): panels select rows by equality
            "method": j.method_label,
            "job": str(j.folder),
        }
        df = df.drop(columns=[k for k in meta if k in df]).reset_index(drop=True)
        frames.append(pd.concat([pd.DataFrame({k: [v] * len(df) for k, v in meta.items()}), df], axis=1))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out["order_seed"] = pd.array(out["order_seed"].tolist(), dtype="Int64")
    out["collapsed"] = out["collapsed"].astype(bool)
    out["chosen"] = out["chosen"].fillna("").astype(str)
    return out


def is_chosen(chosen: pd.Series, which: str) -> pd.Series:
    """Whether each point's `chosen` ("best", "acc_matched", "best,acc_matched" or "") names `which`."""
    return chosen.fillna("").astype(str).map(lambda c: which in c.split(","))


def short_number(v: Any) -> str:
    """A number in its shortest form: 0.001, 0.9, 1e-6 (not 1e-06)."""
    return f"{float(v):g}".replace("e-0", "e-").replace("e+0", "e+")


def setting_label(optimizer: Any, momentum: Any, lr: Any, params: Any) -> str:
    """ "sgd lr=0.001 attn_kv"; with momentum "sgd m=0.9 lr=0.001 attn_kv"."""
    m = f" m={short_number(momentum)}" if pd.notna(momentum) and float(momentum) > 0 else ""
    return f"{optimizer}{m} lr={short_number(lr)} {params}"


def _point(r: pd.Series) -> str:
    """A search point in words: "adam lr=0.001 all, step 4"."""
    return f"{setting_label(r['optimizer'], r['momentum'], r['lr'], r['params'])}, step {int(r['step'])}"


def _keys(df: pd.DataFrame, keys: list[str]) -> list[str]:
    return [k for k in keys if k in df]


def search_table(search: pd.DataFrame) -> pd.DataFrame:
    """One row per search (job), sorted by (model, dataset, demos, method, labels, seed): the best point's setting
    (optimizer, momentum, lr, params, step) and selection scores, the acc_matched point, the collapsed count."""
    keys = _keys(search, JOB_KEYS)
    rows = []
    for key, g in search.groupby(keys, sort=True, dropna=False):
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        best = g[is_chosen(g["chosen"], BEST)]
        matched = g[is_chosen(g["chosen"], ACC_MATCHED)]
        b = best.iloc[0] if len(best) else None
        for col in (
            *SETTING,
            "step",
            "select_metric",
            "select_value",
            "select_accuracy",
            "icl_select_accuracy",
        ):
            row[col] = b[col] if b is not None and col in b else np.nan
        row["best"] = _point(b) if b is not None else "—"
        row["acc_matched"] = (
            "—"
            if matched.empty
            else "the best point"
            if b is not None and matched.index[0] == best.index[0]
            else _point(matched.iloc[0])
        )
        row["n_points"] = len(g)
        row["n_collapsed"] = int(g["collapsed"].astype(bool).sum())
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out) and "demo_labels" in out:  # the original demos first, then the null controls
        control = [_condition(r) is not None for _, r in out.iterrows()]
        out = out.iloc[np.argsort(control, kind="stable")].reset_index(drop=True)
    return out


def _condition(key: Any) -> str | None:
    """What a null control changed about a search's demos, in words; None on the original demos."""
    return condition_words(key.get("demo_labels"), key.get("demo_source"))


def panel_title(key: dict[str, Any], several: dict[str, bool]) -> str:
    """ "sst2, N=4", with the model / method when the sweep has several and "(shuffled labels)" for the control."""
    parts = [f"{key['dataset']}, N={key['demos']}"]
    if several.get("model"):
        parts.insert(0, str(key["model"]))
    if several.get("method"):
        parts.append(str(key["method"]))
    title = ", ".join(parts)
    words = _condition(key)
    return title + (f" ({words})" if words else "")


def panels(search: pd.DataFrame) -> list[dict[str, Any]]:
    """The trajectory panels: one per (model, dataset, demos, method, demo labels), the original labels first,
    each with its `title` and its `metric` (the select_metric most of its points use)."""
    keys = _keys(search, PANEL_KEYS)
    several = {k: search[k].nunique() > 1 for k in keys}
    out = []
    for key, g in search.groupby(keys, sort=True, dropna=False):
        d = dict(zip(keys, key, strict=True))
        d["title"] = panel_title(d, several)
        d["metric"] = str(g["select_metric"].mode().iloc[0])
        out.append(d)
    return sorted(out, key=lambda d: _condition(d) is not None)


def _in_panel(df: pd.DataFrame, panel: dict[str, Any]) -> pd.Series:
    mask = pd.Series(True, index=df.index)
    for k in _keys(df, PANEL_KEYS):
        mask &= df[k] == panel[k]
    return mask


def trajectory_curves(search: pd.DataFrame, chosen_panels: list[dict[str, Any]]) -> pd.DataFrame:
    """Per (panel, setting, step): select_value of the panel's metric on the selection queries, averaged over
    order seeds within a seed, then mean over seeds with a 95% bootstrap interval over seeds (lo / hi NaN with one
    seed). Collapsed points are left out. Columns: panel, setting, SETTING, step, mean, lo, hi, n_seeds."""
    ok = search[~search["collapsed"].astype(bool) & np.isfinite(search["select_value"].astype(float))]
    cols = ["panel", "setting", *SETTING, "step", "mean", "lo", "hi", "n_seeds"]
    rows = []
    for panel in chosen_panels:
        p = ok[_in_panel(ok, panel) & (ok["select_metric"] == panel["metric"])]
        per_seed = p.groupby([*SETTING, "step", "seed"], sort=True, dropna=False)["select_value"].mean()
        for key, g in per_seed.reset_index().groupby([*SETTING, "step"], sort=True, dropna=False):
            values, seeds = g["select_value"].to_numpy(float), g["seed"].astype(str).to_numpy()
            mean, lo, hi = stats.ci(values, seeds) if len(g) >= 2 else (float(values.mean()), np.nan, np.nan)
            setting = dict(zip([*SETTING, "step"], key, strict=True))
            rows.append(
                {
                    "panel": panel["title"],
                    "setting": setting_label(*(setting[k] for k in SETTING)),
                    **setting,
                    "mean": mean,
                    "lo": lo,
                    "hi": hi,
                    "n_seeds": len(g),
                }
            )
    return pd.DataFrame(rows, columns=cols)


def chosen_points(search: pd.DataFrame, chosen_panels: list[dict[str, Any]]) -> pd.DataFrame:
    """The best point of each search (one per seed and order) in the drawn panels: panel, step, select_value."""
    parts = []
    for panel in chosen_panels:
        p = search[_in_panel(search, panel) & is_chosen(search["chosen"], BEST)]
        parts.append(p.assign(panel=panel["title"])[["panel", "step", "select_value"]])
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["panel", "step", "select_value"])
    )


def floor_pair(demo_labels: Any, demo_source: Any = None) -> str:
    """The ICL-order floor a panel's search is measured against: ICL's own on the original demos, that of two ICL
    jobs on the control's demos for a search on a null control (its ICL saw those demos)."""
    if str(demo_labels or ORIGINAL) != ORIGINAL:
        return ORDER_PAIR + BOTH_SHUFFLED
    return ORDER_PAIR + BOTH_SOURCE + str(demo_source) if demo_source else ORDER_PAIR


def trajectory_floors(queries: pd.DataFrame, chosen_panels: list[dict[str, Any]]) -> dict[str, float]:
    """panel title -> mean of the panel's metric over its ICL-order floor pair (`floor_pair`) on the test queries
    (comparison_queries.parquet), for the panels whose cell has that pair."""
    out: dict[str, float] = {}
    if queries.empty:
        return out
    for panel in chosen_panels:
        metric = panel["metric"]
        if metric not in queries:
            continue
        q = queries[queries["pair_type"] == floor_pair(panel.get("demo_labels"), panel.get("demo_source"))]
        for k in ("model", "dataset", "demos"):
            q = q[q[k] == panel[k]]
        values = q[metric].astype(float)
        if values.notna().any():
            out[panel["title"]] = float(values.mean())
    return out
