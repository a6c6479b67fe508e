"""The sweep report: table builders on hand-built frames, every figure, a hand-built sweep folder, a real sweep."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from icl_gd import io
from icl_gd.sweep import cli, loading, logger, markdown, order, plots, report, sections, tables, verdicts
from icl_gd.sweep.jobs import Job
from icl_gd.sweep.pair_types import ORDER_PAIR
from icl_gd.sweep.verdicts import BELOW, NA, WITHIN
from tests.helpers.cli import run_py

PNG_MAGIC = b"\x89PNG"
QUERIES = [f"q{i}" for i in range(4)]
REVISIONS = ("step1000", "step143000")
LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def is_png(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0 and path.read_bytes()[:4] == PNG_MAGIC


# ---------------------------------------------------------------------------------------------------------
# Hand-built frames


def query_rows(
    pair_type: str, overlap: list[float], ocs: list[float], demos: int = 1, **kw: Any
) -> pd.DataFrame:
    method_b = "icl" if pair_type == ORDER_PAIR else pair_type.split("_vs_")[1]
    return pd.DataFrame(
        {
            "pair_type": pair_type,
            "method_a": "icl",
            "method_b": method_b,
            "model": kw.get("model", "m"),
            "dataset": kw.get("dataset", "sst2"),
            "demos": demos,
            "seed": kw.get("seed", 0),
            "query_id": [f"q{i}" for i in range(len(overlap))],
            "overlap@k": overlap,
            "ocs": ocs,
            "accuracy_a": kw.get("accuracy_a", 1.0),
            "accuracy_b": kw.get("accuracy_b", 0.0),
            **({"revision": kw["revision"]} if "revision" in kw else {}),
        }
    )


def headline_queries() -> pd.DataFrame:
    """demos=2: GD far below the floor; demos=4: GD within it (per-query differences +-0.1 around 0); demos=8: no
    floor; demos=1: a single order."""
    return pd.concat(
        [
            query_rows("icl_vs_gd", [0.1, 0.2, 0.1, 0.2], [0.5, 0.6, 0.5, 0.6], demos=2),
            query_rows(ORDER_PAIR, [0.9, 1.0, 0.9, 1.0], [0.9, 1.0, 0.9, 1.0], demos=2),
            query_rows("icl_vs_gd", [0.8, 0.9, 0.7, 1.0], [0.7, 0.9, 0.8, 0.8], demos=4),
            query_rows(ORDER_PAIR, [0.7, 1.0, 0.8, 0.9], [0.8, 1.0, 0.8, 0.9], demos=4),
            query_rows("icl_vs_gd", [0.1, 0.2, 0.1, 0.2], [0.5, 0.6, 0.5, 0.6], demos=8),
            query_rows("icl_vs_gd", [0.1, 0.2, 0.1, 0.2], [0.5, 0.6, 0.5, 0.6], demos=1),
            query_rows(ORDER_PAIR, [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], demos=1),
        ],
        ignore_index=True,
    )


def meta(**kw: Any) -> dict[str, Any]:
    base = {
        "model": "m",
        "model_base": "m",
        "revision": None,
        "random_init": False,
        "dataset": "sst2",
        "method": "gd",
        "demos": 1,
        "seed": 0,
    }
    return {**base, **kw}


def dai_layers(model: str = "m", n_layers: int = 3, **kw: Any) -> pd.DataFrame:
    rows = [
        {
            **meta(model=model, model_base=model, **kw),
            "query_id": q,
            "layer": layer,
            "simaou": 0.5 + 0.1 * layer,
            "simaou_random": 0.0,
            "simam_ft": 0.8,
            "simam_zs": 0.6,
        }
        for q in QUERIES
        for layer in range(n_layers)
    ]
    return pd.DataFrame(rows)


def dai_queries() -> pd.DataFrame:
    """4 queries; zero-shot wrong and GD right on q0..q2 (3 GD fixes), ICL right on q0 and q1: Rec2FTP = 2/3."""
    return pd.DataFrame(
        {
            **meta(),
            "query_id": QUERIES,
            "zs_correct": [False, False, False, True],
            "icl_correct": [True, True, False, True],
            "ft_correct": [True, True, True, True],
        }
    )


def sparsity_rows(model: str = "m", dataset: str = "sst2") -> pd.DataFrame:
    rows = []
    for layer, (q, v) in enumerate([(0.2, 0.4), (0.4, 0.6)]):
        for matrix, frac in (("q_proj", q), ("v_proj", v)):
            for t in (1e-2, 1e-4):
                rows.append(
                    {
                        **meta(model=model, model_base=model, dataset=dataset),
                        "layer": layer,
                        "matrix": matrix,
                        "threshold": t,
                        "fraction": frac if t == 1e-2 else frac / 2,
                        "n_entries": 100,
                        "source": "gd_update",
                    }
                )
    return pd.DataFrame(rows)


def order_rows() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": "m",
                "dataset": "sst2",
                "demos": 4,
                "seed": 0,
                "method": method,
                "query_id": q,
                "n_orders": 3,
                "std": std + 0.01 * i,
            }
            for method, std in (("icl", 0.2), ("gd", 0.1), ("gd(batch_size=all)", 0.0))
            for i, q in enumerate(QUERIES)
        ]
    )


def accuracy_rows(revisions: tuple[str | None, ...] = (None,)) -> pd.DataFrame:
    rows = []
    for r, revision in enumerate(revisions):
        for method, correct in (("icl", [1, 1, 0, 1]), ("gd", [0, 1, 0, 0])):
            for seed in (0, 1):
                label = "m" if revision is None else f"m@{revision}"
                for q, c in zip(QUERIES, correct, strict=True):
                    rows.append(
                        {
                            **meta(model=label, revision=revision, method=method, seed=seed),
                            "query_id": q,
                            "correct": float(c or r),  # every answer right at the later checkpoint
                        }
                    )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# Table builders


def test_headline_table_judges_each_pair_against_its_floor() -> None:
    table = verdicts.headline_table(headline_queries()).set_index("demos")
    assert list(table.index) == [1, 2, 4, 8]
    assert set(table["pair_type"]) == {"icl_vs_gd"}  # the order pair is the floor, not a row
    # one demo: the "floor" compares an order with itself
    assert table.loc[1, "verdict"] == verdicts.ONE_ORDER
    assert table.loc[2, "verdict"] == BELOW
    assert table.loc[4, "verdict"] == WITHIN
    assert table.loc[8, "verdict"] == NA
    assert table.loc[2, "overlap@k"] == pytest.approx(0.15)
    assert table.loc[2, "floor_overlap@k"] == pytest.approx(0.95)
    assert table.loc[2, "overlap@k_hi"] < table.loc[2, "floor_overlap@k_lo"]
    assert table.loc[2, "accuracy_a"] == 1.0 and table.loc[2, "accuracy_b"] == 0.0
    assert table.loc[2, "n"] == 4
    md = sections.headline_md(table.reset_index(), "10")
    assert "GD ≈ ICL?" in md and "overlap@10" in md and md.count(f"| {BELOW} |") == 1
    assert table.loc[2, "metric"] == "overlap@k" and table.loc[2, "d_mean"] == pytest.approx(-0.8)
    assert table.loc[4, "d_mean"] == pytest.approx(0.0) and table.loc[4, "p_holm"] > 0.05


def test_headline_table_pools_seeds() -> None:
    q = pd.concat(
        [query_rows("icl_vs_gd", [0.2, 0.4], [1.0, 1.0], seed=s) for s in (0, 1)]
        + [query_rows(ORDER_PAIR, [1.0, 1.0], [1.0, 1.0], seed=s) for s in (0, 1)],
        ignore_index=True,
    )
    row = verdicts.headline_table(q).iloc[0]
    assert row["n"] == 4 and row["overlap@k"] == pytest.approx(0.3)


def test_label_correct_uses_labels_when_the_set_has_them() -> None:
    preds = pd.DataFrame({"gold": ["pos", "neg"], "pred_label": ["pos", "pos"], "correct": [False, False]})
    assert loading.label_correct(preds).tolist() == [1.0, 0.0]
    assert loading.label_correct(preds.drop(columns="pred_label")).tolist() == [0.0, 0.0]


def test_accuracy_table_pools_queries_and_seeds() -> None:
    table = tables.accuracy_table(accuracy_rows()).set_index("method")
    assert table.loc["icl", "mean"] == pytest.approx(0.75)
    assert table.loc["gd", "mean"] == pytest.approx(0.25)
    assert table.loc["icl", "n"] == 8
    assert table.loc["icl", "lo"] < 0.75 < table.loc["icl", "hi"]


def test_job_frame_marks_the_reference_order() -> None:
    def job(order_seed: int | None, method: str = "icl") -> Job:
        config = {
            "model": {"name": "m"},
            "dataset": {"name": "sst2"},
            "method": {"name": method},
            "demos": 2,
            "seed": 0,
            "order_seed": order_seed,
        }
        return Job(Path(f"/x/{method}{order_seed}"), config)

    frame = loading.job_frame([job(1), job(None), job(2), job(None, "gd")])
    assert frame.set_index("folder")["reference"].to_dict() == {
        "/x/icl1": False,
        "/x/iclNone": True,
        "/x/icl2": False,
        "/x/gdNone": True,
    }


def test_dai_table_rec2ftp_and_layer_means() -> None:
    table = tables.dai_table(dai_layers(), dai_queries()).iloc[0]
    assert table["rec2ftp"] == pytest.approx(2 / 3)
    assert table["n_ft_fixed"] == 3
    assert table["simaou"] == pytest.approx(0.6)  # mean over layers 0.5, 0.6, 0.7
    assert table["simaou_random"] == 0.0
    assert (table["simam_ft"], table["simam_zs"]) == (pytest.approx(0.8), pytest.approx(0.6))
    assert table["n"] == len(QUERIES)  # one value per query (layers averaged), not per (query, layer)


def test_dai_layer_curves_one_point_per_layer_and_series() -> None:
    layers = pd.concat([dai_layers("m"), dai_layers("m (untrained)")], ignore_index=True)
    curves = tables.dai_layer_curves(layers)
    assert set(curves["model"]) == {"m", "m (untrained)"}
    assert len(curves) == 2 * 3 * len(tables.DAI_SERIES)  # models x layers x series
    top = curves[(curves["series"] == "ICL vs GD update") & (curves["layer"] == 2)]
    assert top["mean"].tolist() == pytest.approx([0.7, 0.7])


def test_order_table_mean_std_per_method() -> None:
    table = order.order_table(order_rows()).set_index("method")
    assert table.loc["icl", "std"] == pytest.approx(0.215)
    assert table.loc["gd(batch_size=all)", "n_orders"] == 3


def test_sparsity_table_means_over_layers_beside_the_construction() -> None:
    construction = pd.DataFrame(
        {
            "layer": 0,
            "matrix": "W_kq",
            "threshold": [1e-2, 1e-4],
            "fraction": [0.9, 0.8],
            "source": "construction",
        }
    )
    table = tables.sparsity_table(sparsity_rows(), construction).set_index(["source", "matrix"])
    assert table.loc[("GD update", "q_proj"), 1e-2] == pytest.approx(0.3)
    assert table.loc[("GD update", "v_proj"), 1e-4] == pytest.approx(0.25)
    assert table.loc[("construction", "W_kq"), 1e-2] == pytest.approx(0.9)
    assert "< 0.01" in sections.sparsity_md(table.reset_index())


def test_sparsity_keeps_method_variants_apart() -> None:
    """An sgd and an adam update are not averaged together: one row (and one row of panels) per method label."""
    both = pd.concat(
        [
            sparsity_rows().assign(method="gd(optimizer=sgd)"),
            sparsity_rows().assign(method="gd(optimizer=adam)"),
        ]
    )
    both.loc[both.method == "gd(optimizer=adam)", "fraction"] = 0.0
    table = tables.sparsity_table(both, pd.DataFrame()).set_index(["method", "matrix"])
    assert table.loc[("gd(optimizer=sgd)", "q_proj"), 1e-2] == pytest.approx(0.3)
    assert table.loc[("gd(optimizer=adam)", "q_proj"), 1e-2] == 0.0
    assert set(tables.sparsity_curves(both)["method"]) == {"gd(optimizer=sgd)", "gd(optimizer=adam)"}


def test_checkpoint_steps_parse_the_revision_else_keep_the_order() -> None:
    assert tables.checkpoint_steps(["step143000", "step1000"]) == {"step143000": 143000, "step1000": 1000}
    assert tables.checkpoint_steps(["main", "step1000"]) == {"main": 0, "step1000": 1}


def test_evolution_table_follows_a_model_across_revisions() -> None:
    acc = accuracy_rows(REVISIONS).assign(model_base="m")
    queries = pd.concat(
        [query_rows("icl_vs_gd", [0.2, 0.4], [0.5, 0.5], model=f"m@{r}", revision=r) for r in REVISIONS],
        ignore_index=True,
    )
    table = tables.evolution_table(acc, queries, pd.DataFrame())
    assert set(table["metric"]) == {"accuracy", "overlap@k", "ocs"}
    assert set(table["model"]) == {"m"}
    icl = table[(table["metric"] == "accuracy") & (table["line"] == "icl, N=1")].set_index("step")
    assert icl.loc[1000, "mean"] == pytest.approx(0.75) and icl.loc[143000, "mean"] == 1.0
    # a single revision is no evolution
    assert tables.evolution_table(accuracy_rows(), queries.iloc[0:0], pd.DataFrame()).empty


def test_pick_logger_keeps_the_sweeps_wandb_settings() -> None:
    jobs = {"name": "wandb", "project": "p", "tags": ["t"]}
    assert logger.pick_logger(None, jobs) == jobs
    assert logger.pick_logger({"name": "wandb"}, jobs) == jobs
    assert logger.pick_logger({"name": "none"}, jobs) == {"name": "none"}


def test_fmt_ci_half_width_and_missing() -> None:
    assert markdown.fmt_ci(0.5, 0.4, 0.6) == "0.500 ± 0.100"
    assert markdown.fmt_ci(0.5, float("nan"), float("nan")) == "0.500"
    assert markdown.fmt_ci(float("nan"), float("nan"), float("nan")) == "—"


# ---------------------------------------------------------------------------------------------------------
# Figures


def test_accuracy_figure(tmp_path: Path) -> None:
    table = tables.accuracy_table(pd.concat([accuracy_rows(), accuracy_rows().assign(demos=4)]))
    assert is_png(plots.accuracy_vs_demos(tables.accuracy_curves(table), tmp_path / "a.png"))


def test_agreement_figure_two_datasets(tmp_path: Path) -> None:
    q = headline_queries()
    q = pd.concat([q, q.assign(dataset="agnews")], ignore_index=True)
    assert is_png(plots.agreement_vs_demos(tables.agreement_curves(q), tmp_path / "g.png", tables.AGREEMENT))


def test_layer_figure_trained_and_untrained(tmp_path: Path) -> None:
    layers = pd.concat([dai_layers("m"), dai_layers("m (untrained)")], ignore_index=True)
    curves = tables.dai_layer_curves(layers)
    assert is_png(plots.layer_curves(curves, tmp_path / "s.png", tables.DAI_ROWS))


def test_order_figure(tmp_path: Path) -> None:
    assert is_png(plots.order_sensitivity(tables.order_points(order_rows()), tmp_path / "o.png"))


def test_sparsity_figure_with_and_without_the_construction(tmp_path: Path) -> None:
    gd = tables.sparsity_curves(pd.concat([sparsity_rows(), sparsity_rows(dataset="agnews")]))
    construction = tables.construction_curves(
        pd.DataFrame({"matrix": "W_kq", "threshold": [1e-2, 1e-4], "fraction": [0.9, 0.8]})
    )
    assert is_png(plots.sparsity(gd, construction, tmp_path / "p.png"))
    none = tables.construction_curves(pd.DataFrame())
    assert is_png(plots.sparsity(gd, none, tmp_path / "p0.png"))


def test_sparsity_std_relative_is_a_row_of_its_own_beside_the_constructions_std_row(tmp_path: Path) -> None:
    """Where the jobs wrote |Δw| / std(w), it is a second definition: its own table rows and panels, drawn beside
    the construction's |w| / std(w), never averaged with the max-relative fractions."""
    from icl_gd.analysis.sparsity import STD_RELATIVE  # noqa: PLC0415

    rows = sparsity_rows().assign(**{STD_RELATIVE: 0.9})
    gd = tables.sparsity_definitions(rows, relative=True)
    assert list(dict.fromkeys(gd["definition"])) == [tables.UPDATE_MAX, tables.UPDATE_STD]
    construction = tables.construction_sparsity([1e-2, 1e-4])
    table = tables.sparsity_table(gd, construction).set_index(["source", "definition", "matrix"])
    assert table.loc[("GD update", tables.UPDATE_MAX, "q_proj"), 1e-2] == pytest.approx(0.3)
    assert table.loc[("GD update", tables.UPDATE_STD, "q_proj"), 1e-2] == pytest.approx(0.9)
    assert {d for s, d, _ in table.index if s == "construction"} == {"|w| / max|w|", "|w| / std(w)"}
    curves = tables.construction_curves(construction, [tables.UPDATE_MAX, tables.UPDATE_STD])
    assert set(curves["definition"]) == {tables.UPDATE_MAX, tables.UPDATE_STD}
    only_max = tables.construction_curves(construction, [tables.UPDATE_ABS])
    assert set(only_max["definition"]) == {tables.UPDATE_ABS}  # no std row without the update's std row
    assert is_png(plots.sparsity(tables.sparsity_curves(gd), curves, tmp_path / "std.png"))
    plain = tables.sparsity_definitions(sparsity_rows(), relative=False)
    assert set(plain["definition"]) == {tables.UPDATE_ABS}


def test_evolution_figure(tmp_path: Path) -> None:
    acc = accuracy_rows(REVISIONS).assign(model_base="m")
    table = tables.evolution_table(acc, pd.DataFrame(), dai_layers(revision=REVISIONS[0]))
    evo = tables.evolution_curves(table)
    assert is_png(plots.weight_evolution(evo, tmp_path / "w.png", tables.EVOLUTION))


# ---------------------------------------------------------------------------------------------------------
# A hand-built sweep folder: every section, the W&B calls, the CLI


def write_job(sweep: Path, name: str, config: dict[str, Any], files: dict[str, pd.DataFrame]) -> None:
    folder = sweep / name
    config = {"logger": {"name": "none"}, "eval": {"top_k": 10}, "order_seed": None, "seed": 0, **config}
    io.write_yaml(folder / io.CONFIG, config)
    io.write_status(folder, "done")
    preds = pd.DataFrame(
        {
            "query_id": QUERIES,
            "gold": ["pos", "neg", "pos", "neg"],
            "pred_label": ["pos", "pos", "pos", "neg"],
            "correct": False,
        }
    )
    for file, df in {io.PREDICTIONS: preds, **files}.items():
        io.write_parquet(folder / file, df)


def job_files_of(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in loading.META if c in frame])


def hand_built_sweep(sweep: Path) -> Path:
    """Two checkpoints of one model (icl, gd with Dai and sparsity files, an ICL order), and the sweep files."""
    for revision in REVISIONS:
        model = {"name": "m", "revision": revision, "random_init": False}
        for method in ("icl", "gd"):
            files = {}
            if method == "gd":
                files = {
                    io.DAI_LAYERS: job_files_of(dai_layers()),
                    io.DAI_QUERIES: job_files_of(dai_queries()),
                    io.SPARSITY: job_files_of(sparsity_rows()),
                }
            config = {"model": model, "dataset": {"name": "sst2"}, "method": {"name": method}, "demos": 2}
            write_job(sweep, f"{revision}-{method}", config, files)
        config = {"model": model, "dataset": {"name": "sst2"}, "method": {"name": "icl"}, "demos": 2}
        write_job(sweep, f"{revision}-icl-order1", {**config, "order_seed": 1}, {})
    io.write_status(sweep / "broken", "failed", error="boom")
    queries = [
        query_rows(pair, values, values, demos=2, model=f"m@{r}", revision=r)
        for r in REVISIONS
        for pair, values in (("icl_vs_gd", [0.2, 0.3, 0.2, 0.3]), (ORDER_PAIR, [0.9, 1.0, 0.9, 1.0]))
    ]
    io.write_parquet(sweep / io.COMPARISON_QUERIES, pd.concat(queries, ignore_index=True))
    io.write_parquet(sweep / io.ORDER_SENSITIVITY, order_rows())
    return sweep


def linked_figures(md: str, sweep: Path) -> list[Path]:
    return [sweep / link for link in LINK.findall(md)]


class RecordingTracker:
    """What _log sends to W&B."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((name, args))


def test_hand_built_sweep_has_every_section_and_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = hand_built_sweep(tmp_path / "sweep")
    tracker = RecordingTracker()
    seen: dict[str, Any] = {}

    def fake_make_tracker(logger_cfg: Any, **kwargs: Any) -> RecordingTracker:
        seen.update(logger=logger_cfg, **kwargs)
        return tracker

    monkeypatch.setattr("icl_gd.tracking.make_tracker", fake_make_tracker)
    path = report.build_report(sweep)
    md = path.read_text()
    assert path == sweep / io.REPORT
    assert "7 (6 done, 1 failed, 0 unfinished)" in md
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings == [
        "## GD vs ICL against the order noise floor",
        "## Accuracy",
        "## Dai et al.: does GD move attention like ICL?",
        "## Order sensitivity",
        "## Sparsity of the GD update",
        "## Weight evolution",
    ]
    figures = linked_figures(md, sweep)
    assert {f.name for f in figures} == {
        io.FIG_ACCURACY,
        io.FIG_AGREEMENT,
        io.FIG_DAI,
        io.FIG_ORDER,
        io.FIG_SPARSITY,
        io.FIG_EVOLUTION,
    }
    assert all(is_png(f) for f in figures)
    assert md.count(BELOW) >= 2  # one row per checkpoint, both far below the floor
    assert seen["job_type"] == "report" and seen["group"] == "adhoc-sweep"  # no experiment: adhoc
    assert seen["name"] == "report-adhoc-sweep" and seen["run_id"].startswith("report-")
    assert seen["logger"] == {"name": "none"}  # the jobs' logger
    kinds = [name for name, _ in tracker.calls]
    assert kinds.count("log_image") == len(figures)
    assert kinds.count("log_table") == 6 and kinds[-1] == "finish"
    summary = next(args[0] for name, args in tracker.calls if name == "summary")
    assert summary["jobs_done"] == 6 and summary["jobs_failed"] == 1  # the headline is a table
    artifact = next(args for name, args in tracker.calls if name == "log_artifact")
    assert artifact[0] == path


def test_only_icl_jobs_still_give_a_report(tmp_path: Path) -> None:
    sweep = tmp_path / "icl_only"
    write_job(
        sweep,
        "icl",
        {"model": {"name": "m"}, "dataset": {"name": "sst2"}, "method": {"name": "icl"}, "demos": 1},
        {},
    )
    md = report.build_report(sweep, logger_cfg={"name": "none"}).read_text()
    assert "## Accuracy" in md and "noise floor" not in md and "Dai" not in md
    assert [f.name for f in linked_figures(md, sweep)] == [io.FIG_ACCURACY]
    # with an ICL order pair only, the floor is drawn but there is no method pair to judge
    io.write_parquet(sweep / io.COMPARISON_QUERIES, query_rows(ORDER_PAIR, [1.0, 0.9], [1.0, 0.9]))
    md = report.build_report(sweep, logger_cfg={"name": "none"}).read_text()
    assert "Only the ICL-vs-ICL order noise floor" in md and "GD ≈ ICL?" not in md
    assert {f.name for f in linked_figures(md, sweep)} == {io.FIG_ACCURACY, io.FIG_AGREEMENT}


def test_cli_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing:
        cli.main(["report", str(tmp_path / "nowhere"), "--logger", "none"])
    assert missing.value.code == 2 and "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as empty:
        cli.main(["report", str(tmp_path / "empty"), "--logger", "none"])
    assert empty.value.code == 2 and "no finished language-model job" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# A real sweep (tiny random model)


def sweep_cmd(sweep: Path, *overrides: str) -> None:
    run_py("-m", "debug=smoke", "logger=none", *overrides, f"hydra.sweep.dir={sweep}", timeout=600)


@pytest.mark.slow
def test_report_of_a_real_sweep(tmp_path: Path) -> None:
    """ICL in two orders, then GD with the Dai and sparsity analyses, on a label set: every section but evolution."""
    sweep = tmp_path / "sweep"
    sweep_cmd(sweep, "dataset=sst2", "method=icl", "order_seed=null,1", "demos=1,2")
    sweep_cmd(sweep, "dataset=sst2", "method=gd", "analysis.dai=true", "analysis.sparsity=true", "demos=1,2")
    result = run_py("report", str(sweep), "--logger", "none", module="icl_gd.sweep", check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    md = (sweep / io.REPORT).read_text()
    assert "| model | dataset | N | pair |" in md and "GD ≈ ICL?" in md
    assert "| icl vs gd |" in md and "Jobs: 6 (6 done, 0 failed" in md
    figures = linked_figures(md, sweep)
    assert {f.name for f in figures} == {
        io.FIG_ACCURACY,
        io.FIG_AGREEMENT,
        io.FIG_DAI,
        io.FIG_ORDER,
        io.FIG_SPARSITY,
    }
    assert all(is_png(f) for f in figures)
    assert r"| GD update | \|Δw\| / max\|Δw\| | tiny_random (untrained) | gd | q_proj |" in md
    assert r"| construction | \|w\| / std(w) | regression lab | one GD step | wv |" in md
