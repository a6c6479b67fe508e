"""Config validation and whole linreg jobs: presets compose, bad values fail clearly, run_job writes its files."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from icl_gd.errors import ConfigError
from icl_gd.linreg.config import parse, validate
from icl_gd.linreg.lab import run_job
from tests.helpers.cli import run_py
from tests.helpers.config import CONF, ROOT

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("linreg_*.yaml"))
# a small, fast job: tiny sizes everywhere (every knob is a method/dataset key)
TINY = [
    "dataset.d=3",
    "dataset.n=4",
    "dataset.batch=64",
    "method.seeds=2",
    "method.steps=60",
    "method.warmup=5",
    "method.eval_tasks=2048",
    "method.curve_tasks=256",
    "method.tune_tasks=1024",
    "method.eval_chunk=1024",
    "method.theory_mc_samples=20000",
    "method.checkpoints=4",
    "method.log_every=20",
    "method.lora.steps=40",
]


class FakeTracker:
    """Records what run_job hands to the tracker (the real one is icl_gd/tracking.py)."""

    def __init__(self) -> None:
        self.logs, self.tables, self.images, self.summaries, self.histograms = [], {}, {}, [], {}

    def log(self, data: dict, step: int | None = None) -> None:
        self.logs.append((step, dict(data)))

    def summary(self, data: dict) -> None:
        self.summaries.append(dict(data))

    def log_table(self, key: str, df: pd.DataFrame) -> None:
        self.tables[key] = df

    def log_image(self, key: str, path) -> None:
        self.images[key] = Path(path)

    def log_histogram(self, key: str, values) -> None:
        self.histograms[key] = values

    def finish(self) -> None:
        pass


@pytest.fixture(scope="module")
def conf_dir(tmp_path_factory) -> Path:
    """The lead's conf/config.yaml when it exists; else a stand-in primary config with the same defaults order."""
    if (CONF / "config.yaml").exists():
        return CONF
    tmp = tmp_path_factory.mktemp("conf")
    (tmp / "config.yaml").write_text(
        "defaults:\n  - _self_\n  - model: smollm2_135m_instruct_q4_1\n  - dataset: present_past\n  - method: icl\n"
        f"  - experiment: null\nseed: 0\ndemos: 8\nhydra:\n  searchpath: [file://{CONF}]\n"
    )
    for group, name in (
        ("model", "smollm2_135m_instruct_q4_1"),
        ("dataset", "present_past"),
        ("method", "icl"),
    ):
        if not (CONF / group / f"{name}.yaml").exists():
            (tmp / group).mkdir()
            (tmp / group / f"{name}.yaml").write_text(f"name: {name}\n")
    return tmp


def _compose(conf_dir: Path, overrides: list[str]):
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose("config", overrides=overrides)


def _linreg(conf_dir: Path, *extra: str, model: str = "lsa"):
    return _compose(conf_dir, [f"model={model}", "dataset=linreg", "method=train", *TINY, *extra])


@pytest.mark.parametrize("preset", PRESETS)
def test_linreg_presets_compose_and_validate(conf_dir, preset):
    cfg = _compose(conf_dir, [f"experiment={preset}"])
    assert cfg.dataset.name == "linreg" and cfg.method.name == "train"
    validate(cfg)
    text = (CONF / "experiment" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_") and f"experiment={preset}" in text.splitlines()[1]


def test_linreg_presets_accept_the_documented_sweep_values(conf_dir):
    for model in ("lsa", "h3"):
        for n in (5, 40):
            validate(
                _compose(
                    conf_dir,
                    ["experiment=linreg_theory", f"model={model}", f"dataset.n={n}", "dataset.noise=0.5"],
                )
            )


def test_each_option_file_names_itself():
    for group, name in (
        ("model", "lsa"),
        ("model", "h3"),
        ("model", "gd_construction"),
        ("dataset", "linreg"),
        ("method", "train"),
    ):
        assert OmegaConf.load(CONF / group / f"{name}.yaml").name == name


BAD = [
    (["dataset.n=0"], "dataset.n"),
    (["dataset.noise=-0.1"], "dataset.noise"),
    (
        ["dataset.feature_cov.kind=matrix", "dataset.feature_cov.matrix=[[1,0,0],[0,-1,0],[0,0,1]]"],
        "positive definite",
    ),
    (["dataset.task_cov.kind=matrix", "dataset.task_cov.matrix=[[1,2,0],[0,1,0],[0,0,1]]"], "symmetric"),
    (["dataset.feature_cov.kind=banded"], "dataset.feature_cov.kind"),
    (["model.rank=4"], "model.rank"),
    (["model.rank=0"], "model.rank"),
    (["dataset.rag_alpha=1.5"], "dataset.rag_alpha"),
    (["method.steps=0"], "method.steps"),
    (["method.lora.ranks=[2]"], "dataset.shift"),
    (["+model.hidden=4"], "unknown key"),
    (["method.dtype=float16"], "method.dtype"),
]


@pytest.mark.parametrize(("overrides", "needle"), BAD, ids=[b[1] for b in BAD])
def test_linreg_bad_values_are_rejected_with_the_key(conf_dir, overrides, needle):
    cfg = _linreg(conf_dir, *overrides)
    with pytest.raises(ConfigError, match=needle) as err:
        validate(cfg)
    assert "expected" in str(err.value) or "allowed" in str(err.value)


def test_linreg_needs_a_linreg_model_and_method(conf_dir):
    cfg = _linreg(conf_dir)
    with open_dict(cfg):
        cfg.model = OmegaConf.create({"name": "smollm2_135m"})
    with pytest.raises(
        ConfigError, match="dataset=linreg needs model=lsa|h3|gd_construction, got model=smollm2_135m"
    ):
        validate(cfg)
    cfg = _linreg(conf_dir)
    with open_dict(cfg):
        cfg.method = OmegaConf.create({"name": "icl"})
    with pytest.raises(ConfigError, match="method=train"):
        validate(cfg)


def test_grid_keys_accept_lists(conf_dir):
    job = parse(_linreg(conf_dir, "dataset.noise=[0,0.5]", "dataset.n=[4,6]"))
    assert job.data.noise == [0.0, 0.5] and job.data.n == [4, 6]


def _check_job(tmp_path: Path, metrics: dict, tracker: FakeTracker) -> None:
    assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert any("risk" in k for k in metrics)
    for name in ("risks.csv", "theory.csv", "linreg_summary.json"):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "linreg_summary.json").read_text())["metrics"]
    assert tracker.summaries and "linreg/risks" in tracker.tables
    assert tracker.images and all(p.exists() and p.suffix == ".png" for p in tracker.images.values())


def test_run_job_lsa_grid(conf_dir, tmp_path):
    tracker = FakeTracker()
    metrics = run_job(_linreg(conf_dir, "dataset.noise=[0,0.5]"), tmp_path, tracker)
    _check_job(tmp_path, metrics, tracker)
    for key in (
        "risk/trained@noise=0.5",
        "risk/theory@noise=0.5",
        "risk/pgd_optimal@noise=0.5",
        "risk/gd_construction@noise=0.5",
        "risk/ridge@noise=0.5",
        "precond_cosine@noise=0.5",
        "construction/one_step_max_abs_err",
        "construction/stack3_max_abs_err",
        "sparsity/learned_kq@1e-02",
    ):
        assert key in metrics, key
    assert (
        metrics["construction/one_step_max_abs_err"] < 1e-5
        and metrics["construction/stack3_max_abs_err"] < 1e-5
    )
    assert metrics["risk/theory@noise=0"] == pytest.approx(3 * (3 + 1) / (4 + 3 + 1))  # d(d+1)/(n+d+1)
    assert metrics["risk/gd_construction@noise=0"] == pytest.approx(
        metrics["risk/gd_1step@noise=0"], rel=1e-5
    )
    assert any(k == "linreg/train_loss" for _, rec in tracker.logs for k in rec)
    for name in (
        "curves.csv",
        "evolution.csv",
        "sparsity.csv",
        "train_loss.csv",
        "figures/risk_vs_noise.png",
        "figures/risk_vs_context.png",
        "figures/weight_evolution.png",
        "figures/sparsity.png",
    ):
        assert (tmp_path / name).exists(), name
    evo = pd.read_csv(tmp_path / "evolution.csv")
    assert set(evo["metric"]) >= {"cosine to W*", "cosine to GD construction"}


def test_run_job_h3(conf_dir, tmp_path):
    metrics = run_job(_linreg(conf_dir, model="h3"), tmp_path, FakeTracker())
    assert "risk/trained" in metrics and "precond_cosine" in metrics and "risk/trained_precond" not in metrics


def test_run_job_gd_construction_equals_line_searched_gd(conf_dir, tmp_path):
    tracker = FakeTracker()
    metrics = run_job(_linreg(conf_dir, model="gd_construction"), tmp_path, tracker)
    _check_job(tmp_path, metrics, tracker)
    assert metrics["risk/construction"] == pytest.approx(metrics["risk/gd_1step"], rel=1e-5)
    opt = run_job(
        _linreg(conf_dir, "model.preconditioner=optimal", model="gd_construction"), tmp_path / "opt", tracker
    )
    assert opt["risk/construction"] == pytest.approx(opt["risk/pgd_optimal"], rel=1e-5)
    stack = run_job(_linreg(conf_dir, "model.layers=2", model="gd_construction"), tmp_path / "stack", tracker)
    assert stack["risk/construction"] < metrics["risk/construction"]  # two GD steps beat one (n > d here)


def test_run_job_correlated_designs_and_rank(conf_dir, tmp_path):
    rag = run_job(
        _linreg(conf_dir, "dataset.rag_alpha=[0,0.6]", "dataset.feature_cov.kind=powerlaw"),
        tmp_path / "rag",
        FakeTracker(),
    )
    assert "risk/theory@rag_alpha=0.6" in rag  # Monte Carlo theory: no closed form for power-law RAG
    theory = pd.read_csv(tmp_path / "rag" / "theory.csv")
    assert (
        theory["method"].str.startswith("monte carlo").any()
        and theory["method"].str.startswith("closed").any()
    )
    align = run_job(_linreg(conf_dir, "dataset.align_alpha=[0.5,1.0]"), tmp_path / "align", FakeTracker())
    assert math.isfinite(align["risk/least_squares@align_alpha=1"])  # collinear features: pseudo-inverse
    rank = run_job(_linreg(conf_dir, "model.rank=[1,3]"), tmp_path / "rank", FakeTracker())
    assert rank["risk/theory@rank=1"] > rank["risk/theory@rank=3"]
    assert (tmp_path / "rank" / "figures" / "risk_vs_rank.png").exists()


def test_run_job_lora(conf_dir, tmp_path):
    metrics = run_job(
        _linreg(
            conf_dir,
            "method.lora.ranks=[1,2]",
            "+dataset.shift.feature_cov={kind: powerlaw, power: 2.0, matrix: null}",
        ),
        tmp_path,
        FakeTracker(),
    )
    assert "risk/lora@lora_rank=1" in metrics and "risk/lora_theory@lora_rank=2" in metrics
    assert metrics["risk/lora_theory@lora_rank=2"] <= metrics["risk/lora_theory@lora_rank=1"]
    assert (tmp_path / "lora.csv").exists() and (tmp_path / "figures" / "risk_vs_lora_rank.png").exists()


def test_run_job_is_reproducible_and_restores_threads(conf_dir, tmp_path):
    threads = torch.get_num_threads()
    a = run_job(_linreg(conf_dir, "method.threads=1"), tmp_path / "a", FakeTracker())
    b = run_job(_linreg(conf_dir, "method.threads=1"), tmp_path / "b", FakeTracker())
    assert torch.get_num_threads() == threads
    assert {k: v for k, v in a.items() if not k.startswith("time/")} == {
        k: v for k, v in b.items() if not k.startswith("time/")
    }


@pytest.mark.slow
def test_linreg_theory_command(tmp_path):
    """The acceptance command: `python run.py experiment=linreg_theory logger=none` writes risk metrics."""
    if not (ROOT / "run.py").exists() or not (CONF / "config.yaml").exists():
        pytest.skip("run.py / conf/config.yaml not written yet")
    run_py("experiment=linreg_theory", "logger=none", f"hydra.run.dir={tmp_path}", timeout=600)
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert any("risk" in k for k in metrics)
