"""Checkpoints made here, for Shen et al.'s weight evolution without the hub (conf/checkpoints.yaml).

Continued causal-LM training (AdamW, the loss on every token) of a model on the sentences of the classification
data sets' train files, in a seeded random order, saving the model and its tokenizer (save_pretrained) after
`steps` optimizer steps each, as `<out>/step<N>/`: the folder layout model.path + model.revision reads. Each folder
also gets `icl_gd_checkpoint.json` with its step and its relative weight distance from the start,
||W_N - W_0|| / ||W_0|| over all parameters, which the weight-evolution report prints per checkpoint.

    python -m icl_gd.checkpoints out=outputs/checkpoints steps=[0,2,8]
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from icl_gd import confdir
from icl_gd.data.paths import resolve_data_dir
from icl_gd.errors import ConfigError
from icl_gd.methods import fast_step

log = logging.getLogger("icl_gd.checkpoints")

CONFIG = "checkpoints.yaml"
META = "icl_gd_checkpoint.json"  # per checkpoint folder: step, relative distance from the start
PREFIX = "step"  # checkpoint folder names: step<N>, the step the weight-evolution report parses


def load_config(overrides: list[str]) -> DictConfig:
    """conf/checkpoints.yaml with key=value overrides (OmegaConf's dotlist syntax)."""
    cfg = OmegaConf.load(confdir.config_file(CONFIG))
    cfg.merge_with_dotlist(overrides)
    steps = [int(s) for s in cfg.steps]
    if not steps or any(s < 0 for s in steps) or len(set(steps)) != len(steps):
        raise ConfigError(f"steps={list(cfg.steps)}: give distinct optimizer steps >= 0, e.g. [0,8,32].")
    if int(cfg.batch_size) < 1 or int(cfg.max_tokens) < 2 or not float(cfg.lr) > 0:
        raise ConfigError("batch_size >= 1, max_tokens >= 2 and lr > 0 are needed.")
    return cfg


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir  # noqa: PLC0415
    from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(confdir.SOURCE_CONF)):
        return compose(config_name=confdir.CONFIG_NAME, overrides=overrides)


def sentences(datasets: list[str], data_dir: Path | None = None) -> list[str]:
    """The text fields of every row of each data set's train file (conf/dataset/<name>.yaml `path`)."""
    out: list[str] = []
    root = data_dir or resolve_data_dir(OmegaConf.create({"data_dir": None}))
    for name in datasets:
        ds = _compose([f"dataset={name}", "output_dir=/tmp"]).dataset
        path = Path(ds.path) if Path(ds.path).is_absolute() else root / ds.path
        if not path.exists():
            raise ConfigError(f"dataset={name}: no file {path} (set ICL_GD_DATA to ../shared/data).")
        rows = pd.read_json(path, lines=True)
        for field in ds.text_fields:
            out += [str(t).strip() for t in rows[field] if str(t).strip()]
    if not out:
        raise ConfigError(f"no sentences in the train files of {datasets}.")
    return out


def relative_distance(model: torch.nn.Module, start: dict[str, torch.Tensor]) -> float:
    """||W - W_0|| / ||W_0|| over all parameters (Frobenius, float64)."""
    num = den = 0.0
    for n, p in model.named_parameters():
        w0 = start[n].double()
        num += float((p.detach().double() - w0).pow(2).sum())
        den += float(w0.pow(2).sum())
    return math.sqrt(num / den)


def save(model, tokenizer, folder: Path, step: int, distance: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / META).write_text(json.dumps({"step": step, "relative_distance": distance}, indent=2))
    log.info("saved %s (step %d, relative distance from the start %.3g)", folder, step, distance)


def make(cfg: DictConfig, lm: Any = None) -> list[Path]:
    """Train and save the checkpoints of `cfg` (conf/checkpoints.yaml); `lm`: a LoadedModel to use instead of
    cfg.model (it is trained in place and put back afterwards). Returns the checkpoint folders in step order."""
    from icl_gd.models import load_model  # noqa: PLC0415

    if lm is None:
        lm = load_model(_compose([f"model={cfg.model}", "output_dir=/tmp"]).model)
    model, tok = lm.model, lm.tokenizer
    text = sentences(list(cfg.datasets))
    random.Random(int(cfg.seed)).shuffle(text)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    out, steps = Path(cfg.out), sorted(int(s) for s in cfg.steps)
    folders: list[Path] = []
    params = list(model.parameters())
    fused = {"fused": True} if fast_step.fused_ok(params) else {}  # one kernel over all tensors: same update
    opt = torch.optim.AdamW(params, lr=float(cfg.lr), weight_decay=float(cfg.weight_decay), **fused)
    torch.manual_seed(int(cfg.seed))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    bs = int(cfg.batch_size)
    try:
        for step in range(steps[-1] + 1):
            if step in steps:
                model.eval()
                folder = out / f"{PREFIX}{step}"
                save(model, tok, folder, step, relative_distance(model, start))
                folders.append(folder)
            if step == steps[-1]:
                break
            batch = [text[(step * bs + i) % len(text)] for i in range(bs)]
            enc = tok(
                batch,
                add_special_tokens=False,
                truncation=True,
                max_length=int(cfg.max_tokens),
                padding=True,
                return_tensors="pt",
            )
            ids = enc.input_ids.masked_fill(enc.attention_mask == 0, pad)
            labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
            model.train()
            loss = model(input_ids=ids, attention_mask=enc.attention_mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.info("step %d: loss %.4f", step + 1, loss.item())
    finally:
        with torch.no_grad():  # the per-process model cache holds this object: leave it as it was loaded
            for n, p in model.named_parameters():
                p.copy_(start[n])
                p.grad = None
        model.eval()
    return folders


def distance_table(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per (model path, revision) of a sweep's jobs (`folder`, `revision` columns): the step and relative distance
    from the start that the checkpoint maker wrote beside the checkpoint; empty when none did."""
    import yaml  # noqa: PLC0415

    rows, seen = [], set()
    for folder, revision in zip(jobs.get("folder", []), jobs.get("revision", []), strict=False):
        if not isinstance(revision, str) or not revision:
            continue
        try:
            path = (yaml.safe_load((Path(folder) / "config.yaml").read_text()).get("model") or {}).get("path")
        except OSError:
            continue
        meta = Path(str(path)) / revision / META if path else None
        if meta is None or (str(path), revision) in seen or not meta.exists():
            continue
        seen.add((str(path), revision))
        rows.append({"revision": revision, **json.loads(meta.read_text())})
    return pd.DataFrame(rows).sort_values("step", ignore_index=True) if rows else pd.DataFrame()


def distance_md(jobs: pd.DataFrame) -> str:
    """The weight-evolution report's paragraph on the relative weight distance from the start per checkpoint."""
    table = distance_table(jobs)
    if table.empty:
        return ""
    lines = [
        "",
        "Relative weight distance from the start per checkpoint, ||W - W_0|| / ||W_0|| over all parameters "
        "(written by the checkpoint maker, icl_gd/checkpoints.py):",
        "",
        "| revision | step | distance from the start |",
        "|---|---|---|",
        *(f"| {r.revision} | {r.step} | {r.relative_distance:.4g} |" for r in table.itertuples()),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        folders = make(load_config(list(sys.argv[1:] if argv is None else argv)))
    except ConfigError as e:
        log.error("%s", e)
        return 1
    print("\n".join(str(f) for f in folders))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
