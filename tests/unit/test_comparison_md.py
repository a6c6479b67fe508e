"""The console's summary of a comparison: short lines, the verdicts, and where the full tables are."""

from __future__ import annotations

import pandas as pd

from icl_gd.sweep.comparison_md import CONSOLE_METRICS, TABLE_METRICS, console_markdown, to_markdown

CONSOLE_WIDTH = 120


def _table() -> pd.DataFrame:
    row = {"model": "smollm2_135m_instruct_q4_1", "dataset": "present_past", "eval": "k10", "n": 30}
    rows = []
    for n, pair in [(2, "icl_vs_gd"), (2, "icl_vs_icl_order"), (8, "icl_vs_gd")]:
        r = {**row, "demos": n, "pair_type": pair, "n_clusters": 1, "accuracy_a": 0.9, "accuracy_b": 0.8}
        for m in TABLE_METRICS:
            r[m], r[f"{m}_ci"] = 0.5, 0.05
        rows.append(r)
    return pd.DataFrame(rows)


def _summary() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "seed": None,
                "dataset": "present_past",
                "demos": 2,
                "pair_type": "icl_vs_gd",
                "metric": "overlap@k",
                "d_mean": -0.413,
                "d_lo": -0.467,
                "d_hi": -0.357,
                "p": 0.001,
                "p_holm": 0.003,
                "verdict": "below floor",
                "n_clusters": 1,
            }
        ]
    )


def test_the_console_gets_a_short_table_the_verdicts_and_the_path_of_the_full_one() -> None:
    table = _table()
    out = console_markdown("# Comparison of 3 jobs in s", table, _summary(), "s/comparison.md")
    lines = out.splitlines()
    assert max(map(len, lines)) < CONSOLE_WIDTH < max(map(len, to_markdown(table).splitlines()))
    header = next(line for line in lines if line.startswith("| dataset"))
    assert header == "| dataset | N | pair | demo sets | " + " | ".join(CONSOLE_METRICS) + " |"
    assert (
        "| present_past | 2 | icl_vs_gd | overlap@k | -0.413 [-0.467, -0.357] | 0.001 | 0.003 | below floor | 1 |"
        in out
    )
    assert lines[-1] == "All metrics, shares and legends: s/comparison.md"
    assert "model" not in header  # one model: no column for it


def test_several_models_get_a_model_column() -> None:
    table = pd.concat([_table(), _table().assign(model="other")], ignore_index=True)
    out = console_markdown("# t", table, _summary().iloc[0:0], "c.md")
    assert "| model | dataset | N |" in out and "Verdicts" not in out and "below floor" not in out
