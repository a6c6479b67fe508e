"""The one way the tests run the command line: `python run.py ...` or `python -m <module> ...` in a subprocess."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.config import ROOT, subprocess_env

# Runs run.py as `python run.py` does, with one module made unimportable first (sys.modules[name] = None is what
# an import sees when the package is not installed): argv = [-c, HIDE_MODULE, <module>, <run.py's arguments>...]
HIDE_MODULE = (
    "import runpy, sys; sys.modules[sys.argv[1]] = None; sys.argv = ['run.py', *sys.argv[2:]]; "
    "runpy.run_path('run.py', run_name='__main__')"
)


def run_py(
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float | None = 600,
    cwd: Path = ROOT,
    module: str | None = None,
    hide_module: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python run.py *args` (or `python -m <module> *args`) in cwd, output captured as text.

    env: the child's environment, subprocess_env() when None. check: a non-zero exit fails the test with the
    command and the tail of its output. timeout: seconds (None waits forever). hide_module: run.py with that
    module unimportable, as if its package were not installed."""
    if module is not None and hide_module is not None:
        raise ValueError("run_py: module= and hide_module= do not combine")
    if module is not None:
        head = [sys.executable, "-m", module]
    elif hide_module is not None:
        head = [sys.executable, "-c", HIDE_MODULE, hide_module]
    else:
        head = [sys.executable, "run.py"]
    cmd = [*head, *args]
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=subprocess_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"python {shlex.join(cmd[1:])} exited {proc.returncode} (in {cwd})\n"
            f"--- stdout (last 2000 chars) ---\n{proc.stdout[-2000:]}\n"
            f"--- stderr (last 4000 chars) ---\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    return proc
