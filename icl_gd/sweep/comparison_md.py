"""The comparison's markdown (comparison.md) and its console summary: the pair table, the paired verdicts, the
shares of ICL's shift, the order sensitivities, and the legends that say how to read each."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from icl_gd import io
from icl_gd.sweep.markdown import fmt_ci, md_table, number, text, with_half_width
from icl_gd.sweep.pair_types import (
    BOTH_SHUFFLED,
    BOTH_SOURCE,
    GD_ORDER_PAIR,
    ORDER_PAIR,
    SHUFFLED_SUFFIX,
    SOURCE_SUFFIX,
)
from icl_gd.sweep.stats import half_width
from icl_gd.sweep.summary import SHARES

if TYPE_CHECKING:
    from icl_gd.sweep.jobs import SweepScan

TABLE_METRICS = (
    "overlap@k",
    "ocs",
    "ocs_n_common",
    "top1_agreement",
    "label_tv",
    "label_js",
    "tv",
    "js",
    "kl",
)
ORDER_DIGITS = 4  # order sensitivities are small probabilities: one more decimal than the other tables
# the console's short table: the primary metrics' candidates
CONSOLE_METRICS = ("overlap@k", "label_tv", "tv")
LEGEND = (
    "\n_a = the first method of the pair (the reference), b = the second. overlap@k, ocs (overlap cosine "
    "similarity) and top1_agreement: higher = more alike; tv, js, kl (full vocabulary) and label_tv, label_js "
    "(over the label words): lower = more alike; ocs_n_common: the tokens OCS is computed over (OCS is 1 whenever "
    "one token is shared); kl is a lower bound where a stored float16 probability is 0 (floored at 1e-12). ± is the half-width of a two-level cluster-bootstrap interval "
    "(demo sets, then queries; with one demo set it covers query sampling only). "
    f"`{ORDER_PAIR}` is the noise floor: ICL against ICL with the same demos in another order; `{GD_ORDER_PAIR}` "
    f"(where run) is GD's: GD against GD with the same demos in another order. `*{SHUFFLED_SUFFIX}` is the null "
    "control: ICL against a job whose demos' answers are permuted among them (shuffled labels); "
    f"`*{BOTH_SHUFFLED}`: both jobs on shuffled labels. `*{SOURCE_SUFFIX}T` is the other null control: ICL against "
    f"a job whose demos come from task T (demo_source=T); `*{BOTH_SOURCE}T`: both jobs on T's demos._\n"
)
VERDICT_LEGEND = (
    "\n_d = agreement(pair) - agreement(ICL in another order) per query on the same queries, signed so that d > 0 "
    "is more alike to ICL; mean and two-level cluster-bootstrap interval (demo sets, then queries); p its bootstrap "
    "p-value, Holm-adjusted over the table._\n"
)
SHARE_LEGEND = (
    "\n_1 - D(X, ICL) / D(zero-shot, ICL) over each cell (tv, js: full vocabulary; label_: over the label words): "
    "1 = answers like ICL, 0 = no closer than zero-shot. The icl_vs_icl_order row is the floor on this scale._\n"
)
NO_PAIRS = (
    "\n_No comparable pairs: no two finished jobs differ only in the method, or only in order_seed with "
    "another realised demo order._\n"
)
ORDER_LEGEND = (
    "\n_Per query, the standard deviation across demo orders of each label word's probability, averaged "
    "over labels; mean ± half-width of the cluster-bootstrap interval (demo sets, then queries). 0 = the order does not matter._\n"
)


VERDICT_COLUMNS = [
    text("dataset"),
    text("demos"),
    text("pair_type", "pair"),
    text("metric", "primary metric"),
    ("d vs floor", lambda r: f"{r['d_mean']:+.3f} [{r['d_lo']:+.3f}, {r['d_hi']:+.3f}]"),
    number("p"),
    number("p_holm", "p (Holm)"),
    text("verdict"),
    text("n_clusters", "demo sets"),
]


def to_markdown(table: pd.DataFrame) -> str:
    """A readable table: mean ± half-width of the 95% interval."""
    metrics = [m for m in ("accuracy_a", "accuracy_b", *TABLE_METRICS) if m in table.columns]
    keys = [text("model"), text("dataset"), text("demos"), text("pair_type", "pair"), text("n")]
    keys.append(text("n_clusters", "demo sets"))
    if table["eval"].nunique() > 1:  # settings differ: each row pools only equal ones, so say which
        keys.insert(3, text("eval"))
    return md_table(table, [*keys, *(with_half_width(m, missing="") for m in metrics)]) + LEGEND


def _pooled(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's rows pooled over demo sets (no seed)."""
    return summary[summary["seed"].isna()] if "seed" in summary else summary


def _tests(pooled: pd.DataFrame) -> pd.DataFrame:
    """The pooled rows that carry a paired test's verdict."""
    return pooled[pooled["verdict"].notna()] if "verdict" in pooled else pooled.iloc[0:0]


def verdict_markdown(summary: pd.DataFrame) -> str:
    """The paired tests against the order floor and the normalised shares, from the pooled summary rows."""
    pooled = _pooled(summary)
    tests = _tests(pooled)
    shares = pooled[pooled["metric"].isin(list(SHARES.values()))]  # not ocs_n_common, a token count
    out = ""
    if len(tests):
        out += (
            "\n## Verdicts (paired test against the ICL-order floor)\n\n"
            + md_table(tests, VERDICT_COLUMNS)
            + VERDICT_LEGEND
        )
    if len(shares):
        cols = [
            text("dataset"),
            text("demos"),
            text("pair_type", "pair"),
            text("metric"),
            ("share", lambda r: fmt_ci(r["mean"], r["ci_lo"], r["ci_hi"])),
        ]
        out += (
            "\n## Share of ICL's shift from zero-shot reproduced\n\n" + md_table(shares, cols) + SHARE_LEGEND
        )
    return out


def _order_cell(r: pd.Series) -> str:
    """'0.0123 ± 0.0045': an order_table row's mean std and its half-width, at ORDER_DIGITS."""
    return f"{r['std']:.{ORDER_DIGITS}f} ± {half_width(r['std_lo'], r['std_hi']):.{ORDER_DIGITS}f}"


def order_markdown(table: pd.DataFrame) -> str:
    """Mean order sensitivity per method (an `order_table`): the std across demo orders of each label's probability."""
    keys = [text(k) for k in ("model", "dataset", "demos", "method")]
    columns = [*keys, text("n_orders", "orders"), text("n"), ("std of label prob", _order_cell)]
    return md_table(table, columns) + ORDER_LEGEND


def left_out_md(scan: SweepScan) -> str:
    """A line under the title naming how many jobs of the folder are not compared, and why; "" when none."""
    parts = [
        f"{len(scan.failed)} failed",
        f"{len(scan.unreadable)} whose files do not read back",
        f"{len(scan.unfinished)} not finished",
    ]
    counts = (len(scan.failed), len(scan.unreadable), len(scan.unfinished))
    said = [p for p, n in zip(parts, counts, strict=True) if n]
    if not said:
        return ""
    return f"\n_Not compared: {', '.join(said)} (each job's {io.STATUS} and the log say which and why)._\n"


def console_markdown(title: str, table: pd.DataFrame, summary: pd.DataFrame, full: str) -> str:
    """What the console shows at the end of a comparison: a short table (the primary metrics' candidates, each
    row under 120 characters), the verdicts, and where the full tables are (`full`, comparison.md)."""
    keys = [text("dataset"), text("demos", "N"), text("pair_type", "pair"), text("n_clusters", "demo sets")]
    if table["model"].nunique() > 1:
        keys.insert(0, text("model"))
    metrics = [m for m in CONSOLE_METRICS if m in table.columns]
    short = md_table(table, [*keys, *(with_half_width(m, missing="") for m in metrics)])
    tests = _tests(_pooled(summary))
    verdicts = "\n" + md_table(tests, VERDICT_COLUMNS) if len(tests) else ""
    return f"{title}\n{short}{verdicts}\nAll metrics, shares and legends: {full}\n"
