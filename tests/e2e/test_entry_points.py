"""The ways in: `python -m icl_gd`, the `icl-gd` console script (with Hydra's shell completion), and a wheel
installed outside the checkout, which finds its configs as package data (pkg://icl_gd.conf)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from icl_gd.data import DATA_ENV, resolve_data_dir
from tests.helpers.cli import run_py
from tests.helpers.config import ROOT, subprocess_env

TINY = ["model=tiny_random", "logger=none", "eval.n_queries=2", "method=zeroshot", "demos=0"]
CLI = Path(sys.executable).parent / "icl-gd"


def _ran(folder: Path) -> None:
    assert (folder / "metrics.json").is_file() and (folder / "icl-gd.log").is_file()


@pytest.mark.slow
def test_python_dash_m_runs_a_job(tmp_path: Path) -> None:
    run_py(*TINY, f"hydra.run.dir={tmp_path / 'job'}", module="icl_gd")
    _ran(tmp_path / "job")


@pytest.mark.slow
def test_the_console_script_runs_a_job_and_completes_config_groups(tmp_path: Path) -> None:
    if not CLI.exists():
        pytest.skip(f"no {CLI}: reinstall the package (make install) for its console script")
    env = subprocess_env()
    proc = subprocess.run([str(CLI), "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("icl-gd is powered by Hydra.")
    job = tmp_path / "job"
    subprocess.run(
        [str(CLI), *TINY, f"hydra.run.dir={job}"],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=300,
        capture_output=True,
    )
    _ran(job)
    install = subprocess.run(
        [str(CLI), "-sc", "install=bash"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "complete -o nospace -o default -F hydra_bash_completion icl-gd" in install.stdout
    line = "icl-gd model=tiny"
    query = subprocess.run(
        [str(CLI), "-sc", "query=bash"],
        env={**env, "COMP_LINE": line, "COMP_POINT": str(len(line))},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert query.stdout.split() == ["model=tiny_random"]


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_runs_from_its_package_data(tmp_path: Path) -> None:
    """The wheel in a fresh venv that borrows this environment's dependencies (a .pth after its own packages)."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
        capture_output=True,
        cwd=tmp_path,
    )
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "zz_borrowed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (wheel,) = wheels.glob("icl_gd-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    python = venv / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import icl_gd.confdir as c; print(c.__file__, c.hydra_config_path())"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(site)) and where[1] == "pkg://icl_gd.conf"
    assert not (site / "icl_gd" / "conf" / "local" / "default.yaml").exists()
    job = tmp_path / "job"
    # outside the checkout there is no ../shared/data beside the project: say where the checkout's data is
    data = resolve_data_dir(OmegaConf.create({}))
    proc = subprocess.run(
        [str(python), "-m", "icl_gd", *TINY, f"hydra.run.dir={job}"],
        cwd=tmp_path,
        env={**subprocess_env(), DATA_ENV: str(data)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _ran(job)
    shown = subprocess.run(  # --cfg job composes from the package data too
        [str(python), "-m", "icl_gd", "--cfg", "job", "method=gd"],
        cwd=tmp_path,
        env={**subprocess_env(), DATA_ENV: str(data)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0 and "  lr: 0.0001  # float" in shown.stdout, shown.stderr[-3000:]
