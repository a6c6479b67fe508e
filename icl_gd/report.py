"""The report of a language-model sweep: S/report.md, S/figures/*.png and a W&B `report` run.

    python -m icl_gd.report <sweep folder> [--logger none]        # also: make report SWEEP=<folder>

It reads what the jobs and `icl_gd.compare` wrote (comparison_queries.parquet, order_sensitivity.parquet, each
job's predictions and, where analysis.dai / analysis.sparsity were on, dai_*.parquet and sparsity.parquet), builds
each table with a pure function of those frames (testable without files), draws the figures (`icl_gd.plots`) and
writes the markdown. A section appears only when its inputs exist: a sweep of ICL jobs alone still gets a report.
Every interval is a 95% Student-t interval (`metrics.mean_ci`) pooling queries and seeds.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from icl_gd import io, plots
from icl_gd import metrics as M
from icl_gd.analysis.sparsity import construction_sparsity as build_construction_sparsity
from icl_gd.compare import ORDER_PAIR, Job, load_jobs

log = logging.getLogger(__name__)

REPORT = "report.md"
FIGURES = "figures"
QUERIES_FILE = "comparison_queries.parquet"
ORDER_FILE = "order_sensitivity.parquet"
DAI_LAYERS = "dai_layers.parquet"
DAI_QUERIES = "dai_queries.parquet"
SPARSITY = "sparsity.parquet"

FIG_ACCURACY = "accuracy_vs_demos.png"
FIG_AGREEMENT = "agreement_vs_demos.png"
FIG_DAI = "simaou_layers.png"
FIG_ORDER = "order_sensitivity.png"
FIG_SPARSITY = "sparsity.png"
FIG_EVOLUTION = "weight_evolution.png"

AGREEMENT = {"overlap@k": "overlap@K (fraction of top-K shared)", "ocs": "OCS (cosine over shared top-K)"}
DAI_METRICS = ("simaou", "simaou_random", "simam_ft", "simam_zs")
DAI_ROWS = {
    "SimAOU": "SimAOU (cosine of attention-output updates)",
    "SimAM": "SimAM (attention-map similarity)",
}
# (row, series, metric column, style): the ICL-vs-GD curve solid, its baseline dotted
DAI_SERIES = (
    ("SimAOU", "ICL vs GD update", "simaou", "main"),
    ("SimAOU", "random update (baseline)", "simaou_random", "baseline"),
    ("SimAM", "ICL vs GD", "simam_ft", "main"),
    ("SimAM", "ICL vs zero-shot (baseline)", "simam_zs", "baseline"),
)
EVOLUTION = {
    "accuracy": "label accuracy (fraction)",
    "overlap@k": "overlap@K with ICL (fraction)",
    "ocs": "OCS with ICL (cosine)",
    "simaou": "SimAOU (cosine)",
}
DAI_KEYS = ["model", "dataset", "demos", "method"]
META = ("model", "model_base", "revision", "random_init", "dataset", "method", "demos", "seed")
CONSTRUCTION_D, CONSTRUCTION_N = 5, 10  # the regression lab's default dimension and context length
DIGITS = 3
STEP = re.compile(r"(\d+)")

BELOW, WITHIN, ABOVE, NA = "no (below floor)", "within floor", "above floor", "n/a"


class EmptySweepError(ValueError):
    """The folder holds no finished language-model job: nothing to report."""


# ---------------------------------------------------------------------------------------------------------
# Loading: the sweep's files as frames


@dataclass
class Sweep:
    """Everything the report reads; each frame is empty when its files are absent."""

    folder: Path
    status: Counter  # status.json state -> number of jobs (every job, finished or not)
    jobs: pd.DataFrame  # one row per finished language-model job (`job_frame`)
    queries: pd.DataFrame  # comparison_queries.parquet
    orders: pd.DataFrame  # order_sensitivity.parquet
    accuracy: pd.DataFrame  # per (reference-order job, query): META + query_id, correct
    dai_layers: pd.DataFrame  # META + dai_layers.parquet rows
    dai_queries: pd.DataFrame  # META + dai_queries.parquet rows
    sparsity: pd.DataFrame  # META + sparsity.parquet rows
    top_k: int | None  # eval.top_k when every job used the same
    logger: dict[str, Any]  # the jobs' `logger` node: where the report run logs unless told otherwise


def base_label(label: str, revision: Any) -> str:
    """The model label without its "@revision": the model whose checkpoints a weight-evolution figure follows."""
    return label.replace(f"@{revision}", "") if isinstance(revision, str) and revision else label


def job_frame(jobs: list[Job]) -> pd.DataFrame:
    """One row per job: META, folder, order_seed, and `reference` (the first order of its order group)."""
    first: dict[str, tuple[bool, int]] = {}
    for j in jobs:
        first[j.key("order_seed")] = min(first.get(j.key("order_seed"), j.order_rank()), j.order_rank())
    rows = []
    for j in jobs:
        c, o = j.config, j.config.get("order_seed")
        revision = c["model"].get("revision")
        rows.append(
            {
                "model": j.model_label,
                "model_base": base_label(j.model_label, revision),
                "revision": revision,
                "random_init": bool(c["model"].get("random_init")),
                "dataset": c["dataset"]["name"],
                "method": j.method_label,
                "demos": int(c["demos"]),
                "seed": int(c["seed"]),
                "order_seed": o,
                "reference": j.order_rank() == first[j.key("order_seed")],
                "sparsity_relative": bool((c.get("analysis") or {}).get("sparsity_relative")),
                "folder": str(j.folder),
            }
        )
    return pd.DataFrame(rows)


def _read(path: Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """A parquet file (only the wanted columns that it has), or an empty frame when it is absent."""
    if not path.exists():
        return pd.DataFrame()
    return io.read_parquet(path, list(columns) if columns else None)


def job_files(jobs: pd.DataFrame, name: str, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """The file `name` of every job that has it, stacked, each row with its job's META columns."""
    frames = []
    for _, j in jobs.iterrows():
        df = _read(Path(j["folder"]) / name, columns)
        if len(df):
            frames.append(df.assign(**{k: j[k] for k in META}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def label_correct(preds: pd.DataFrame) -> pd.Series:
    """Label correctness: predicted label == gold where the set has label words, else top-1 token == gold."""
    if "pred_label" in preds:
        return (preds["pred_label"] == preds["gold"]).astype(float)
    return preds["correct"].astype(float)


def status_counts(folder: Path) -> Counter:
    """How many jobs under the folder are done, failed or neither (running, killed), from their status.json."""
    return Counter(
        (io.read_status(p.parent) or {}).get("status", "unreadable") for p in folder.rglob(io.STATUS)
    )


def load_sweep(folder: Path) -> Sweep:
    """Read a sweep folder; EmptySweepError when it holds no finished language-model job."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder: pass the sweep folder (hydra.sweep.dir) of a multirun"
        )
    jobs = load_jobs(folder)
    if not jobs:
        raise EmptySweepError(
            f"{folder} holds no finished language-model job (no status.json saying done next to a "
            "predictions.parquet): run a sweep into it first (python run.py -m ... hydra.sweep.dir=<folder>)"
        )
    frame = job_frame(jobs)
    preds = job_files(
        frame[frame["reference"]], io.PREDICTIONS, ["query_id", "gold", "correct", "pred_label"]
    )
    top_ks = {j.config.get("eval", {}).get("top_k") for j in jobs}
    return Sweep(
        folder=folder,
        status=status_counts(folder),
        jobs=frame,
        queries=_read(folder / QUERIES_FILE),
        orders=_read(folder / ORDER_FILE),
        accuracy=preds.assign(correct=label_correct(preds))[[*META, "query_id", "correct"]],
        dai_layers=job_files(frame, DAI_LAYERS),
        dai_queries=job_files(frame, DAI_QUERIES),
        sparsity=job_files(frame, SPARSITY),
        top_k=top_ks.pop() if len(top_ks) == 1 else None,
        logger=jobs[0].config.get("logger") or {"name": "none"},
    )


# ---------------------------------------------------------------------------------------------------------
# Tables: pure functions of frames


def ci(values: Any) -> tuple[float, float, float]:
    """(mean, lo, hi) of the 95% t-interval, NaNs dropped."""
    return M.mean_ci(torch.as_tensor(np.array(values, dtype=float)))


def wide_ci(df: pd.DataFrame, keys: list[str], values: Iterable[str]) -> pd.DataFrame:
    """Per group of `keys`: n and, for each value column v, v / v_lo / v_hi (mean and 95% interval)."""
    values = [v for v in values if v in df]
    cols = [*keys, "n", *[f"{v}{s}" for v in values for s in ("", "_lo", "_hi")]]
    rows = []
    for key, g in df.groupby(keys, sort=True, dropna=False):
        row: dict[str, Any] = {**dict(zip(keys, key, strict=True)), "n": len(g)}
        for v in values:
            row[v], row[f"{v}_lo"], row[f"{v}_hi"] = ci(g[v])
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def long_ci(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """wide_ci of one value, its columns named mean / lo / hi (what the plots take)."""
    return wide_ci(df, keys, [value]).rename(
        columns={value: "mean", f"{value}_lo": "lo", f"{value}_hi": "hi"}
    )


def interval(mean: float, lo: float, hi: float) -> tuple[float, float]:
    """The interval to compare; a single value (NaN bounds) is its own interval."""
    return (mean, mean) if math.isnan(lo) or math.isnan(hi) else (lo, hi)


MIN_ORDER_DEMOS = 2  # fewer demonstrations have a single order, so the ICL-order floor is trivially perfect
ONE_ORDER = "n/a (one order)"


def verdict(pair: tuple[float, float], floor: tuple[float, float]) -> str:
    """Does a method pair agree as well as ICL with itself in another order? Compares the two 95% intervals."""
    if any(math.isnan(v) for v in (*pair, *floor)):
        return NA
    if pair[1] < floor[0]:
        return BELOW
    if pair[0] > floor[1]:
        return ABOVE
    return WITHIN


def combine_verdicts(verdicts: list[str]) -> str:
    """One verdict over several metrics: below the floor on any metric is below; n/a only when all are."""
    known = [v for v in verdicts if v != NA]
    for v in (BELOW, ABOVE):
        if v in known:
            return v
    return WITHIN if known else NA


def pair_name(pair_type: str) -> str:
    """'icl_vs_gd(lr=0.001)' -> 'icl vs gd(lr=0.001)'; the order pair is named as the noise floor."""
    return (
        "ICL vs ICL in another order (floor)"
        if pair_type == ORDER_PAIR
        else pair_type.replace("_vs_", " vs ")
    )


def headline_table(queries: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, demos, method pair): accuracies, agreement ± CI, the ICL-order floor and the verdict."""
    keys = ["model", "dataset", "demos"]
    metrics = [m for m in AGREEMENT if m in queries]
    pairs = queries[queries["pair_type"] != ORDER_PAIR]
    table = wide_ci(
        pairs, [*keys, "pair_type", "method_a", "method_b"], [*metrics, "accuracy_a", "accuracy_b"]
    )
    floor = wide_ci(queries[queries["pair_type"] == ORDER_PAIR], keys, metrics).drop(columns="n")
    floor = floor.rename(columns={c: f"floor_{c}" for c in floor.columns if c not in keys})
    table = table.merge(floor, on=keys, how="left")

    def row_verdict(r: pd.Series) -> str:
        return combine_verdicts(
            [
                verdict(
                    interval(r[m], r[f"{m}_lo"], r[f"{m}_hi"]),
                    interval(r[f"floor_{m}"], r[f"floor_{m}_lo"], r[f"floor_{m}_hi"]),
                )
                for m in metrics
            ]
        )

    table["verdict"] = table.apply(row_verdict, axis=1) if len(table) else pd.Series(dtype=str)
    table.loc[table["demos"] < MIN_ORDER_DEMOS, "verdict"] = (
        ONE_ORDER  # one demo has no other order: no floor
    )
    return table


def _with_model(df: pd.DataFrame, col: str) -> pd.Series:
    """`col`, prefixed with the model label when the frame holds several models."""
    if df["model"].nunique() > 1:
        return df["model"].astype(str) + ": " + df[col].astype(str)
    return df[col].astype(str)


def accuracy_table(acc: pd.DataFrame) -> pd.DataFrame:
    """Label accuracy per (model, dataset, method, demos), pooling queries and seeds."""
    return long_ci(acc, ["model", "dataset", "method", "demos"], "correct")


def accuracy_curves(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(line=table["model"].astype(str) + " / " + table["method"].astype(str))


def agreement_curves(queries: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, pair, demos, metric): mean and CI of overlap@K and OCS; `floor` marks the order pair."""
    parts = []
    for m in (m for m in AGREEMENT if m in queries):
        t = long_ci(queries, ["model", "dataset", "pair_type", "demos"], m).assign(metric=m)
        parts.append(t.assign(floor=t["pair_type"] == ORDER_PAIR, pair=t["pair_type"].map(pair_name)))
    out = pd.concat(parts, ignore_index=True)
    return out.assign(line=_with_model(out, "pair"))


def dai_per_query(layers: pd.DataFrame) -> pd.DataFrame:
    """Each (job, query)'s Dai metrics averaged over layers: the unit the intervals pool."""
    metrics = [m for m in DAI_METRICS if m in layers]
    return layers.groupby([*META, "query_id"], dropna=False, sort=True)[metrics].mean().reset_index()


def rec2ftp_table(dai_queries: pd.DataFrame) -> pd.DataFrame:
    """Rec2FTP (Dai et al.) per DAI_KEYS: among the queries zero-shot gets wrong and GD right (GD's fixes), the
    share ICL gets right too; n_ft_fixed counts the fixes (none: Rec2FTP is NaN)."""
    fixed = ~dai_queries["zs_correct"].astype(bool) & dai_queries["ft_correct"].astype(bool)
    rows = dai_queries.assign(
        rec2ftp=dai_queries["icl_correct"].astype(float).where(fixed), fixed=fixed.astype(int)
    )
    counts = rows.groupby(DAI_KEYS, sort=True, dropna=False)["fixed"].sum().rename("n_ft_fixed").reset_index()
    return wide_ci(rows, DAI_KEYS, ["rec2ftp"]).drop(columns="n").merge(counts, on=DAI_KEYS)


def dai_table(layers: pd.DataFrame, dai_queries: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, demos, method): Rec2FTP and the n it rests on, SimAOU vs random, SimAM ft vs zs."""
    parts = []
    if len(dai_queries):
        parts.append(rec2ftp_table(dai_queries))
    if len(layers):
        parts.append(wide_ci(dai_per_query(layers), DAI_KEYS, DAI_METRICS))
    out = parts[0]
    for p in parts[1:]:
        out = out.merge(p, on=DAI_KEYS, how="outer")
    return out


def dai_layer_curves(layers: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, layer) and DAI_SERIES: mean and CI over queries, seeds, demos."""
    layers = layers.assign(model=_line_model(layers))
    parts = [
        long_ci(layers, ["model", "dataset", "layer"], metric).assign(row=row, series=series, style=style)
        for row, series, metric, style in DAI_SERIES
        if metric in layers
    ]
    return pd.concat(parts, ignore_index=True)


def _line_model(df: pd.DataFrame) -> pd.Series:
    """The model label, with the method when the frame holds several methods."""
    if df["method"].nunique() > 1:
        return df["model"].astype(str) + " " + df["method"].astype(str)
    return df["model"].astype(str)


def order_table(orders: pd.DataFrame) -> pd.DataFrame:
    """Mean per-query std across demo orders per (model, dataset, demos, method), with the number of orders."""
    keys = ["model", "dataset", "demos", "method"]
    n_orders = orders.groupby(keys, sort=True)["n_orders"].max().reset_index()
    return wide_ci(orders, keys, ["std"]).merge(n_orders, on=keys)


def order_points(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.assign(group=_with_model(orders, "method"))[["dataset", "group", "std"]]


def sparsity_table(gd: pd.DataFrame, construction: pd.DataFrame) -> pd.DataFrame:
    """Fraction below each threshold per (source, model, method, matrix): mean over layers, jobs, datasets."""
    parts = [gd.assign(source="GD update")] if len(gd) else []
    if len(construction):
        parts.append(construction.assign(source="construction", model="regression lab", method="one GD step"))
    df = pd.concat(parts, ignore_index=True)
    return df.pivot_table(
        index=["source", "model", "method", "matrix"], columns="threshold", values="fraction"
    ).reset_index()


def sparsity_curves(gd: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, matrix, threshold): the fraction below, averaged over layers and jobs."""
    mean = (
        gd.groupby(["model", "method", "dataset", "matrix", "threshold"], sort=True)["fraction"]
        .mean()
        .reset_index()
    )
    return mean.assign(line=_with_model(mean, "matrix"))


def construction_curves(construction: pd.DataFrame) -> pd.DataFrame:
    if construction.empty:
        return pd.DataFrame(columns=["line", "threshold", "fraction"])
    mean = construction.groupby(["matrix", "threshold"], sort=True)["fraction"].mean().reset_index()
    return mean.assign(line="construction: " + mean["matrix"].astype(str))


def construction_sparsity(thresholds: list[float]) -> pd.DataFrame:
    """The regression lab's constructed weights' sparsity at these thresholds, at the lab's default d and n."""
    return build_construction_sparsity(CONSTRUCTION_D, CONSTRUCTION_N, thresholds)


def checkpoint_steps(revisions: list[str]) -> dict[str, int]:
    """Revision -> training step: the last number in each name ("step1000" -> 1000), else the order given."""
    numbers = [STEP.findall(str(r)) for r in revisions]
    if all(numbers):
        return {r: int(n[-1]) for r, n in zip(revisions, numbers, strict=True)}
    return {r: i for i, r in enumerate(revisions)}


def _evolving(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of models that appear at several revisions, with each revision's step."""
    if df.empty or "revision" not in df:
        return df.iloc[0:0]
    df = df[df["revision"].notna()]
    parts = []
    for _, g in df.groupby("model_base", sort=True):
        revisions = list(dict.fromkeys(g["revision"]))
        if len(revisions) > 1:
            parts.append(g.assign(step=g["revision"].map(checkpoint_steps(revisions))))
    return pd.concat(parts, ignore_index=True) if parts else df.iloc[0:0]


def _demo_line(name: pd.Series, df: pd.DataFrame) -> pd.Series:
    return name.astype(str) + ", N=" + df["demos"].astype(str)


def evolution_table(acc: pd.DataFrame, queries: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, line, revision): accuracy, overlap@K / OCS of each pair and SimAOU across checkpoints."""
    sources: list[tuple[pd.DataFrame, str, str]] = []  # (rows, value column, metric)
    if len(acc):
        sources.append((acc.assign(line=_demo_line(acc["method"], acc)), "correct", "accuracy"))
    if len(queries) and "revision" in queries:
        bases = [base_label(m, r) for m, r in zip(queries["model"], queries["revision"], strict=True)]
        q = queries.assign(model_base=bases, line=_demo_line(queries["pair_type"].map(pair_name), queries))
        sources += [(q, m, m) for m in AGREEMENT if m in q]
    if len(layers):
        per_query = dai_per_query(layers)
        sources.append(
            (per_query.assign(line=_demo_line(per_query["method"], per_query)), "simaou", "simaou")
        )
    keys = ["model_base", "dataset", "line", "revision", "step"]
    parts = []
    for rows, value, metric in sources:
        rows = _evolving(rows)
        if len(rows) and value in rows:
            parts.append(long_ci(rows, keys, value).assign(metric=metric))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True).rename(columns={"model_base": "model"})
    out["floor"] = out["line"].str.startswith(pair_name(ORDER_PAIR))
    return out.sort_values(["model", "dataset", "metric", "line", "step"], ignore_index=True)


def evolution_curves(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(line=_with_model(table, "line"))


# ---------------------------------------------------------------------------------------------------------
# Markdown


def fmt(v: Any) -> str:
    """A number to DIGITS decimals ('—' for missing); other values as text."""
    if isinstance(v, float | np.floating):
        return "—" if math.isnan(v) else f"{v:.{DIGITS}f}"
    return str(v)


def fmt_ci(mean: float, lo: float, hi: float) -> str:
    """'0.350 ± 0.159' (the half-width of the 95% interval); the mean alone when there is no interval."""
    if math.isnan(mean):
        return "—"
    return fmt(mean) if math.isnan(lo) or math.isnan(hi) else f"{fmt(mean)} ± {fmt((hi - lo) / 2)}"


def fmt_count(v: Any) -> str:
    """A count as an integer ('—' for missing: a merge left no value)."""
    return "—" if v is None or pd.isna(v) else str(int(v))


Column = tuple[str, Callable[[pd.Series], str]]  # (header, row -> cell)


def text(col: str, header: str | None = None) -> Column:
    return header or col, lambda r: str(r[col])


def count(col: str, header: str | None = None) -> Column:
    return header or col, lambda r: fmt_count(r.get(col))


def number(col: Any, header: str | None = None) -> Column:
    return header or str(col), lambda r: fmt(r[col])


def with_ci(col: str, header: str | None = None) -> Column:
    """mean ± half-width from columns col / col_lo / col_hi (or mean / lo / hi when col is "mean")."""
    lo, hi = ("lo", "hi") if col == "mean" else (f"{col}_lo", f"{col}_hi")
    return header or col, lambda r: fmt_ci(r[col], r[lo], r[hi]) if col in r else "—"


def md_table(table: pd.DataFrame, columns: list[Column]) -> str:
    """A markdown table with one row per table row, each column's cell from its function."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for _, r in table.iterrows()]
    return "\n".join(lines) + "\n"


def headline_md(table: pd.DataFrame, k: str) -> str:
    return md_table(
        table,
        [
            text("model"),
            text("dataset"),
            text("demos", "N"),
            ("pair", lambda r: pair_name(r["pair_type"])),
            number("accuracy_a", "acc a"),
            number("accuracy_b", "acc b"),
            with_ci("overlap@k", f"overlap@{k}"),
            with_ci("floor_overlap@k", f"floor overlap@{k}"),
            with_ci("ocs", "OCS"),
            with_ci("floor_ocs", "floor OCS"),
            text("verdict", "GD ≈ ICL?"),
            count("n"),
        ],
    )


def sparsity_md(table: pd.DataFrame) -> str:
    thresholds = sorted(
        (c for c in table.columns if c not in ("source", "model", "method", "matrix")), reverse=True
    )
    keys = [text("source"), text("model"), text("method"), text("matrix")]
    return md_table(table, keys + [number(t, f"< {t:g}") for t in thresholds])


def section(title: str, how_to_read: str, body: str, figure: Path | None) -> str:
    """A report section: its figure (relative link), one sentence on how to read it, then its table."""
    fig = f"![{title}]({FIGURES}/{figure.name})\n\n" if figure else ""
    return f"## {title}\n\n{fig}{how_to_read}\n\n{body}\n"


def header_md(sweep: Sweep) -> str:
    s = sweep.status
    other = sum(n for k, n in s.items() if k not in ("done", "failed"))
    return (
        f"# ICL vs GD: report of {sweep.folder.name}\n\n"
        f"Sweep folder: `{sweep.folder}`\n\n"
        f"Jobs: {sum(s.values())} ({s.get('done', 0)} done, {s.get('failed', 0)} failed, {other} unfinished); "
        f"{len(sweep.jobs)} finished language-model jobs are reported. Every ± is the half-width of a 95% "
        "t-interval over queries and seeds.\n\n"
    )


# ---------------------------------------------------------------------------------------------------------
# Sections: table, figure, markdown


@dataclass
class Section:
    name: str  # W&B key and table name
    table: pd.DataFrame
    markdown: str
    figure: Path | None


def agreement_section(sweep: Sweep, fig_dir: Path) -> Section | None:
    if sweep.queries.empty:
        return None
    k = str(sweep.top_k or "K")
    curves = agreement_curves(sweep.queries)
    labels = {m: lbl.replace("@K", f"@{k}") for m, lbl in AGREEMENT.items()}
    fig = plots.agreement_vs_demos(curves, fig_dir / FIG_AGREEMENT, labels)
    table = headline_table(sweep.queries)
    body = (
        headline_md(table, k)
        + f"\n_a / b = top-1 accuracy of the pair's first / second method. {BELOW}: on overlap@{k} or OCS the pair's "
        "95% interval lies wholly below that of ICL against itself in another order; within floor: the intervals "
        "overlap; n/a: the sweep has no ICL order pair for that row._\n"
        if len(table)
        else "Only the ICL-vs-ICL order noise floor is in this sweep: no method pair to judge against it.\n"
    )
    how = (
        f"Does GD agree with ICL beyond the order noise floor? Each solid line is a method pair's overlap@{k} / OCS "
        "(higher = more alike); a pair whose band stays below the dashed ICL-vs-ICL floor differs from ICL by more "
        "than reordering the demonstrations does."
    )
    return Section("headline", table, section("GD vs ICL against the order noise floor", how, body, fig), fig)


def accuracy_section(sweep: Sweep, fig_dir: Path) -> Section:
    table = accuracy_table(sweep.accuracy)
    fig = plots.accuracy_vs_demos(accuracy_curves(table), fig_dir / FIG_ACCURACY)
    how = (
        "Label accuracy of each (model, method) against the number of demonstrations; the band is the 95% "
        "interval (jobs in the reference demo order only)."
    )
    keys = [text("model"), text("dataset"), text("method"), text("demos", "N")]
    body = md_table(table, [*keys, with_ci("mean", "label accuracy"), count("n")])
    return Section("accuracy", table, section("Accuracy", how, body, fig), fig)


def dai_section(sweep: Sweep, fig_dir: Path) -> Section | None:
    if sweep.dai_layers.empty and sweep.dai_queries.empty:
        return None
    table = dai_table(sweep.dai_layers, sweep.dai_queries)
    fig = None
    if len(sweep.dai_layers):
        fig = plots.layer_curves(dai_layer_curves(sweep.dai_layers), fig_dir / FIG_DAI, DAI_ROWS)
    how = (
        "Dai et al.'s test per model, the untrained control (random weights) beside the trained model: SimAOU "
        "above its random-update baseline and SimAM (ICL vs GD) above SimAM (ICL vs zero-shot) mean GD moves the "
        "attention the way ICL does; Rec2FTP is the share of GD's fixes (zero-shot wrong, GD right) that ICL also "
        "gets right."
    )
    body = md_table(
        table,
        [
            *(text(k) for k in DAI_KEYS),
            with_ci("rec2ftp", "Rec2FTP"),
            count("n_ft_fixed", "GD fixes"),
            with_ci("simaou", "SimAOU"),
            with_ci("simaou_random", "SimAOU random"),
            with_ci("simam_ft", "SimAM ICL-GD"),
            with_ci("simam_zs", "SimAM ICL-ZS"),
            count("n", "queries"),
        ],
    )
    return Section("dai", table, section("Dai et al.: does GD move attention like ICL?", how, body, fig), fig)


def order_section(sweep: Sweep, fig_dir: Path) -> Section | None:
    if sweep.orders.empty:
        return None
    table = order_table(sweep.orders)
    fig = plots.order_sensitivity(order_points(sweep.orders), fig_dir / FIG_ORDER)
    how = (
        "Per query, the std across demo orders of each label's probability (0 = order-free); ICL and batch-size-1 "
        "GD see the demos in order, full-batch GD should sit at 0."
    )
    keys = [text("model"), text("dataset"), text("demos", "N"), text("method")]
    body = md_table(
        table, [*keys, with_ci("std", "std across orders"), count("n_orders", "orders"), count("n")]
    )
    return Section("order_sensitivity", table, section("Order sensitivity", how, body, fig), fig)


def sparsity_section(sweep: Sweep, fig_dir: Path) -> Section | None:
    gd = sweep.sparsity
    if gd.empty:
        return None
    construction = construction_sparsity(sorted(gd["threshold"].unique()))
    table = sparsity_table(gd, construction)
    relative = bool(sweep.jobs["sparsity_relative"].any())
    xlabel = "threshold on |Δw| / max|Δw| (log scale)" if relative else "threshold on |Δw| (log scale)"
    fig = plots.sparsity(
        sparsity_curves(gd), construction_curves(construction), fig_dir / FIG_SPARSITY, xlabel
    )
    scale = "relative (|Δw| / max|Δw| per matrix)" if relative else "absolute (|Δw|)"
    how = (
        "Fraction of weight-update entries below each threshold per matrix type (mean over layers): the higher a "
        "curve stays at small thresholds, the sparser the update. Dashed: the regression lab's one-step-GD "
        f"construction (d={CONSTRUCTION_D}, n={CONSTRUCTION_N}), whose thresholds are relative (|w| / max|w|); "
        f"the GD update's are {scale}."
    )
    return Section("sparsity", table, section("Sparsity of the GD update", how, sparsity_md(table), fig), fig)


def evolution_section(sweep: Sweep, fig_dir: Path) -> Section | None:
    table = evolution_table(sweep.accuracy, sweep.queries, sweep.dai_layers)
    if table.empty:
        return None
    labels = {m: lbl.replace("@K", f"@{sweep.top_k or 'K'}") for m, lbl in EVOLUTION.items()}
    fig = plots.weight_evolution(evolution_curves(table), fig_dir / FIG_EVOLUTION, labels)
    how = "Each metric at each pretraining checkpoint (x: the step parsed from the revision name)."
    keys = [text(k) for k in ("model", "dataset", "metric", "line", "revision", "step")]
    body = md_table(table, [*keys, with_ci("mean", "value"), count("n")])
    return Section("weight_evolution", table, section("Weight evolution", how, body, fig), fig)


SECTIONS = (
    agreement_section,
    accuracy_section,
    dai_section,
    order_section,
    sparsity_section,
    evolution_section,
)


# ---------------------------------------------------------------------------------------------------------
# Report, W&B, CLI


def headline_summary(table: pd.DataFrame) -> dict[str, Any]:
    """W&B summary keys for the headline rows: agreement, floor and verdict per (model, dataset, N, pair)."""
    out: dict[str, Any] = {}
    for _, r in table.iterrows():
        prefix = f"report/{r['model']}/{r['dataset']}/demos={r['demos']}/{r['pair_type']}"
        for col in ("overlap@k", "ocs", "floor_overlap@k", "floor_ocs", "accuracy_a", "accuracy_b"):
            if col in r and pd.notna(r[col]):
                out[f"{prefix}/{col}"] = float(r[col])
        out[f"{prefix}/verdict"] = r["verdict"]
    return out


def _log(sweep: Sweep, sections: list[Section], report: Path, logger_cfg: Any) -> None:
    from icl_gd.tracking import make_tracker  # noqa: PLC0415

    tracker = make_tracker(
        logger_cfg,
        output_dir=sweep.folder,
        config={"sweep_dir": str(sweep.folder)},
        group=sweep.folder.name,
        job_type="report",
        name=f"report-{sweep.folder.name}",
    )
    try:
        for s in sections:
            tracker.log_table(f"report/{s.name}", s.table)
            if s.figure:
                tracker.log_image(f"report/{s.figure.stem}", s.figure)
        summary = {f"report/jobs_{k}": n for k, n in sweep.status.items()}
        headline = next((s.table for s in sections if s.name == "headline"), pd.DataFrame())
        tracker.summary({**summary, **headline_summary(headline)})
        tracker.log_artifact(report, name=f"report-{sweep.folder.name}", type="report")
    finally:
        tracker.finish()


def pick_logger(override: Any, jobs_logger: dict[str, Any]) -> Any:
    """The report run's logger: the jobs' own, or `override` filled in from the jobs' when both name the same
    logger (so `--logger wandb` keeps the sweep's project, entity and tags)."""
    if override is None:
        return jobs_logger
    if override.get("name") == jobs_logger.get("name"):
        return {**jobs_logger, **override}
    return override


def build_report(sweep_dir: str | Path, logger_cfg: Any = None) -> Path:
    """Write S/report.md and S/figures/*.png for a sweep folder, log them to W&B; returns report.md's path.

    logger_cfg: a `logger` node ({name: none} / {name: wandb, ...}); None = the jobs' own logger.
    """
    sweep = load_sweep(Path(sweep_dir))
    fig_dir = sweep.folder / FIGURES
    sections = [s for make in SECTIONS if (s := make(sweep, fig_dir)) is not None]
    path = sweep.folder / REPORT
    io.write_text(path, header_md(sweep) + "\n".join(s.markdown for s in sections))
    log.info("report of %s: %s (%d figures)", sweep.folder, path, sum(s.figure is not None for s in sections))
    _log(sweep, sections, path, pick_logger(logger_cfg, sweep.logger))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write report.md and figures for a sweep folder (ICL vs GD)."
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (hydra.sweep.dir) of a multirun")
    parser.add_argument(
        "--logger",
        choices=["wandb", "none"],
        default=None,
        help="override the jobs' logger for the report run",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        path = build_report(args.sweep_dir, logger_cfg={"name": args.logger} if args.logger else None)
    except (FileNotFoundError, EmptySweepError) as e:
        parser.error(str(e))
    print(path, flush=True)


if __name__ == "__main__":
    main()
