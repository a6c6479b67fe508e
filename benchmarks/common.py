"""Shared pieces of the benchmarks: the machine, timers, configs and the prompts of a real job."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    """What the ratios were measured on; load averages say how contended the cores were."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['cpu']}: {m['cores_usable']}/{m['cores']} cores, torch threads {m['torch_threads']}, "
        f"device {m['device']}, torch {m['torch']}, load avg {m.get('load_avg_1m')}"
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def compose(overrides: list[str]):
    """The config the command line would compose (conf/config.yaml + overrides)."""
    from hydra import compose as hydra_compose  # noqa: PLC0415
    from hydra import initialize_config_dir  # noqa: PLC0415
    from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return hydra_compose(config_name="config", overrides=["output_dir=/tmp/icl_gd_bench", *overrides])


@dataclass
class JobInputs:
    prompts: list[str]
    answers: list[str]
    label_words: list[str] | None  # continuations (" world"), as answer_queries passes them


def icl_inputs(dataset: str, n_demos: int, n_queries: int, seed: int = 0) -> JobInputs:
    """The prompts an icl job of (dataset, demos, seed) builds, through the project's own data code."""
    from omegaconf import OmegaConf  # noqa: PLC0415

    from icl_gd.data import (  # noqa: PLC0415
        Template,
        load_splits,
        order_demos,
        resolve_data_dir,  # noqa: PLC0415
        sample_demos,
        sample_queries,
    )
    from icl_gd.data.prompts import build_prompt  # noqa: PLC0415

    cfg = compose([f"dataset={dataset}", f"demos={n_demos}", f"eval.n_queries={n_queries}", f"seed={seed}"])
    ds = cfg.dataset
    template = Template(ds.template, list(ds.text_fields))
    splits = load_splits(ds, resolve_data_dir(cfg))
    queries = sample_queries(splits.test, n_queries, seed, ds.name)
    demos = order_demos(sample_demos(splits.pool, n_demos, seed, ds.name, cfg.demo_sampling), cfg.order_seed)
    context = [template.demo(d.fields, d.answer) for d in demos]
    fmt = [template.query(q.fields, q.answer) for q in queries]
    words = list(OmegaConf.to_container(ds.label_words).values()) if ds.label_words else None
    conts = [template.query(queries[0].fields, w)[1] for w in words] if words else None
    return JobInputs([build_prompt(context, p, ds.separator) for p, _ in fmt], [a for _, a in fmt], conts)


def gd_batch(dataset: str, n_demos: int, seed: int = 0, tokenizer=None) -> list[tuple[list[int], list[int]]]:
    """The training batch a gd job of (dataset, demos, seed) trains on: each demo formatted alone as a query with
    its answer (MethodInputs.training_batch), tokenised by `tokenizer` (default: the default model's)."""
    from icl_gd.data import (  # noqa: PLC0415
        Template,
        load_splits,
        order_demos,
        resolve_data_dir,  # noqa: PLC0415
        sample_demos,
    )
    from icl_gd.methods import finetune  # noqa: PLC0415
    from icl_gd.models import load_model  # noqa: PLC0415

    cfg = compose([f"dataset={dataset}", f"demos={n_demos}", f"seed={seed}"])
    ds = cfg.dataset
    template = Template(ds.template, list(ds.text_fields))
    splits = load_splits(ds, resolve_data_dir(cfg))
    demos = order_demos(sample_demos(splits.pool, n_demos, seed, ds.name, cfg.demo_sampling), cfg.order_seed)
    fmt = [template.query(d.fields, d.answer) for d in demos]
    tok = tokenizer if tokenizer is not None else load_model(cfg.model).tokenizer
    return finetune.build_batch(tok, [q for q, _ in fmt], [a for _, a in fmt], cfg.model.add_bos)


# Runs a script (or -c code) and writes the process's VmHWM at exit. ru_maxrss would not do: Linux carries the
# parent's high-water mark across fork + exec, so every child of a big benchmark process would report the parent's.
_BOOT = """
import atexit, os, runpy, sys
def _hwm():
    try:
        kib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        open(os.environ["ICL_GD_BENCH_HWM"], "w").write(str(kib))
    except Exception:
        pass
atexit.register(_hwm)
if sys.argv[1] == "-c":
    code, sys.argv = sys.argv[2], ["-c", *sys.argv[3:]]
    exec(compile(code, "<bench>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_child(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 1800
) -> tuple[float, dict, str]:
    """Run `python <args>` in the project root; (wall seconds, {"peak_rss_gib": its own peak RSS}, its output)."""
    with tempfile.TemporaryDirectory(prefix="icl_gd_child_") as tmp:
        hwm = Path(tmp) / "hwm"
        full_env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        full_env.update(env or {}, ICL_GD_BENCH_HWM=str(hwm))
        with open(Path(tmp) / "log", "w+") as log:
            t = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, *args],
                cwd=ROOT,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            wall = time.perf_counter() - t
            log.seek(0)
            out = log.read()
        peak = int(hwm.read_text()) / 2**20 if hwm.exists() else float("nan")  # KiB -> GiB
    if proc.returncode != 0:
        raise RuntimeError(
            f"python {' '.join(args)} exited {proc.returncode} after {wall:.0f}s:\n{out[-3000:]}"
        )
    return wall, {"peak_rss_gib": peak}, out
