"""The shared figure style: one fixed colour and marker per method and pair whatever else a figure holds, every
line style with markers, the legend outside the panels, PNG and PDF written side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from icl_gd import style as S

PDF_MAGIC = b"%PDF"
PNG_MAGIC = b"\x89PNG"
VARIANTS = ["icl vs gd(lr=0.001)", "icl vs gd(lr=0.01)"]


def test_a_method_keeps_its_colour_and_marker_whatever_the_figure_holds() -> None:
    one = S.colors(["zeroshot", "icl", "gd"])
    other = S.colors(["gd", "lora"])
    assert one["gd"] == other["gd"] == S.METHOD_COLORS["gd"] == S.OKABE_ITO["vermillion"]
    assert one["icl"] == S.OKABE_ITO["blue"] and one["zeroshot"] == S.OKABE_ITO["green"]
    assert S.method_style("icl") == {"color": S.OKABE_ITO["blue"], "marker": "o"}
    # a variant keeps gd's marker, with a colour of its own fixed by its name (never a method's)
    variant = S.method_style("gd(lr=0.001)")
    assert variant["marker"] == "s" and variant == S.method_style("gd(lr=0.001)")
    assert variant["color"] not in S.METHOD_COLORS.values()


def test_a_pair_against_icl_takes_the_other_methods_look() -> None:
    assert S.pair_style("icl vs gd") == S.method_style("gd")
    assert S.pair_style("icl vs zeroshot") == S.method_style("zeroshot")
    control = S.pair_style("icl vs gd on shuffled labels (control)")
    assert control == S.method_style("gd")  # drawn dotted and hollow by the figure
    other = S.pair_style("gd vs zeroshot")
    assert other == S.pair_style("gd vs zeroshot") and other["color"] not in S.METHOD_COLORS.values()


def test_labels_of_one_figure_get_distinct_colours_fixed_by_name() -> None:
    names = [f"learned_{i}" for i in range(11)]
    assert len(set(S.colors(names).values())) == len(names)
    assert S.colors(["noise=0", "noise=0.5"]) == S.colors(["noise=0.5", "noise=0"])


def test_every_line_style_draws_markers_so_a_single_point_shows() -> None:
    assert all(style["marker"] for style in S.STYLES.values())
    assert S.MARKER_SIZE >= 5 and S.LEGEND_SIZE >= 8 and S.TICK_SIZE >= 8 and S.DPI >= 150


def test_save_writes_png_and_pdf_with_the_legend_right_of_the_panels(tmp_path: Path) -> None:
    fig, axes = S.figure(1, 2, "a title long enough to wrap over a two-panel figure " * 2)
    for ax in axes.flat:
        ax.plot([1], [0.5], label="icl", **S.method_style("icl"))
        ax.plot([1], [0.4], label="gd", **S.method_style("gd"))
    width = fig.get_figwidth()
    S.outside_legend(fig, axes.flat)
    assert fig.get_figwidth() > width  # the panels keep their size
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["icl", "gd"]  # once each
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert all(legend.x0 >= ax.get_window_extent().x1 for ax in axes.flat)
    assert "\n" in fig.get_suptitle()
    path = S.save(fig, tmp_path / "f.png")
    assert path.read_bytes()[:4] == PNG_MAGIC and path.with_suffix(".pdf").read_bytes()[:4] == PDF_MAGIC
    assert not plt.get_fignums()


@pytest.mark.parametrize("name", ["lsa", ""])
def test_no_legend_without_labels(name: str) -> None:
    fig, axes = S.figure(1, 1)
    axes[0][0].plot([0, 1], [0, 1], label=name or None)
    S.outside_legend(fig, axes.flat)
    assert len(fig.legends) == (1 if name else 0)
    plt.close(fig)


def test_the_wandb_plot_preview_draws_each_line_in_the_report_figures_colours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wandb_plots.png used matplotlib's cycle (gd blue there, vermillion in the report): now the same looks."""
    from icl_gd.sweep.wandb_plots import LineSeries, draw

    acc = LineSeries(
        "plots/d/acc",
        "t",
        "d",
        "label_accuracy",
        "accuracy",
        ["gd", "icl"],
        [[2, 4]] * 2,
        [[0.5, 0.6]] * 2,
        [],
    )
    floor = "ICL vs ICL in another order (floor)"
    agr = LineSeries(
        "plots/d/ocs",
        "t",
        "d",
        "ocs",
        "agreement",
        [floor, "icl vs gd", *VARIANTS],
        [[2, 4]] * 4,
        [[0.9, 0.9], [0.4, 0.5], [0.3, 0.3], [0.2, 0.2]],
        [floor],
    )
    seen: dict[str, tuple] = {}
    real_save = S.save

    def keep(fig: plt.Figure, path: Path) -> Path:
        for ax in fig.axes:
            for line in ax.get_lines():
                seen[line.get_label()] = (line.get_color(), line.get_marker(), line.get_linestyle())
        return real_save(fig, path)

    monkeypatch.setattr("icl_gd.sweep.wandb_plots.save", keep)
    draw([acc, agr], tmp_path / "w.png")
    assert seen["gd"][:2] == (S.method_style("gd")["color"], S.method_style("gd")["marker"])
    assert seen["icl"][:2] == (S.method_style("icl")["color"], "o")
    assert seen["icl vs gd"][:2] == seen["gd"][:2]  # a pair against ICL takes the other method's look
    assert seen[floor] == (S.FLOOR_COLOR, "x", "--")
    # a method's variants told apart exactly as in the report's agreement figure
    report = S.pair_colors([floor, "icl vs gd", *VARIANTS])
    assert [seen[v][0] for v in VARIANTS] == [report[v] for v in VARIANTS]
    assert len({seen[v][0] for v in VARIANTS}) == len(VARIANTS)
    assert (tmp_path / "w.png").read_bytes()[:4] == PNG_MAGIC and (tmp_path / "w.pdf").exists()


def test_the_sparsity_figure_keeps_the_constructions_lines_apart_from_the_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seventeen matrices overran the palette (wv and proj_wv shared a colour): the construction's lines are now
    one dark grey with a marker each, the model's matrices keep distinct colours."""
    import pandas as pd

    from icl_gd.sweep import plots

    model = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "up_proj",
        "down_proj",
        "gate_proj",
        "embed_tokens",
        "norm",
    ]
    built = ["proj", "proj_wv", "wk", "wq", "wk_t_wq", "wv"]
    th = [1e-3, 1e-2]
    gd = pd.DataFrame(
        [
            {"dataset": "d", "method": "gd", "definition": "x", "line": m, "threshold": t, "fraction": 0.5}
            for m in model
            for t in th
        ]
    )
    construction = pd.DataFrame(
        [
            {"definition": "x", "line": f"construction: {m}", "threshold": t, "fraction": 0.9}
            for m in built
            for t in th
        ]
    )
    seen: dict[str, tuple] = {}
    real_save = S.save

    def keep(fig: plt.Figure, path: Path) -> Path:
        for ax in fig.axes:
            for line in ax.get_lines():
                seen[line.get_label()] = (line.get_color(), line.get_marker())
        return real_save(fig, path)

    monkeypatch.setattr(plots, "save", keep)
    plots.sparsity(gd, construction, tmp_path / "s.png")
    assert len({seen[m][0] for m in model}) == len(model)  # one colour per model matrix
    grey = {seen[f"construction: {m}"] for m in built}
    assert {c for c, _ in grey} == {plots.CONSTRUCTION_COLOR} and len({mk for _, mk in grey}) == len(built)


def test_variants_of_one_method_get_distinct_colours_and_the_method_keeps_its_own() -> None:
    pairs = ["icl vs gd", *[f"icl vs gd(lr={i})" for i in range(12)], "icl vs zeroshot", "gd vs zeroshot"]
    got = S.pair_colors(pairs)
    assert got["icl vs gd"] == S.METHOD_COLORS["gd"] and got["icl vs zeroshot"] == S.METHOD_COLORS["zeroshot"]
    variants = [got[f"icl vs gd(lr={i})"] for i in range(12)]
    assert len(set(variants)) == 12 and S.METHOD_COLORS["gd"] not in variants
    assert got["gd vs zeroshot"] == S.pair_style("gd vs zeroshot")["color"]
