"""Hydra launchers: conf/hydra/launcher/ against the plugins' schemas, a clear message without a plugin, and real
joblib, submitit_local and Ray sweeps that write the basic launcher's files and compare every job once at the end.

The sweeps pin OMP_NUM_THREADS=1: joblib and Ray give each worker cores/n_jobs threads, and a CPU matmul summed
over another number of threads differs in the last float digits (gd's train loss does), so byte-equal files need
the same thread count in every launcher.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hydra.utils
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from icl_gd import io
from icl_gd.config import config_hash
from icl_gd.sweep.callbacks import LauncherNotInstalled, check_launcher
from tests.helpers.cli import run_py
from tests.helpers.config import ROOT, job_folder, subprocess_env
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


def ray_python() -> str:
    """An interpreter with Ray and its Hydra plugin: this one where the ray extra is installed, else the Ray
    environment `make ray-env` builds beside this one (<venv>/ray: hydra-ray-launcher pins cloudpickle and joblib
    below what this environment has), or $ICL_GD_RAY_PYTHON."""
    if all(importlib.util.find_spec(m) for m in ("ray", "hydra_plugins.hydra_ray_launcher")):
        return sys.executable
    path = Path(os.environ.get("ICL_GD_RAY_PYTHON") or Path(sys.prefix) / "ray" / "bin" / "python")
    if not path.exists():
        pytest.skip(
            f"ray is not installed here and {path} does not exist: make ray-env (or pip install -e '.[ray]')"
        )
    return str(path)


# run by ray_python(): the check of test_launcher_file_lists_every_knob_of_the_plugin_schema for ray.yaml
SCHEMA_CHECK = """
import importlib, sys
from omegaconf import OmegaConf
module, cls, path = sys.argv[1:]
base = OmegaConf.structured(getattr(importlib.import_module(module), cls))
node = OmegaConf.load(path)
OmegaConf.merge(base, node)  # an unknown key or a wrong type raises
assert set(node) == set(base), sorted(set(node) ^ set(base))
assert node._target_ == base._target_, (node._target_, base._target_)
"""


# ----------------------------------------------------------------------------------------------------------
# The files


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_launcher_file_lists_every_knob_of_the_plugin_schema(name: str) -> None:
    """Each file has the schema's name, so it cannot extend it with `defaults:`; it repeats it, checked here. The
    submitit files name the project's subclasses of the plugin's launchers (hydra_plugins/icl_gd_launchers)."""
    path = LAUNCHER_DIR / f"{name}.yaml"
    if name == "ray" and ray_python() != sys.executable:  # Ray lives in an environment of its own
        proc = subprocess.run(
            [ray_python(), "-c", SCHEMA_CHECK, *SCHEMAS[name], str(path)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return
    node = OmegaConf.load(path)
    base = OmegaConf.structured(schema(name))
    OmegaConf.merge(base, node)  # an unknown key or a wrong type raises
    assert set(node) == set(base)
    if name.startswith(
        "submitit"
    ):  # by name: Hydra's plugin scans re-execute the plugin modules (new classes)
        bases = [f"{c.__module__}.{c.__qualname__}" for c in hydra.utils.get_class(node._target_).__mro__]
        assert bases[0] != base._target_ and base._target_ in bases, (node._target_, base._target_)
    else:
        assert node._target_ == base._target_


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


def run_sweep(
    sweep: Path, *args: str, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return run_py(*SWEEP, f"hydra.sweep.dir={sweep}", *args, env=env or sweep_env(), timeout=timeout)


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
    names = {job_folder("debug=smoke", f"method={m}", "seed=0") for m in ("icl", "gd")}
    assert set(jobs) == set(ref) == names
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
        assert info["group"] == "adhoc-sweep" and info["job_type"] in folder.name
        assert json.loads((folder / io.STATUS).read_text())["torch_threads"] == 1  # OMP_NUM_THREADS=1 stands


def test_a_joblib_sweep_shares_the_cores_among_its_jobs(tmp_path: Path) -> None:
    """Without OMP_NUM_THREADS, each of n_jobs parallel jobs gets cores // n_jobs torch threads (threads=auto)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from icl_gd.threads import usable_cores  # noqa: PLC0415

    sweep = tmp_path / "sweep"
    env = {k: v for k, v in sweep_env().items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = run_sweep(sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for folder in job_folders(sweep).values():
        assert json.loads((folder / io.STATUS).read_text())["torch_threads"] == max(1, usable_cores() // 2)


@pytest.mark.slow
def test_submitit_local_sweep_matches_the_basic_launcher(basic_sweep: Path, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    proc = run_sweep(sweep, "hydra/launcher=submitit_local")
    assert_same_jobs_compared_once(sweep, basic_sweep, proc)
    results = list((sweep / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2  # each job ran as its own submitit process


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat past the command name: [state, ppid, ...]; [] for no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _children(pids: set[int]) -> list[int]:
    """The live processes whose parent is one of `pids`."""
    out = []
    for d in Path("/proc").iterdir():
        st = _stat(int(d.name)) if d.name.isdigit() else []
        if st and st[0] != "Z" and int(st[1]) in pids:
            out.append(int(d.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process in /proc")
def test_a_submitit_job_killed_mid_run_is_recorded_failed_and_the_sweep_ends(tmp_path: Path) -> None:
    """The project's submitit launchers (hydra_plugins/icl_gd_launchers) without a cluster: a job SIGKILLed in the
    middle leaves no result; the launcher records it failed (with the state and its log) instead of raising at the
    first such job, the other job is compared, and the sweep exits 1 naming it (tests/e2e/test_slurm_cluster.py
    does the same on SLURM)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep, long = tmp_path / "sweep", 100_000  # gd epochs: minutes on the tiny model
    args = ["-m", "hydra/launcher=submitit_local", "model=tiny_random", "demos=2", "eval.n_queries=4"]
    args += ["logger=none", "method=gd", f"method.epochs=2,{long}", f"hydra.sweep.dir={sweep}"]
    short_dir = sweep / job_folder(
        "demos=2", "eval.n_queries=4", "method.epochs=2", "method=gd", "model=tiny_random"
    )
    long_dir = sweep / job_folder(
        "demos=2", "eval.n_queries=4", f"method.epochs={long}", "method=gd", "model=tiny_random"
    )

    # submitit_local: each job is a wrapper process (its pid is the job id and the .submitit/<pid> folder) running
    # the job's Python as its child
    def wrappers() -> set[int]:
        return {int(p.name) for p in (sweep / ".submitit").glob("*") if p.name.isdigit()}

    with open(tmp_path / "sweep.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "run.py", *args], cwd=ROOT, env=sweep_env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 300
        # once the short job is over (its result written), the long one's is the only submitit job still running
        while True:
            short, running = (io.read_status(short_dir) or {}), (io.read_status(long_dir) or {})
            assert short.get("status") != "failed", short.get("error")
            live = [w for w in wrappers() if not list((sweep / ".submitit" / str(w)).glob("*_result.pkl"))]
            if short.get("status") == "done" and running.get("status") == "running" and len(live) == 1:
                break
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.log").read_text()[
                -3000:
            ]
            time.sleep(0.2)
        job = live[0]
        children = _children({job})
        assert len(children) == 1, children
        os.kill(children[0], signal.SIGKILL)  # the job's own process, as the OOM killer would
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _children(wrappers()) + sorted(wrappers()):  # nothing of the sweep is left running
            with contextlib.suppress(OSError):
                if _stat(pid) and "submitit" in Path(f"/proc/{pid}/cmdline").read_text():
                    os.kill(pid, signal.SIGKILL)
    out = (tmp_path / "sweep.log").read_text()
    assert proc.returncode == 1, out[-3000:]
    st = io.read_status(long_dir)
    assert st["status"] == "failed" and st["error_type"].startswith("JobEnded"), st
    assert f"job {job} ended without a result" in st["error"] and "_log.err" in st["error"]
    assert (io.read_status(short_dir) or {})["status"] == "done"
    assert f"1 of 2 jobs in {sweep} failed: {long_dir.name} (JobEnded" in out
    assert "Traceback" not in out and (sweep / "report.md").exists()


@pytest.mark.slow
def test_ray_sweep_matches_the_basic_launcher(basic_sweep: Path, tmp_path: Path) -> None:
    """A local Ray cluster (2 CPUs, no dashboard, no token auth, its files in a folder of the test's) runs the
    sweep, in the Ray environment (ray_python)."""
    python = ray_python()
    sweep = tmp_path / "sweep"
    ray_tmp = Path(
        tempfile.mkdtemp(prefix="ray", dir="/tmp")
    )  # short: Ray's socket paths must fit in 107 bytes
    try:
        cmd = [
            python,
            "run.py",
            *SWEEP,
            f"hydra.sweep.dir={sweep}",
            "hydra/launcher=ray",
            "hydra.launcher.ray.init.num_cpus=2",
            "+hydra.launcher.ray.init.include_dashboard=false",
            f"+hydra.launcher.ray.init._temp_dir={ray_tmp}",
        ]
        proc = subprocess.run(cmd, cwd=ROOT, env=sweep_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert "Ray Launcher is launching 2 jobs" in proc.stdout + proc.stderr
    assert_same_jobs_compared_once(sweep, basic_sweep, proc)
