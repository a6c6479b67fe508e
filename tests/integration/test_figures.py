"""The report's figures and headline agree with each other and with the style: fixed colours across figures, no
floor drawn where one demonstration has one order, no verdict for a pair the ICL floor says nothing about, and
label accuracy in the headline as in the accuracy figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from icl_gd import style as S
from icl_gd.sweep import plots, sections, tables, verdicts
from icl_gd.sweep.pair_types import ORDER_PAIR


def rows(pair: str, a: str, b: str, demos: int, overlap: list[float], **kw: Any) -> pd.DataFrame:
    n = len(overlap)
    return pd.DataFrame(
        {
            "pair_type": pair,
            "method_a": a,
            "method_b": b,
            "model": "m",
            "dataset": "sst2",
            "demos": demos,
            "seed": 0,
            "query_id": [f"q{i}" for i in range(n)],
            "overlap@k": overlap,
            "ocs": overlap,
            "accuracy_a": kw.get("top1_a", 0.0),
            "accuracy_b": kw.get("top1_b", 0.0),
            "label_accuracy_a": kw.get("label_a", 1.0),
            "label_accuracy_b": kw.get("label_b", 0.5),
        }
    )


def sweep_queries() -> pd.DataFrame:
    """N = 1 and 2 of icl vs gd, gd vs zeroshot, gd(bs=1) vs gd(bs=all), icl vs zeroshot and the ICL floor."""
    parts = []
    for n in (1, 2):
        parts += [
            rows("icl_vs_gd", "icl", "gd", n, [0.1, 0.2, 0.1, 0.2]),
            rows("gd_vs_zeroshot", "gd", "zeroshot", n, [0.5, 0.6, 0.5, 0.6]),
            rows("gd(bs=1)_vs_gd(bs=all)", "gd(bs=1)", "gd(bs=all)", n, [0.7, 0.8, 0.7, 0.8]),
            rows("icl_vs_zeroshot", "icl", "zeroshot", n, [0.3, 0.4, 0.3, 0.4]),
            rows(ORDER_PAIR, "icl", "icl", n, [1.0, 1.0, 1.0, 1.0] if n == 1 else [0.9, 1.0, 0.9, 1.0]),
        ]
    return pd.concat(parts, ignore_index=True)


def test_only_pairs_against_icl_get_a_verdict() -> None:
    table = verdicts.headline_table(sweep_queries()).set_index(["demos", "pair_type"])
    for n in (1, 2):
        assert table.loc[(n, "gd_vs_zeroshot"), "verdict"] == verdicts.NOT_A_CANDIDATE
        assert table.loc[(n, "gd(bs=1)_vs_gd(bs=all)"), "verdict"] == verdicts.NOT_A_CANDIDATE
        assert table.loc[(n, "icl_vs_zeroshot"), "verdict"] == verdicts.NOT_A_CANDIDATE
    assert table.loc[(1, "icl_vs_gd"), "verdict"] == verdicts.ONE_ORDER
    assert table.loc[(2, "icl_vs_gd"), "verdict"] == verdicts.BELOW


def test_the_headline_shows_label_accuracy_as_the_accuracy_figure_does() -> None:
    table = verdicts.headline_table(sweep_queries())
    assert "label_accuracy_a" in table and "accuracy_a" not in table
    assert table["label_accuracy_a"].eq(1.0).all() and table["label_accuracy_b"].eq(0.5).all()
    md = sections.headline_md(table, "10")
    assert "| label acc a | label acc b |" in md and "top-1" not in md
    # a comparison written before label accuracy was stored: top-1, said so
    old = verdicts.headline_table(sweep_queries().drop(columns=["label_accuracy_a", "label_accuracy_b"]))
    assert "| top-1 acc a | top-1 acc b |" in sections.headline_md(old, "10")


def _lines(path: Path, monkeypatch: pytest.MonkeyPatch, draw: Any) -> dict[str, Any]:
    """label -> Line2D of the figure `draw()` makes (kept open by stubbing the writer)."""
    kept: list[plt.Figure] = []
    monkeypatch.setattr(plots, "save", lambda fig, p: kept.append(fig) or p)
    draw()
    (fig,) = kept
    out = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    plt.close(fig)
    return out


def test_figures_share_colours_and_draw_no_floor_for_one_demo(tmp_path: Path, monkeypatch) -> None:
    curves = tables.agreement_curves(sweep_queries())
    agr = _lines(
        tmp_path, monkeypatch, lambda: plots.agreement_vs_demos(curves, tmp_path / "g.png", tables.AGREEMENT)
    )
    floor = agr[tables.pair_name(ORDER_PAIR)]
    assert list(floor.get_xdata()) == [2]  # N = 1 has one order: no floor at 1.0
    assert mcolors.same_color(agr["icl vs gd"].get_color(), S.METHOD_COLORS["gd"])
    assert agr["icl vs gd"].get_marker() == S.METHOD_MARKERS["gd"]
    acc = pd.DataFrame(
        [
            {"model": "m", "dataset": "sst2", "method": m, "demos": 1, "mean": 0.5, "lo": 0.4, "hi": 0.6}
            for m in ("zeroshot", "icl", "gd")
        ]
    )
    curves = tables.accuracy_curves(acc)
    lines = _lines(tmp_path, monkeypatch, lambda: plots.accuracy_vs_demos(curves, tmp_path / "a.png"))
    assert set(lines) >= {"zeroshot", "icl", "gd"}
    for method in ("zeroshot", "icl", "gd"):
        assert mcolors.same_color(lines[method].get_color(), S.METHOD_COLORS[method])
        assert lines[method].get_marker() == S.METHOD_MARKERS[method]  # one demo count: a visible point


def test_every_report_figure_is_written_as_png_and_pdf(tmp_path: Path) -> None:
    curves = tables.agreement_curves(sweep_queries())
    path = plots.agreement_vs_demos(curves, tmp_path / "g.png", tables.AGREEMENT)
    assert path.suffix == ".png" and path.with_suffix(".pdf").stat().st_size > 0


def test_one_demo_count_draws_a_row_per_pair_with_the_floor_on_top(tmp_path: Path, monkeypatch) -> None:
    """With one N every line is one point stacked at one x: the figure is a dot plot, a named row per pair."""
    q = sweep_queries()
    curves = tables.agreement_curves(q[q["demos"] == 2])
    kept: list[plt.Figure] = []
    monkeypatch.setattr(plots, "save", lambda fig, p: kept.append(fig) or p)
    plots.agreement_vs_demos(curves, tmp_path / "g.png", tables.AGREEMENT)
    (fig,) = kept
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names[0] == tables.pair_name(ORDER_PAIR) and "icl vs gd" in names
    assert len(names) == curves[curves["metric"] == "overlap@k"]["line"].nunique()
    assert "N = 2" in fig.get_suptitle()
    # the pair keeps its colour; the floor is also a dashed reference line
    gd_color = [line.get_color() for line in ax.get_lines() if line.get_marker() == S.METHOD_MARKERS["gd"]]
    assert any(mcolors.same_color(c, S.METHOD_COLORS["gd"]) for c in gd_color)
    assert any(line.get_linestyle() == "--" for line in ax.get_lines())
    plt.close(fig)


def test_the_agreement_figure_draws_pairs_with_icl_and_the_floors_only() -> None:
    types = pd.Series(
        [
            "icl_vs_gd(lr=0.001)",
            "icl_vs_gd_shuffled_labels",
            ORDER_PAIR,
            "gd_vs_gd_order",
            "gd(lr=0.001)_vs_gd(lr=0.01)",
            "gd_vs_zeroshot",
        ]
    )
    assert list(tables.against_icl(types)) == [True, True, True, True, False, False]


def test_a_sweep_of_gd_variants_only_gets_its_table_and_no_agreement_figure(tmp_path: Path) -> None:
    """No pair with ICL: the report crashed drawing an empty figure (0 rows); now the section is its table alone."""
    from types import SimpleNamespace

    q = sweep_queries()
    only_gd = q[q["pair_type"] == "gd(bs=1)_vs_gd(bs=all)"]
    section = sections.agreement_section(SimpleNamespace(queries=only_gd, top_k=10), tmp_path)
    assert section.figure is None and not list(tmp_path.glob("*.png"))
    assert "gd(bs=1)_vs_gd(bs=all)" in section.markdown or "gd(bs=1) vs gd(bs=all)" in section.markdown
