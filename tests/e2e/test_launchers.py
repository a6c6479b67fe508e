"""Hydra launchers: conf/hydra/launcher/ against the plugins' schemas, a clear message without a plugin, and real
joblib, submitit_local and Ray sweeps that write the basic launcher's files and compare every job once at the end.

The sweeps pin OMP_NUM_THREADS=1: joblib and Ray give each worker cores/n_jobs threads, and a CPU matmul summed
over another number of threads differs in the last float digits (gd's train loss does), so byte-equal files need
the same thread count in every launcher.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from icl_gd.config import config_hash
from icl_gd.sweep.callbacks import LauncherNotInstalled, check_launcher
from tests.helpers.cli import run_py
from tests.helpers.config import ROOT, subprocess_env
from tests.helpers.wandb_runs import offline_runs, run_folder

# icl_gd.config silences this in run.py; pytest resets warning filters set while it collects
pytestmark = pytest.mark.filterwarnings(
    r"ignore:\s*'hydra/launcher/\w+' is validated against ConfigStore schema:UserWarning"
)
LAUNCHER_DIR = ROOT / "conf" / "hydra" / "launcher"
# our file -> (the plugin module holding its schema, the schema class)
SCHEMAS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher.config", "JobLibLauncherConf"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher.config", "LocalQueueConf"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher.config", "SlurmQueueConf"),
    "ray": ("hydra_plugins.hydra_ray_launcher._config", "RayLauncherConf"),
}
SWEEP = ("-m", "debug=smoke", "method=icl,gd", "seed=0")


def compose_hydra(*overrides: str) -> DictConfig:
    """The config with its `hydra` node, as run.py composes it."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            return compose("config", overrides=["output_dir=/tmp/x", *overrides], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def schema(name: str) -> type:
    module, cls = SCHEMAS[name]
    return getattr(pytest.importorskip(module), cls)


# ----------------------------------------------------------------------------------------------------------
# The files


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_launcher_file_lists_every_knob_of_the_plugin_schema(name: str) -> None:
    """Each file has the schema's name, so it cannot extend it with `defaults:`; it repeats it, checked here."""
    node = OmegaConf.load(LAUNCHER_DIR / f"{name}.yaml")
    base = OmegaConf.structured(schema(name))
    OmegaConf.merge(base, node)  # an unknown key or a wrong type raises
    assert set(node) == set(base) and node._target_ == base._target_


@pytest.mark.parametrize("path", sorted(LAUNCHER_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_knob_has_a_comment(path: Path) -> None:
    keys = [line for line in path.read_text().splitlines() if re.match(r"^\s*\w+:", line)]
    assert keys and all("#" in line for line in keys if not line.startswith("defaults:"))


@pytest.mark.parametrize("name", [*sorted(SCHEMAS), "slurm_a100"])
def test_every_launcher_composes(name: str) -> None:
    cfg = compose_hydra(f"hydra/launcher={name}", "hydra.sweep.dir=/tmp/sweep")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].startswith("hydra_plugins.")
    if "submitit_folder" in launcher:
        assert launcher["submitit_folder"] == "/tmp/sweep/.submitit/%j"  # inside the sweep: resumable with it


def test_slurm_a100_reaches_sbatch_as_partition_time_gpus_cpus_mem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sbatch script submitit would submit for slurm_a100, made without a cluster (a fake srun on PATH)."""
    submitit = pytest.importorskip("submitit")
    base_conf = importlib.import_module("hydra_plugins.hydra_submitit_launcher.config").BaseQueueConf
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    cfg = compose_hydra("hydra/launcher=slurm_a100", f"hydra.sweep.dir={tmp_path}/sweep")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    # what hydra_submitit_launcher's launch() does with its config
    folder, max_num_timeout = params.pop("submitit_folder"), params.pop("max_num_timeout")
    params.pop("_target_")
    base = set(OmegaConf.structured(base_conf))
    executor = submitit.AutoExecutor(cluster="slurm", folder=folder, slurm_max_num_timeout=max_num_timeout)
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    sbatch = executor._executor._make_submission_file_text("python run.py", "0")
    for line in (
        "--partition=gpu",
        "--time=240",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=64GB",
        "--constraint=a100",
    ):
        assert f"#SBATCH {line}\n" in sbatch


# ----------------------------------------------------------------------------------------------------------
# A plugin that is not installed


@pytest.mark.parametrize(
    ("name", "hidden", "needles"),
    [
        (
            "joblib",
            "hydra_plugins.hydra_joblib_launcher",
            ["hydra-joblib-launcher", "pip install -e '.[joblib]'"],
        ),
        ("submitit_slurm", "submitit", ["hydra-submitit-launcher", "missing: submitit", "'.[slurm]'"]),
        ("slurm_a100", "hydra_plugins.hydra_submitit_launcher", ["hydra/launcher=slurm_a100", "'.[slurm]'"]),
        ("ray", "hydra_plugins.hydra_ray_launcher", ["hydra-ray-launcher", "pip install -e '.[ray]'"]),
        (
            "ray",
            "ray",
            ["ray)", "'.[ray]'"],
        ),  # "(missing: ray)", or "(missing: <plugin>, ray)" without the plugin
    ],
)
def test_a_missing_plugin_names_the_package_and_the_install_command(
    name: str, hidden: str, needles: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_hydra(f"hydra/launcher={name}")
    monkeypatch.setitem(sys.modules, hidden, None)  # what an import sees when the package is not installed
    with pytest.raises(LauncherNotInstalled) as e:
        check_launcher(cfg)
    assert all(n in str(e.value) for n in needles), str(e.value)
    check_launcher(compose_hydra())  # the basic launcher needs no plugin


# ----------------------------------------------------------------------------------------------------------
# Real sweeps


def sweep_env() -> dict[str, str]:
    env = subprocess_env()
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RAY_AUTH_MODE="disabled")
    return env


def run_sweep(sweep: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_py(*SWEEP, f"hydra.sweep.dir={sweep}", *args, env=sweep_env(), timeout=timeout)


def job_folders(sweep: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sweep.glob("*/status.json")}


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep = tmp_path_factory.mktemp("basic") / "sweep"
    run_sweep(sweep)
    return sweep


def assert_same_jobs_compared_once(sweep: Path, basic: Path, proc: subprocess.CompletedProcess) -> None:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "validated against ConfigStore schema" not in out
    jobs, ref = job_folders(sweep), job_folders(basic)
    assert set(jobs) == set(ref) == {"debug=smoke,method=icl,seed=0", "debug=smoke,method=gd,seed=0"}
    for name, folder in jobs.items():
        assert json.loads((folder / "status.json").read_text())["status"] == "done"
        for f in ("metrics.json", "demos.jsonl"):
            assert (folder / f).read_text() == (ref[name] / f).read_text(), f"{name}/{f}"
        assert config_hash(yaml.safe_load((folder / "config.yaml").read_text())) == config_hash(
            yaml.safe_load((ref[name] / "config.yaml").read_text())
        )  # the same job: equal but for output_dir and logger
        assert pd.read_parquet(folder / "predictions.parquet").equals(
            pd.read_parquet(ref[name] / "predictions.parquet")
        )
    assert out.count("# Comparison of 2 jobs") == 1  # once, at the end, with both jobs
    comp = pd.read_parquet(sweep / "comparison.parquet")
    comp = comp[comp.seed.notna()]  # per-demo-set rows; pooled cell rows carry no job
    assert set(comp.pair_type) == {"icl_vs_gd"} and (comp.n == 4).all()
    assert {Path(p).name for p in {*comp.job_a, *comp.job_b}} == set(jobs)


@pytest.mark.slow
def test_joblib_sweep_with_two_workers_matches_the_basic_launcher(basic_sweep: Path, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    proc = run_sweep(sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "logger=wandb")
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    assert_same_jobs_compared_once(sweep, basic_sweep, proc)
    # each worker read HydraConfig: its W&B run is grouped by the sweep folder
    for folder in job_folders(sweep).values():
        info = run_folder(offline_runs(folder)[0])
        assert info["group"] == "sweep" and info["job_type"] in folder.name


@pytest.mark.slow
def test_submitit_local_sweep_matches_the_basic_launcher(basic_sweep: Path, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    proc = run_sweep(sweep, "hydra/launcher=submitit_local")
    assert_same_jobs_compared_once(sweep, basic_sweep, proc)
    results = list((sweep / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2  # each job ran as its own submitit process


@pytest.mark.slow
def test_ray_sweep_matches_the_basic_launcher(basic_sweep: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]'")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="pip install -e '.[ray]'")
    sweep = tmp_path / "sweep"
    proc = run_sweep(
        sweep,
        "hydra/launcher=ray",
        "hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
    )
    assert "Ray Launcher is launching 2 jobs" in proc.stdout + proc.stderr
    assert_same_jobs_compared_once(sweep, basic_sweep, proc)
