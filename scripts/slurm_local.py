#!/usr/bin/env python3
"""A single-node SLURM cluster on this machine, for trying `hydra/launcher=submitit_slurm` locally and for the tests.

    python scripts/slurm_local.py up   [--dir D] [--system]   # install (apt) where missing, start, wait for idle
    python scripts/slurm_local.py down [--dir D]              # stop what `up` started, by PID
    python scripts/slurm_local.py env  [--dir D]              # the exports a shell needs to use it

`make slurm-up` / `make slurm-down` call it with --system: the slurm.conf also goes to /etc/slurm/slurm.conf (Debian's
default path), so sbatch, squeue and run.py find the cluster without SLURM_CONF. The tests start their own cluster in
a temporary folder on free ports (tests/helpers/slurm_cluster.py), beside any other.

What it does (the recipe of ../shared/notes/slurm-single-node.md): installs slurmctld, slurmd, slurm-client and munge
with `apt-get install --no-install-recommends` where they are missing (root only), writes a slurm.conf whose node
line is `slurmd -C`'s (this machine's CPUs and memory) and whose state, spool and logs are all under D, starts munged
(unless one already answers), slurmctld and slurmd as processes of their own (no systemd, no cgroups:
proctrack/linuxproc, task/none), waits until the node is idle, and writes each PID it started to D/<daemon>.launch.pid.
`down` cancels the cluster's jobs, then stops each daemon by that PID (SIGTERM, then SIGKILL), whatever state it is in.

Accounting: none (no slurmdbd). submitit asks `sacct` for a job's state; without accounting sacct fails, submitit
calls the state UNKNOWN, and a job that dies without writing its result (scancel, out of memory, a SIGKILL) leaves
the launcher waiting forever. D/bin/sacct is a stand-in that answers submitit's query from slurmctld's memory
(`squeue -t all`, finished jobs kept MinJobAge=3600 s): put D/bin first on PATH (`env` prints it). It is a fixture of
this local cluster, not part of the project: a real cluster's sacct (slurmdbd) answers the same query.
Standard library only: it runs under any python3.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
# the programs each package provides that the cluster needs
PROGRAMS = {
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sinfo": "slurm-client",
    "munged": "munge",
    "munge": "munge",
}
DAEMONS = ("slurmd", "slurmctld", "munged")  # stop order (the reverse of the start order)
DEFAULT_DIR = Path(os.environ.get("ICL_GD_SLURM_DIR", Path(tempfile.gettempdir()) / "icl_gd_slurm"))
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by icl-gd scripts/slurm_local.py"
MUNGE_KEY = Path("/etc/munge/munge.key")

SACCT_SHIM = r"""#!/bin/bash
# A stand-in for sacct on a cluster without accounting (no slurmdbd), written by icl-gd scripts/slurm_local.py:
# it answers submitit's `sacct -o JobID,State,NodeList --parsable2 -j ID...` from slurmctld's memory (squeue -t all),
# so that a job that died without a result is seen as FAILED / CANCELLED / TIMEOUT instead of UNKNOWN forever.
ids=()
while [ $# -gt 0 ]; do
  case "$1" in
    -j|--jobs) ids+=("$2"); shift 2 ;;
    -j*) ids+=("${1#-j}"); shift ;;
    --jobs=*) ids+=("${1#--jobs=}"); shift ;;
    *) shift ;;
  esac
done
echo "JobID|State|NodeList"
for list in "${ids[@]}"; do
  for id in ${list//,/ }; do squeue -h -r -t all -j "$id" -o '%i|%T|%N' 2>/dev/null; done
done
exit 0
"""


class ClusterError(RuntimeError):
    """The cluster could not be installed or started; the message says why (with the daemons' log tails)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_programs() -> list[str]:
    return [
        p for p in PROGRAMS if shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None
    ]


def cannot_run() -> str | None:
    """Why a local cluster cannot be started here (None when it can): root is needed to run slurmd (it starts jobs
    as their user) and, where the packages are missing, apt-get to install them."""
    if sys.platform != "linux":
        return f"a local SLURM cluster needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (slurmd runs as root; apt-get installs the packages)"
    if missing_programs() and shutil.which("apt-get") is None:
        return f"SLURM is not installed ({', '.join(missing_programs())} missing) and there is no apt-get to install it"
    return None


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def install(log=print) -> None:
    """apt-get install the packages where a program is missing (apt-get update first when the lists are stale)."""
    if not missing_programs():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    log(f"installing {' '.join(PACKAGES)} (apt-get, --no-install-recommends)")
    proc = _run(cmd, env=env, timeout=600)
    if proc.returncode != 0:  # a fresh machine has no package lists
        _run(["apt-get", "update", "-q"], env=env, timeout=600)
        proc = _run(cmd, env=env, timeout=600)
    if proc.returncode != 0 or missing_programs():
        raise ClusterError(
            f"apt-get install {' '.join(PACKAGES)} failed:\n{(proc.stdout + proc.stderr)[-2000:]}"
        )


def node_line(min_cpus: int = 4, min_memory_mb: int = 32768) -> tuple[str, bool]:
    """This machine's node line, as slurmd sees it (`slurmd -C`: CPUs, sockets, cores, threads, memory), raised to
    at least `min_cpus` CPUs and `min_memory_mb` MB so that the launcher's defaults (cpus_per_task=4, mem_gb=16) are
    accepted on a small machine; True when raised (slurmd then needs SlurmdParameters=config_overrides, and jobs
    share the real cores)."""
    proc = _run(["slurmd", "-C"], timeout=60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("NodeName=")), None)
    if proc.returncode != 0 or line is None:
        raise ClusterError(f"slurmd -C failed: {(proc.stdout + proc.stderr)[-1000:]}")
    fields = dict(kv.split("=", 1) for kv in line.split())
    cpus, memory = int(fields.get("CPUs", 1)), int(fields.get("RealMemory", 1))
    if cpus >= min_cpus and memory >= min_memory_mb:
        return line.strip(), False
    if cpus < min_cpus:
        fields.update(CPUs=min_cpus, Boards=1, SocketsPerBoard=1, CoresPerSocket=min_cpus, ThreadsPerCore=1)
    fields["RealMemory"] = max(memory, min_memory_mb)
    return " ".join(f"{k}={v}" for k, v in fields.items()), True


def slurm_conf(
    folder: Path, node: str, ctld_port: int, slurmd_port: int, cluster: str, overrides: bool
) -> str:
    name = node.split()[0].split("=", 1)[1]
    raised = (
        "# the node line is raised above this machine's (scripts/slurm_local.py node_line): slurmd takes it as is\n"
        "SlurmdParameters=config_overrides\n"
        if overrides
        else ""
    )
    return f"""{MARK}: a single-node cluster (no systemd, no cgroups, no accounting)
ClusterName={cluster}
SlurmctldHost={name}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# finished jobs stay in slurmctld's memory an hour: squeue -t all (and D/bin/sacct) still see them
MinJobAge=3600
# seconds between SIGTERM and SIGKILL at a time limit or scancel (SLURM's default is 30)
KillWait=5
{raised}{node}
PartitionName=debug Nodes={name} Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """The cluster whose files are under `folder`. start() and stop() are idempotent; stop() never raises."""

    def __init__(
        self, folder: Path | str = DEFAULT_DIR, system: bool = False, cluster: str = "icl_gd"
    ) -> None:
        self.folder = Path(folder).resolve()
        self.system = system  # also write /etc/slurm/slurm.conf (and remove it at stop)
        self.cluster = cluster
        self.conf = self.folder / "slurm.conf"
        self.bin = self.folder / "bin"

    # --- what a client needs
    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (os.environ) with SLURM_CONF and the sacct stand-in first on PATH."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def client(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return _run(list(cmd), env=self.env(), timeout=timeout)

    def node_state(self) -> str:
        try:
            return self.client("sinfo", "-h", "-o", "%T", timeout=10).stdout.strip()
        except subprocess.TimeoutExpired:
            return ""

    # --- start
    def start(self, log=print, timeout: float = 60) -> LocalSlurm:
        reason = cannot_run()
        if reason:
            raise ClusterError(reason)
        if self._running():
            log(f"a cluster is already running from {self.folder}")
            return self
        install(log)
        for sub in ("state", "spool", "log", "bin"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        try:
            self._write_files()
            self._start_munge()
            self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
            deadline = time.monotonic() + timeout
            while self.node_state() != "idle":
                dead = [d for d in ("slurmctld", "slurmd") if not _alive(self._pid(d))]
                if dead or time.monotonic() > deadline:
                    why = (
                        f"{' and '.join(dead)} exited"
                        if dead
                        else f"the node is not idle after {timeout:.0f} s"
                    )
                    raise ClusterError(
                        f"the SLURM cluster in {self.folder} did not start: {why}.\n{self.logs()}"
                    )
                time.sleep(0.5)
        except BaseException:
            self.stop(log=lambda *_: None)
            raise
        log(f"SLURM cluster up: node {self.node_state()}, slurm.conf {self.conf}")
        return self

    def _write_files(self) -> None:
        node, overrides = node_line()
        text = slurm_conf(self.folder, node, free_port(), free_port(), self.cluster, overrides)
        self.conf.write_text(text)
        if self.system:
            if SYSTEM_CONF.exists() and MARK not in SYSTEM_CONF.read_text():
                raise ClusterError(f"{SYSTEM_CONF} exists and was not written here: not replacing it")
            SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
            SYSTEM_CONF.write_text(text)
        shim = self.bin / "sacct"
        shim.write_text(SACCT_SHIM)
        shim.chmod(0o755)

    def _start_munge(self) -> None:
        if self._munge_works():  # one munged per machine: use the one that runs
            return
        if not MUNGE_KEY.exists() or MUNGE_KEY.stat().st_size == 0:
            _run(["mungekey", "--create", f"--keyfile={MUNGE_KEY}"], timeout=60)
            shutil.chown(MUNGE_KEY, "munge", "munge")
        for d in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        cmd = ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", _sbin("munged"), "-F"]
        self._spawn("munged", cmd)  # setpriv execs: the PID is munged's
        deadline = time.monotonic() + 20
        while not self._munge_works():
            if not _alive(self._pid("munged")) or time.monotonic() > deadline:
                raise ClusterError(f"munged did not start.\n{self.logs()}")
            time.sleep(0.2)

    @staticmethod
    def _munge_works() -> bool:
        try:
            enc = _run(["munge", "-n"], timeout=10)
            return enc.returncode == 0 and _run(["unmunge"], input=enc.stdout, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.folder / "log" / f"{name}.out", "ab")  # noqa: SIM115 -- the daemon's, closed below
        try:
            proc = subprocess.Popen(
                [_sbin(cmd[0]) if cmd[0] != "setpriv" else cmd[0], *cmd[1:]],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: a Ctrl-C in the launching shell does not reach it
                env={**os.environ, "SLURM_CONF": str(self.conf)},
            )
        finally:
            out.close()
        (self.folder / f"{name}.launch.pid").write_text(f"{proc.pid}\n")
        (self.folder / f"{name}.launch.json").write_text(json.dumps({"pid": proc.pid, "cmd": cmd}))

    # --- stop
    def _pid(self, name: str) -> int | None:
        try:
            return int((self.folder / f"{name}.launch.pid").read_text())
        except (OSError, ValueError):
            return None

    def _running(self) -> bool:
        return all(_alive(self._pid(d)) for d in ("slurmctld", "slurmd")) and self.node_state() in {
            "idle",
            "mixed",
            "allocated",
        }

    def watch(self, owner: int) -> None:
        """Start a watchdog in a session of its own: when process `owner` (the test run) is gone, however it ended
        (SIGKILL included), it stops the cluster. stop() stops the watchdog."""
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "watch",
                "--dir",
                str(self.folder),
                "--pid",
                str(owner),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        (self.folder / "watchdog.launch.pid").write_text(f"{proc.pid}\n")

    def stop(self, log=print) -> None:
        """Cancel the cluster's jobs, then stop each daemon this folder started, by its PID."""
        watchdog = self._pid("watchdog")
        if watchdog is not None and watchdog != os.getpid():
            _stop_pid(watchdog, grace=2)
        (self.folder / "watchdog.launch.pid").unlink(missing_ok=True)
        if _alive(self._pid("slurmctld")):
            with contextlib.suppress(Exception):
                ids = self.client("squeue", "-h", "-o", "%A", timeout=10).stdout.split()
                if ids:
                    self.client("scancel", *ids, timeout=10)
                    deadline = time.monotonic() + 15
                    while (
                        self.client("squeue", "-h", timeout=10).stdout.strip() and time.monotonic() < deadline
                    ):
                        time.sleep(0.5)
        stopped = []
        for name in DAEMONS:
            pid = self._pid(name)
            if pid is not None and _stop_pid(pid):
                stopped.append(f"{name} ({pid})")
            for f in (f"{name}.launch.pid", f"{name}.launch.json"):
                (self.folder / f).unlink(missing_ok=True)
        if self.system and SYSTEM_CONF.exists() and MARK in SYSTEM_CONF.read_text():
            SYSTEM_CONF.unlink()
        log(f"stopped {', '.join(stopped)}" if stopped else f"no daemon of {self.folder} was running")

    def logs(self, chars: int = 1500) -> str:
        parts = []
        for f in sorted((self.folder / "log").glob("*")):
            with contextlib.suppress(OSError):
                text = f.read_text(errors="replace")[-chars:]
                if text.strip():
                    parts.append(f"--- {f} ---\n{text}")
        return "\n".join(parts)


def _sbin(program: str) -> str:
    return shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or program


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) counts as gone
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _stop_pid(pid: int, grace: float = 10) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; True when it was running."""
    if not _alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "env", "watch"))
    parser.add_argument("--pid", type=int, help="watch: stop the cluster once this process is gone")
    parser.add_argument(
        "--dir", default=str(DEFAULT_DIR), help=f"the cluster's folder (default {DEFAULT_DIR})"
    )
    parser.add_argument(
        "--system", action="store_true", help=f"also write (and at down remove) {SYSTEM_CONF}"
    )
    args = parser.parse_args(argv)
    cluster = LocalSlurm(args.dir, system=args.system)
    if args.action == "up":
        try:
            cluster.start()
        except ClusterError as e:
            print(f"slurm up: {e}", file=sys.stderr)
            return 1
        print(f"Stop it with: make slurm-down (or python {sys.argv[0]} down --dir {cluster.folder})")
        print(
            "To see killed jobs as failed (this cluster has no accounting), put the sacct stand-in first on PATH:"
        )
    if args.action in ("up", "env"):
        print(f"export SLURM_CONF={cluster.conf} PATH={cluster.bin}:$PATH")
    if args.action == "down":
        cluster.stop()
    if args.action == "watch":
        while _alive(args.pid):
            time.sleep(1)
        cluster.stop(log=lambda *_: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
