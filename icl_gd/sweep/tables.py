"""The sweep's tables: interval reductions, and the pure table builders of the report (frames in, frames out).

Every interval is a two-level cluster bootstrap over demo sets (seeds) and their queries (`icl_gd.sweep.stats`),
computed by `wide_ci` (one column triple per value) or `long_ci` (one value, the columns the plots take).
"""

from __future__ import annotations

import re

import pandas as pd

from icl_gd.analysis.sparsity import STD_RELATIVE, weights_sparsity
from icl_gd.data.source import SHUFFLED_WORDS, SOURCE_WORDS
from icl_gd.linreg.constructions import construction_weights
from icl_gd.sweep.loading import META
from icl_gd.sweep.pair_types import (
    BOTH_SHUFFLED,
    BOTH_SOURCE,
    ORDER_PAIR,
    SHUFFLED_SUFFIX,
    SOURCE_SUFFIX,
    base_label,
    both_marker,
    control_source,
    is_control,
    is_order_pair,
    order_label,
)
from icl_gd.sweep.stats import ci, half_width, long_ci, wide_ci, with_half_widths  # noqa: F401 -- re-exported

AGREEMENT = {"overlap@k": "overlap@K (fraction of top-K shared)", "ocs": "OCS (cosine over shared top-K)"}
DAI_METRICS = ("simaou", "simaou_random", "simam_ft", "simam_zs")
# the same metrics as microsoft/LMOps and Deutch et al. compute them (analysis/dai.py), where the jobs have them
DAI_LMOPS_METRICS = (
    "simaou_lmops",
    "simaou_random_uniform_lmops",
    "simaou_unrelated_lmops",
    "simam_lmops",
    "simam_zs_lmops",
    "simam_diff_deutch",
    "kendall_example_lmops",
    "kendall_example_random_lmops",
)
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
CONSTRUCTION_D, CONSTRUCTION_N = 5, 10  # the regression lab's default dimension and context length
STEP = re.compile(r"(\d+)")


# ---------------------------------------------------------------------------------------------------------
# Interval reductions


# ---------------------------------------------------------------------------------------------------------
# The report's tables and curves


def pair_name(pair_type: str) -> str:
    """A pair type in words: 'icl_vs_gd(lr=0.001)' -> 'icl vs gd(lr=0.001)'; order pairs are named as noise floors
    ('gd_vs_gd_order' -> "gd vs gd in another order (gd's floor)"), the controls and the pairs among control jobs
    by what the control changed ('icl_vs_gd_shuffled_labels' -> 'icl vs gd on shuffled labels (control)',
    'icl_vs_gd_demos_from_agnews' -> 'icl vs gd with demos from agnews (control)')."""
    if pair_type == ORDER_PAIR:
        return "ICL vs ICL in another order (floor)"
    marker = both_marker(pair_type)
    both = f", both {_control_words(marker)}" if marker else ""
    label = order_label(pair_type)
    if label is not None:
        return f"{label} vs {label} in another order ({label}'s floor){both}"
    source = control_source(pair_type)
    if source is not None:
        head = pair_type.removesuffix(SOURCE_SUFFIX + source).replace("_vs_", " vs ", 1)
        return f"{head} with {SOURCE_WORDS} {source} (control)"
    if is_control(pair_type):
        return (
            pair_type.removesuffix(SHUFFLED_SUFFIX).replace("_vs_", " vs ", 1)
            + f" on {SHUFFLED_WORDS} (control)"
        )
    return pair_type.removesuffix(marker).replace("_vs_", " vs ") + both


def _control_words(marker: str) -> str:
    """How a `_both_...` marker reads: "on shuffled labels", "with demos from agnews"."""
    if marker == BOTH_SHUFFLED:
        return f"on {SHUFFLED_WORDS}"
    return f"with {SOURCE_WORDS} {marker.removeprefix(BOTH_SOURCE)}"


def _with_model(df: pd.DataFrame, col: str) -> pd.Series:
    """`col`, prefixed with the model label when the frame holds several models."""
    if df["model"].nunique() > 1:
        return df["model"].astype(str) + ": " + df[col].astype(str)
    return df[col].astype(str)


def accuracy_table(acc: pd.DataFrame) -> pd.DataFrame:
    """Label accuracy per (model, dataset, method, demos), pooling queries and seeds."""
    return long_ci(acc, ["model", "dataset", "method", "demos"], "correct")


def accuracy_curves(table: pd.DataFrame) -> pd.DataFrame:
    """The accuracy table with one `line` per (model, method), what the accuracy figure draws."""
    return table.assign(line=table["model"].astype(str) + " / " + table["method"].astype(str))


def agreement_curves(queries: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, pair, demos, metric): mean and CI of overlap@K and OCS; `floor` marks every order pair
    (a noise floor: ICL's, GD's, ...), `icl_floor` ICL's, the one verdicts test against."""
    parts = []
    for m in (m for m in AGREEMENT if m in queries):
        t = long_ci(queries, ["model", "dataset", "pair_type", "demos"], m).assign(metric=m)
        floor = t["pair_type"].map(is_order_pair)
        parts.append(
            t.assign(floor=floor, icl_floor=t["pair_type"] == ORDER_PAIR, pair=t["pair_type"].map(pair_name))
        )
    out = pd.concat(parts, ignore_index=True)
    return out.assign(line=_with_model(out, "pair"))


def against_icl(pair_types: pd.Series) -> pd.Series:
    """Which pairs a figure of agreement with ICL draws: the noise floors and every pair whose first method is ICL
    (controls included); pairs among other methods (gd(lr=a) vs gd(lr=b), gd vs zeroshot) are left to the tables,
    where they are. A preset with 12 GD variants drew 78 lines otherwise."""
    reference = ORDER_PAIR.split("_vs_", 1)[0]  # ICL: the floor's method, the one every verdict is about
    first = pair_types.astype(str).str.split("_vs_", n=1).str[0].str.split("(", n=1).str[0]
    return (first == reference) | pair_types.map(is_order_pair)


def dai_per_query(layers: pd.DataFrame) -> pd.DataFrame:
    """Each (job, query)'s Dai metrics averaged over layers: the unit the intervals pool."""
    metrics = [m for m in (*DAI_METRICS, *DAI_LMOPS_METRICS) if m in layers]
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
        present = [m for m in (*DAI_METRICS, *DAI_LMOPS_METRICS) if m in layers]
        parts.append(wide_ci(dai_per_query(layers), DAI_KEYS, present))
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


def order_points(orders: pd.DataFrame) -> pd.DataFrame:
    """One point per (job group, query) for the order figure: its dataset, its box (`group`) and its std."""
    return orders.assign(group=_with_model(orders, "method"))[["dataset", "group", "std"]]


UPDATE_MAX = "|Δw| / max|Δw|"  # the update's definitions of "small", each a row of the sparsity figure
UPDATE_ABS = "|Δw|"
UPDATE_STD = "|Δw| / std(w)"
CONSTRUCTION_DEFINITION = {
    "max": "|w| / max|w|",
    "std": "|w| / std(w)",
}  # the construction's, by weights_sparsity scale


def sparsity_definitions(gd: pd.DataFrame, relative: bool) -> pd.DataFrame:
    """The GD update's sparsity rows once per definition that they hold, in a `definition` column: `fraction` as
    |Δw| / max|Δw| (analysis.sparsity_relative) or |Δw|, and the std-relative |Δw| / std(w) where the job wrote it."""
    parts = [gd.assign(definition=UPDATE_MAX if relative else UPDATE_ABS)]
    if STD_RELATIVE in gd and gd[STD_RELATIVE].notna().any():
        parts.append(gd.assign(definition=UPDATE_STD, fraction=gd[STD_RELATIVE]))
    return pd.concat(parts, ignore_index=True)


def _update_definition(construction_scale: str, definitions: list[str]) -> str:
    """The update's row that a construction scale is drawn beside: std beside std, max beside the other one."""
    return UPDATE_STD if construction_scale == "std" else next(d for d in definitions if d != UPDATE_STD)


def sparsity_table(gd: pd.DataFrame, construction: pd.DataFrame) -> pd.DataFrame:
    """Fraction below each threshold per (source, definition, model, method, matrix): mean over layers, jobs,
    datasets. gd: rows with a `definition` (sparsity_definitions) or one plain definition; construction: rows of
    construction_sparsity (a `scale` column) or plain weights_sparsity rows (|w| / max|w|)."""
    if len(gd) and "definition" not in gd:
        gd = gd.assign(definition=UPDATE_ABS)
    parts = [gd.assign(source="GD update")] if len(gd) else []
    if len(construction):
        scale = construction.get("scale", "max")
        parts.append(
            construction.assign(
                source="construction",
                model="regression lab",
                method="one GD step",
                definition=pd.Series(scale, index=construction.index).map(CONSTRUCTION_DEFINITION),
            )
        )
    df = pd.concat(parts, ignore_index=True)
    return df.pivot_table(
        index=["source", "definition", "model", "method", "matrix"], columns="threshold", values="fraction"
    ).reset_index()


def sparsity_curves(gd: pd.DataFrame) -> pd.DataFrame:
    """Per (model, method, definition, dataset, matrix, threshold): the fraction below, averaged over layers and
    jobs. gd: sparsity_definitions rows (plain rows count as one definition, |Δw|)."""
    if "definition" not in gd:
        gd = gd.assign(definition=UPDATE_ABS)
    mean = (
        gd.groupby(["model", "method", "definition", "dataset", "matrix", "threshold"], sort=True)["fraction"]
        .mean()
        .reset_index()
    )
    return mean.assign(line=_with_model(mean, "matrix"))


def construction_curves(construction: pd.DataFrame, definitions: list[str] | None = None) -> pd.DataFrame:
    """The construction's fraction below each threshold per matrix (mean over layers), each scale in the update's
    `definition` row it is drawn beside (definitions: the update's, in order); no rows when absent."""
    if construction.empty:
        return pd.DataFrame(columns=["definition", "line", "threshold", "fraction"])
    if "scale" not in construction:
        construction = construction.assign(scale="max")
    definitions = definitions or [UPDATE_ABS]
    construction = construction[
        (construction["scale"] == "max") | (UPDATE_STD in definitions)
    ]  # a std row only where the update has one
    mean = construction.groupby(["scale", "matrix", "threshold"], sort=True)["fraction"].mean().reset_index()
    return mean.assign(
        definition=[_update_definition(s, definitions) for s in mean["scale"]],
        line="construction: " + mean["matrix"].astype(str),
    ).drop(columns="scale")


def construction_sparsity(thresholds: list[float]) -> pd.DataFrame:
    """The regression lab's constructed weights' sparsity at these thresholds, at the lab's default d and n, under
    both relative definitions (a `scale` column: "max", "std")."""
    weights = construction_weights(CONSTRUCTION_D, CONSTRUCTION_N)
    return pd.concat(
        [
            weights_sparsity(weights, thresholds, scale=scale).assign(scale=scale)
            for scale in CONSTRUCTION_DEFINITION
        ],
        ignore_index=True,
    )


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
    """A line's name with its number of demonstrations: "icl, N=4"."""
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
    """The evolution table with its lines prefixed by the model when there are several models."""
    return table.assign(line=_with_model(table, "line"))
