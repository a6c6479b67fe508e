"""The report's sections: for each question, its table, its figure and its markdown (how to read it, then the table).

A section appears only when its inputs exist: a sweep of ICL jobs alone still gets a report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from icl_gd import io
from icl_gd.data.source import SHUFFLED_WORDS, SOURCE_WORDS, condition_words
from icl_gd.sweep import plots, trajectory_plots
from icl_gd.sweep import search as S
from icl_gd.sweep.loading import Sweep
from icl_gd.sweep.markdown import count, md_table, number, section, text, with_ci
from icl_gd.sweep.order import order_table
from icl_gd.sweep.pair_types import (
    GD_ORDER_PAIR,
    ORDER_PAIR,
    control_source,
    is_both_control,
    is_control,
    is_order_pair,
)
from icl_gd.sweep.tables import (
    AGREEMENT,
    CONSTRUCTION_D,
    CONSTRUCTION_N,
    DAI_KEYS,
    DAI_ROWS,
    EVOLUTION,
    accuracy_curves,
    accuracy_table,
    against_icl,
    agreement_curves,
    construction_curves,
    construction_sparsity,
    dai_layer_curves,
    dai_table,
    evolution_curves,
    evolution_table,
    order_points,
    pair_name,
    sparsity_curves,
    sparsity_definitions,
    sparsity_table,
)
from icl_gd.sweep.verdicts import BELOW, headline_table, more_alike_sign

SPARSITY_KEYS = ("source", "definition", "model", "method", "matrix")
FIG_TRAJECTORY = "gd_trajectory.png"  # the GD search's trajectories (figures/)


@dataclass
class Section:
    """One part of the report: its W&B key and table name, its table, its markdown and its figure."""

    name: str  # W&B key and table name
    table: pd.DataFrame
    markdown: str
    figure: Path | None


def _accuracy_md(table: pd.DataFrame) -> list:
    """The headline's accuracy columns: label accuracy, as the accuracy figure (top-1 for old comparison files)."""
    if "label_accuracy_a" in table:
        return [number("label_accuracy_a", "label acc a"), number("label_accuracy_b", "label acc b")]
    return [number("accuracy_a", "top-1 acc a"), number("accuracy_b", "top-1 acc b")]


def headline_md(table: pd.DataFrame, k: str) -> str:
    """The headline table (a `headline_table`): each pair's agreement beside its floor, and the verdict; k = top-K."""
    return md_table(
        table,
        [
            text("model"),
            text("dataset"),
            text("demos", "N"),
            ("pair", lambda r: pair_name(r["pair_type"])),
            *_accuracy_md(table),
            with_ci("overlap@k", f"overlap@{k}"),
            with_ci("floor_overlap@k", f"floor overlap@{k}"),
            with_ci("ocs", "OCS"),
            with_ci("floor_ocs", "floor OCS"),
            text("metric", "tested on"),
            number("d_mean", "d vs floor"),
            number("p_holm", "p (Holm)"),
            text("verdict", "GD ≈ ICL?"),
            count("n"),
            count("n_clusters", "demo sets"),
        ],
    )


def sparsity_md(table: pd.DataFrame) -> str:
    """The sparsity table (a `sparsity_table`): one column per threshold, largest first."""
    thresholds = sorted((c for c in table.columns if c not in SPARSITY_KEYS), reverse=True)
    keys = [text(k) for k in SPARSITY_KEYS]
    return md_table(table, keys + [number(t, f"< {t:g}") for t in thresholds])


def _floors_and_controls_md(table: pd.DataFrame) -> str:
    """How to read the rows that are floors or controls, for those the headline table has."""
    pairs = set(table["pair_type"].astype(str))
    out = ""
    floors = sorted(p for p in pairs if is_order_pair(p) and not is_both_control(p))
    if floors:
        names = ", ".join(f"`{pair_name(p)}`" for p in floors)
        gd = "GD's noise floor" if GD_ORDER_PAIR in pairs else "Other noise floors"
        out += (
            f"\n_{gd}: the row(s) {names} compare a method with itself on the same demos in another order, beside "
            "the ICL floor's columns (`floor overlap`, `floor OCS`: ICL against ICL in another order); a floor gets "
            "no verdict, the ICL floor being the one every verdict is tested against._\n"
        )
    if any(is_control(p) and control_source(p) is None for p in pairs):
        out += (
            f"\n_Null control ({SHUFFLED_WORDS}): a row `icl vs X on {SHUFFLED_WORDS} (control)` is ICL on the "
            f"original demos against X given the same demos with their answers permuted among them ({SHUFFLED_WORDS}). "
            "A method whose agreement with ICL is no better than its control's does not follow the demos' labels "
            f"the way ICL does. Rows `..., both on {SHUFFLED_WORDS}` pair two jobs on shuffled labels (no verdict: "
            "their ICL is not the floor's)._\n"
        )
    if any(control_source(p) for p in pairs):
        out += (
            f"\n_Null control (another task): a row `icl vs X with {SOURCE_WORDS} T (control)` is ICL on this task's "
            "demos against X given demos drawn from task T instead (demo_source=T; this task's template, queries and "
            "label words). A method whose agreement with ICL is no better than this control's is not using what the "
            f"demos say about the task. Rows `..., both with {SOURCE_WORDS} T` pair two jobs on T's demos (no "
            "verdict)._\n"
        )
    return out


def agreement_section(sweep: Sweep, fig_dir: Path) -> Section | None:
    """The headline: GD-vs-ICL agreement against the ICL-order floor (needs comparison_queries.parquet)."""
    if sweep.queries.empty:
        return None
    k = str(sweep.top_k or "K")
    curves = agreement_curves(sweep.queries)
    curves = curves[against_icl(curves["pair_type"])]  # the figure is about ICL; the table keeps every pair
    labels = {m: lbl.replace("@K", f"@{k}") for m, lbl in AGREEMENT.items()}
    # no pair with ICL (a sweep of GD variants only): the table, no figure
    fig = plots.agreement_vs_demos(curves, fig_dir / io.FIG_AGREEMENT, labels) if len(curves) else None
    table = headline_table(sweep.queries)
    body = (
        headline_md(table, k)
        + "\n_a / b = label accuracy of the pair's first / second method (as in the accuracy figure). ± is the "
        "half-width of a two-level cluster-bootstrap interval (demo sets, then queries; with one demo set it covers query sampling only). "
        "The verdict is a paired test on the primary metric (`tested on`): per query, d = agreement(pair) - "
        "agreement(ICL in another order) on the same queries, signed so that d > 0 is more alike to ICL; "
        f"p is its bootstrap p-value, Holm-adjusted over the table; {BELOW} / above floor when p < 1 - level, "
        "else within floor; n/a: no ICL order pair for that row; —: no verdict, the pair is not ICL against a "
        "candidate (a zero-shot control, or two other methods such as gd vs zeroshot), about which the ICL "
        "floor says nothing._\n" + _floors_and_controls_md(table)
        if len(table)
        else "Only the ICL-vs-ICL order noise floor is in this sweep: no method pair to judge against it.\n"
    )
    how = (
        f"Does GD agree with ICL beyond the order noise floor? Each solid line is ICL against one method, its "
        f"overlap@{k} / OCS (pairs among other methods are in the table only) "
        "(higher = more alike); a pair whose band stays below the dashed ICL-vs-ICL floor differs from ICL by more "
        "than reordering the demonstrations does."
    )
    return Section("headline", table, section("GD vs ICL against the order noise floor", how, body, fig), fig)


def accuracy_section(sweep: Sweep, fig_dir: Path) -> Section:
    """Label accuracy against the number of demonstrations (every report has it)."""
    table = accuracy_table(sweep.accuracy)
    fig = plots.accuracy_vs_demos(accuracy_curves(table), fig_dir / io.FIG_ACCURACY)
    how = (
        "Label accuracy of each (model, method) against the number of demonstrations; the band is the 95% "
        "interval (jobs in the reference demo order only)."
    )
    keys = [text("model"), text("dataset"), text("method"), text("demos", "N")]
    body = md_table(table, [*keys, with_ci("mean", "label accuracy"), count("n")])
    return Section("accuracy", table, section("Accuracy", how, body, fig), fig)


def dai_section(sweep: Sweep, fig_dir: Path) -> Section | None:
    """Dai et al.'s metrics per layer and per job (needs the jobs' dai_*.parquet)."""
    if sweep.dai_layers.empty and sweep.dai_queries.empty:
        return None
    table = dai_table(sweep.dai_layers, sweep.dai_queries)
    fig = None
    if len(sweep.dai_layers):
        fig = plots.layer_curves(dai_layer_curves(sweep.dai_layers), fig_dir / io.FIG_DAI, DAI_ROWS)
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
    lmops = [
        (m, label)
        for m, label in (
            ("simaou_lmops", "SimAOU"),
            ("simaou_random_uniform_lmops", "SimAOU random U[0,1)"),
            ("simaou_unrelated_lmops", "SimAOU unrelated FT"),
            ("simam_lmops", "SimAM ICL-GD"),
            ("simam_zs_lmops", "SimAM ICL-ZS"),
            ("simam_diff_deutch", "SimAM diff (Deutch)"),
            ("kendall_example_lmops", "Kendall demos"),
            ("kendall_example_random_lmops", "Kendall random"),
        )
        if m in table
    ]
    if lmops:  # the same metrics as microsoft/LMOps computes them (analysis/lmops.py)
        body += (
            "\n\nAs microsoft/LMOps computes them (at the label token appended to the prompt; unit-normalised "
            "SimAOU, a uniform [0, 1) random update, SimAM from pre-softmax scores per head; Deutch et al.'s "
            "update-relative SimAM; Dai's Kendall tau of the attention to each demonstration):\n\n"
        )
        body += md_table(table, [*(text(k) for k in DAI_KEYS), *(with_ci(m, label) for m, label in lmops)])
    return Section("dai", table, section("Dai et al.: does GD move attention like ICL?", how, body, fig), fig)


def order_section(sweep: Sweep, fig_dir: Path) -> Section | None:
    """The std across demo orders per method (needs order_sensitivity.parquet)."""
    if sweep.orders.empty:
        return None
    table = order_table(sweep.orders)
    fig = plots.order_sensitivity(order_points(sweep.orders), fig_dir / io.FIG_ORDER)
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
    """The GD update's sparsity beside the one-step-GD construction's (needs the jobs' sparsity.parquet), under
    each definition the jobs wrote: a row of panels per definition, the construction's under the same one."""
    if sweep.sparsity.empty:
        return None
    relative = bool(sweep.jobs["sparsity_relative"].any())
    gd = sparsity_definitions(sweep.sparsity, relative)
    definitions = list(dict.fromkeys(gd["definition"]))
    construction = construction_sparsity(sorted(gd["threshold"].unique()))
    table = sparsity_table(gd, construction)
    fig = plots.sparsity(
        sparsity_curves(gd), construction_curves(construction, definitions), fig_dir / io.FIG_SPARSITY
    )
    how = (
        "Fraction of weight-update entries below each threshold per matrix type (mean over layers): the higher a "
        "curve stays at small thresholds, the sparser the update. Each row of panels is one definition of small, "
        f"named on its axis ({', '.join(definitions)}); dashed: the regression lab's one-step-GD construction "
        f"(d={CONSTRUCTION_D}, n={CONSTRUCTION_N}) under the same relative definition (|w| / max|w| beside the "
        "update's first row, |w| / std(w) beside |Δw| / std(w))."
    )
    return Section("sparsity", table, section("Sparsity of the GD update", how, sparsity_md(table), fig), fig)


def evolution_section(sweep: Sweep, fig_dir: Path) -> Section | None:
    """Every metric across a model's checkpoints (needs jobs of one model at several revisions)."""
    table = evolution_table(sweep.accuracy, sweep.queries, sweep.dai_layers)
    if table.empty:
        return None
    labels = {m: lbl.replace("@K", f"@{sweep.top_k or 'K'}") for m, lbl in EVOLUTION.items()}
    fig = plots.weight_evolution(evolution_curves(table), fig_dir / io.FIG_EVOLUTION, labels)
    how = "Each metric at each pretraining checkpoint (x: the step parsed from the revision name)."
    keys = [text(k) for k in ("model", "dataset", "metric", "line", "revision", "step")]
    body = md_table(table, [*keys, with_ci("mean", "value"), count("n")])
    from icl_gd.checkpoints import distance_md  # noqa: PLC0415 -- checkpoints made here: their distance from the start

    body += distance_md(sweep.jobs)
    return Section("weight_evolution", table, section("Weight evolution", how, body, fig), fig)


def search_md(table: pd.DataFrame) -> str:
    """The search table (a `search.search_table`): one row per search, the chosen setting and the collapsed count."""
    cols = [
        text("model"),
        text("dataset"),
        text("demos", "N"),
        text("method"),
        ("demos as", lambda r: condition_words(r.get("demo_labels"), r.get("demo_source")) or "original"),
        text("seed"),
    ]
    if "order_seed" in table and table["order_seed"].notna().any():
        cols.append(("order_seed", lambda r: "—" if pd.isna(r["order_seed"]) else str(int(r["order_seed"]))))
    cols += [
        text("optimizer"),
        ("momentum", lambda r: "—" if pd.isna(r["momentum"]) else S.short_number(r["momentum"])),
        ("lr", lambda r: "—" if pd.isna(r["lr"]) else S.short_number(r["lr"])),
        text("params"),
        ("step", lambda r: "—" if pd.isna(r["step"]) else str(int(r["step"]))),
        text("select_metric", "chosen on"),
        number("select_value", "value (selection)"),
        number("select_accuracy", "acc GD (selection)"),
        number("icl_select_accuracy", "acc ICL (selection)"),
        text("acc_matched", "acc-matched point"),
        ("collapsed", lambda r: f"{int(r['n_collapsed'])} of {int(r['n_points'])}"),
    ]
    return md_table(table, cols)


def _ylabel(metric: str) -> str:
    direction = "higher" if more_alike_sign(metric) > 0 else "lower"
    return f"{metric} with ICL, selection queries\n({direction} = more alike)"


def search_section(sweep: Sweep, fig_dir: Path) -> Section | None:
    """The GD search of each demo set (needs the sweep's gd_search.parquet, from method=gd_search jobs)."""
    search = sweep.search
    if search.empty:
        return None
    table = S.search_table(search)
    every = S.panels(search)
    drawn = every[: S.MAX_PANELS]
    curves = S.trajectory_curves(search, drawn)
    fig = None
    if len(curves):
        fig = trajectory_plots.gd_trajectory(
            curves,
            S.chosen_points(search, drawn),
            S.trajectory_floors(sweep.queries, drawn),
            [p["title"] for p in drawn],
            {p["title"]: _ylabel(p["metric"]) for p in drawn},
            fig_dir / FIG_TRAJECTORY,
            "ICL vs ICL in another order (floor, test queries)",
        )
    capped = (
        f" The figure shows the first {len(drawn)} of {len(every)} (model, dataset, N) panels, original labels "
        "first; the table lists every search."
        if len(every) > len(drawn)
        else ""
    )
    how = (
        "Before saying GD differs from ICL, GD gets its best chance: on each demo set a grid of GD settings "
        "(optimizer, learning rate, trained parameters) is trained once and scored at several optimizer steps by "
        "its agreement with ICL on SELECTION queries, disjoint from the test queries; the best point (starred) is "
        "retrained to its step and its answers on the test queries are the `gd_best` job compared above "
        f"(icl vs gd_best). Each curve is one setting's agreement against step, the mean over seeds with a 95% "
        "bootstrap band over seeds (a line only with one seed), collapsed points left out; dashed: the ICL-order "
        f"floor (`{ORDER_PAIR}`, mean of the same metric on the test queries; for a search on {SHUFFLED_WORDS}, "
        f"that of two ICL jobs on {SHUFFLED_WORDS}).{capped}"
    )
    legend = (
        "\n_One row per search (demo set): the chosen point's setting and step, its agreement with ICL on the "
        "selection queries (`value`, the raw metric mean), GD's and ICL's accuracy there; `acc-matched point`: the "
        "point whose selection accuracy is closest to ICL's (the choice of `select: accuracy`); `collapsed`: points "
        "left out because the model collapsed (near-uniform answers, a blown-up demo loss or a diverged run)._\n"
    )
    body = search_md(table) + legend
    return Section("gd_search", table, section("GD given its best chance", how, body, fig), fig)


SECTIONS = (
    agreement_section,
    search_section,
    accuracy_section,
    dai_section,
    order_section,
    sparsity_section,
    evolution_section,
)
