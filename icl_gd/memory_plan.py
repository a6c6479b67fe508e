"""Memory plan before a big job: estimate what a job needs before its model loads, and refuse one that cannot fit.

The parameter count comes from the architecture alone: its config (the GGUF file's, the dequantised cache's, the
hub cache's, or KNOWN_ARCHS / model.arch for random_init) built on the meta device, so nothing is allocated and a
7B architecture is counted in a second. From it, per method (all in bytes, `b` = bytes of model.dtype):

- every job: weights n x b; the process itself (Python, torch, transformers, the data: BASELINE_BYTES on the
  CPU, the CUDA context on a GPU); one forward's activations at eval.batch_size x prompt length; the key/value
  cache of the prompt (2 x layers x kv heads x head dim x tokens x b, expanded over a batch of queries) and the
  logits that predict() reads (batch x vocabulary, float32, a few copies);
- gd / gd_search: the trained parameters' gradients (t x b), the optimizer's state (Adam/AdamW: two moments,
  SGD with momentum: one, plain SGD: none; float32 where the parameters are half precision, as the float32 master
  copies are: t x 4 more), the restore copy of the trained parameters (t x b), and the activations kept for the
  backward (demos a step x demo length x layers x ACT_PER_TOKEN_LAYER x hidden x b);
- lora: the adapter (r x (in + out) per adapted linear layer) with its gradients and Adam state, and the same
  backward activations.

`check(cfg, prompt_tokens, demo_tokens)` raises MemoryPlanError (a ConfigError) when the estimate exceeds the
device: the free memory of the GPU(s) for a CUDA job, the machine's available RAM (plus this process's own, which
the estimate counts) for a CPU one. The message gives the estimate, its parts, the device's memory and the cheaper
options with their own estimates (SGD instead of Adam, attn_kv or layer_v, LoRA, bf16, a smaller batch).
Top-level `memory_check: false` turns the check off. Tested against the peak RSS of real jobs here
(tests/unit/test_memory_plan.py): an estimate, not a bound, sized for the jobs this project runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from icl_gd.errors import ConfigError

log = logging.getLogger(__name__)

GIB = 2**30
KIB = 2**10
BASELINE_BYTES = int(
    0.55 * GIB
)  # a job process before its model: Python, torch, transformers, pandas, the data
CUDA_CONTEXT_BYTES = int(0.5 * GIB)  # the CUDA context and kernels of a GPU job
# activations saved for the backward, per token and layer, in units of hidden_size (Llama: the inputs of the 7
# projections and of the norms, q/k/v, the attention output, and the MLP's gate/up/act in intermediate units)
ACT_PER_TOKEN_LAYER = 16
FORWARD_ACT_COPIES = 6  # live (tokens x max(hidden, intermediate)) tensors of one no-grad forward
LOGIT_COPIES = (
    4  # float32 (batch x vocabulary) tensors predict() holds (logits, log-softmax, probs, top-k work)
)
CHARS_PER_TOKEN = (
    3  # a prompt's length in tokens from its characters, before the tokenizer is loaded (BPE: ~4)
)
ADAM_STATES, MOMENTUM_STATES = 2, 1
FLOAT32_BYTES = 4
HALF = ("float16", "bfloat16")
TRAINING_METHODS = ("gd", "gd_search", "lora", "train")
NO_DEMOS_IN_PROMPT = ("zeroshot", "gd", "lora", "train")


class MemoryPlanError(ConfigError):
    """The job's memory estimate exceeds the device: the message has the estimate and cheaper options."""


@dataclass
class Architecture:
    """What the estimate needs from a model config, counted on the meta device."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int
    # parameter counts of named subsets: attn_kv, layer_v (one layer's value projection), lora per target
    kv_params: int = 0
    layer_v_params: int = 0
    linear_shapes: dict[str, list[tuple[int, int]]] = field(
        default_factory=dict
    )  # module name suffix -> (in, out)


@dataclass
class Estimate:
    """A job's estimated memory, by part (bytes), and the device's."""

    parts: dict[str, int]
    device: str
    available: int | None  # bytes the device offers (None: unknown, nothing is checked)
    arch: Architecture

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.available is None or self.total <= self.available

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in self.parts.items() if v)
        return f"~{self.total / GIB:.2f} GiB ({parts} GiB; {self.arch.params / 1e6:.0f}M parameters)"


def _arch_config(model: DictConfig):
    """The transformers config of model=..., without loading any weight (as load_model would build it)."""
    from transformers import AutoConfig  # noqa: PLC0415

    from icl_gd.models.loading import _gguf_path, gguf_config_and_tokenizer, known_arch, resolve_source  # noqa: PLC0415

    src = resolve_source(model)
    if src.arch_only:
        fields = dict(known_arch(model))
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    elif src.gguf_file:
        gguf = _gguf_path(src, model)
        config = gguf_config_and_tokenizer(str(gguf.parent), gguf.name, model.dtype)[0]
    else:
        config = AutoConfig.from_pretrained(
            src.location,
            revision=model.get("revision"),
            trust_remote_code=model.get("trust_remote_code", False),
        )
    if model.get("random_init") and model.get("arch"):
        for k, v in OmegaConf.to_container(model.arch, resolve=True).items():
            if k != "model_type":
                setattr(config, k, v)
    return config


def architecture(config) -> Architecture:
    """Count a transformers config's parameters on the meta device (no memory allocated)."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    named = dict(model.named_parameters())  # tied weights once
    hidden = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0))
    heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 1))
    head_dim = int(getattr(config, "head_dim", 0) or hidden // heads)
    layers = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0))
    shapes: dict[str, list[tuple[int, int]]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes.setdefault(name.rsplit(".", 1)[-1], []).append((module.in_features, module.out_features))
    kv = sum(p.numel() for n, p in named.items() if ".k_proj." in n or ".v_proj." in n)
    v_one = sum(i * o for i, o in shapes.get("v_proj", [])) // max(1, layers)
    return Architecture(
        params=sum(p.numel() for p in named.values()),
        layers=layers,
        hidden=hidden,
        intermediate=int(
            getattr(config, "intermediate_size", 0) or getattr(config, "n_inner", 0) or 4 * hidden
        ),
        kv_heads=int(getattr(config, "num_key_value_heads", 0) or heads),
        head_dim=head_dim,
        vocab=int(config.vocab_size),
        kv_params=kv,
        layer_v_params=v_one,
        linear_shapes=shapes,
    )


def _dtype_bytes(dtype: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype), device="meta").element_size()


def _trained(arch: Architecture, method: DictConfig) -> int:
    name = method.get("name")
    if name == "lora":
        r = int(method.get("r", 0))
        return sum(
            r * (i + o) for t in method.get("target_modules", []) for i, o in arch.linear_shapes.get(t, [])
        )
    params = method.get("params", "all")
    if isinstance(params, list | tuple) or OmegaConf.is_list(params):  # gd_search: its largest set
        params = "all" if "all" in list(params) else (list(params) or ["all"])[0]
    return {"attn_kv": arch.kv_params, "layer_v": arch.layer_v_params}.get(str(params), arch.params)


def _optimizer_states(method: DictConfig) -> int:
    opts = method.get("optimizers") or [method.get("optimizer", "adam")]  # gd_search: the largest of its grid
    states = 0
    for opt in list(opts):
        if str(opt) in ("adam", "adamw"):
            states = max(states, ADAM_STATES)
        elif str(opt) == "sgdm" or (str(opt) == "sgd" and float(method.get("momentum", 0) or 0) > 0):
            states = max(states, MOMENTUM_STATES)
    return states


def estimate(
    cfg: DictConfig, prompt_tokens: int, demo_tokens: int, arch: Architecture | None = None
) -> Estimate:
    """The memory a job of `cfg` needs: prompts of `prompt_tokens` (ICL: demos + query), demos of `demo_tokens`."""
    arch = arch or architecture(_arch_config(cfg.model))
    b = _dtype_bytes(str(cfg.model.dtype))
    method = cfg.method
    batch = int(cfg.eval.batch_size)
    n = arch.params
    cuda = _on_cuda(cfg.model)
    parts: dict[str, int] = {
        "baseline": BASELINE_BYTES + (CUDA_CONTEXT_BYTES if cuda else 0),
        "weights": n * b,
        "kv_cache": 2 * arch.layers * arch.kv_heads * arch.head_dim * prompt_tokens * batch * b,
        "activations": FORWARD_ACT_COPIES * batch * prompt_tokens * max(arch.hidden, arch.intermediate) * b
        + LOGIT_COPIES * batch * arch.vocab * FLOAT32_BYTES,
    }
    if method.get("name") in TRAINING_METHODS:
        t = _trained(arch, method)
        lora = method.get("name") == "lora"
        half = str(cfg.model.dtype) in HALF
        per_step = len_or_all(method.get("batch_size", 1), int(cfg.get("demos", 1) or 1))
        state_bytes = FLOAT32_BYTES if half else b
        parts["gradients"] = t * b
        parts["optimizer_state"] = _optimizer_states(method) * t * state_bytes
        parts["master_weights"] = t * FLOAT32_BYTES if half else 0
        parts["restore_copy"] = 0 if lora else t * b
        parts["adapter"] = t * b if lora else 0
        parts["backward_activations"] = (
            per_step * demo_tokens * arch.layers * ACT_PER_TOKEN_LAYER * arch.hidden * b
            + per_step * demo_tokens * arch.vocab * FLOAT32_BYTES
        )
    return Estimate(parts, "cuda" if cuda else "cpu", available_bytes(cfg.model), arch)


def len_or_all(batch_size: Any, n_demos: int) -> int:
    """Demos per optimizer step: method.batch_size, or all of them."""
    return n_demos if str(batch_size) == "all" else int(batch_size)


def _on_cuda(model: DictConfig) -> bool:
    dev = str(model.get("device", "cpu"))
    return dev.startswith("cuda") or (dev == "auto" and torch.cuda.is_available())


def _ram_available() -> int | None:
    """Bytes of RAM this process can have: the machine's available memory plus what the process holds now."""
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        with open("/proc/self/status") as f:
            rss = int(next(x for x in f if x.startswith("VmRSS:")).split()[1]) * KIB
        available = int(info["MemAvailable"].split()[0]) * KIB
        return available + rss
    except (OSError, KeyError, StopIteration, ValueError):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None


def available_bytes(model: DictConfig) -> int | None:
    """The device's memory for this job: free GPU memory (every GPU, plus RAM with device=auto, where accelerate
    offloads), or the RAM available to this process."""
    if not _on_cuda(model):
        return _ram_available()
    dev = str(model.get("device"))
    if dev == "auto":
        free = sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
        return free + (_ram_available() or 0)
    index = torch.device(dev).index or 0
    return torch.cuda.mem_get_info(index)[0]


def cheaper_options(
    cfg: DictConfig, prompt_tokens: int, demo_tokens: int, arch: Architecture
) -> list[tuple[str, int]]:
    """(override, its estimate in bytes) for each cheaper way to run the job that applies to it."""
    method = cfg.method
    options: list[str] = []
    if method.get("name") in TRAINING_METHODS:
        if _optimizer_states(method) > 0 and method.get("name") != "gd_search":
            options.append("method.optimizer=sgd")
        if method.get("name") == "gd" and method.get("params") == "all":
            options += ["method.params=attn_kv", "method.params=layer_v"]
        if method.get("name") == "gd":
            options.append("method=lora")
    if str(cfg.model.dtype) not in HALF:
        options.append("model.dtype=bfloat16")
    if int(cfg.eval.batch_size) > 1:
        options.append(f"eval.batch_size={max(1, int(cfg.eval.batch_size) // 4)}")
    if method.get("name") in TRAINING_METHODS and str(method.get("batch_size")) == "all":
        options.append("method.batch_size=1")
    out = []
    for o in options:
        alt = _with(cfg, o)
        out.append((o, estimate(alt, prompt_tokens, demo_tokens, arch).total))
    return sorted(out, key=lambda x: x[1])


def _with(cfg: DictConfig, override: str) -> DictConfig:
    """cfg with one `key=value` override (method=lora: lora's defaults in place of the gd method)."""
    key, value = override.split("=", 1)
    alt = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if key == "method":
        alt.method = OmegaConf.merge(
            alt.method, {"name": value, "r": 8, "target_modules": ["q_proj", "v_proj"]}
        )
        return alt
    OmegaConf.update(alt, key, OmegaConf.create({"v": value}).v if value != "null" else None, force_add=True)
    if key == "method.params" and value == "layer_v":
        OmegaConf.update(alt, "method.layer", "middle", force_add=True)
    return alt


def check(cfg: DictConfig, prompt_tokens: int, demo_tokens: int) -> Estimate | None:
    """Estimate the job and raise MemoryPlanError if it cannot fit; None when `memory_check` is off."""
    if not cfg.get("memory_check", True):
        return None
    est = estimate(cfg, prompt_tokens, demo_tokens)
    # one line per job is the console's rule: the plan is said when it refuses (below); hydra.verbose shows it
    log.debug("memory plan: %s; %s offers %s", est.describe(), est.device, _gib(est.available))
    if est.fits:
        return est
    options = cheaper_options(cfg, prompt_tokens, demo_tokens, est.arch)
    listed = "; ".join(
        f"{o} (~{v / GIB:.1f} GiB{'' if v <= (est.available or 0) else ', still too much'})"
        for o, v in options
    )
    raise MemoryPlanError(
        f"model={cfg.model.name} method={cfg.method.name} needs {est.describe()} but the {est.device} has "
        f"{_gib(est.available)}: cheaper options: {listed or 'none apply'}. Set memory_check=false to run anyway."
    )


def _gib(n: int | None) -> str:
    return "unknown memory" if n is None else f"{n / GIB:.1f} GiB"


def prompt_lengths(template, demos: list, queries: list, separator: str) -> tuple[int, int]:
    """(ICL prompt tokens, demo tokens) estimated from the characters (the tokenizer is not loaded yet): the
    longest query after all the demos, and the longest demo alone."""
    demo_chars = [len(template.demo(d.fields, d.answer)) for d in demos]
    query_chars = max((len(template.demo(q.fields, q.answer)) for q in queries), default=0)
    prompt = sum(demo_chars) + len(separator) * len(demo_chars) + query_chars
    return -(-prompt // CHARS_PER_TOKEN), -(-max(demo_chars + [query_chars]) // CHARS_PER_TOKEN)


def check_job(cfg: DictConfig, template, demos: list, queries: list, separator: str) -> Estimate | None:
    """The runner's hook, before the model loads: `check` with the job's prompt lengths (the demos are in the
    prompt for ICL and gd_search, which answers with ICL too; a fine-tuned model answers the query alone)."""
    in_prompt = demos if cfg.method.name not in NO_DEMOS_IN_PROMPT else []
    prompt, _ = prompt_lengths(template, in_prompt, queries, separator)
    _, demo = prompt_lengths(template, demos, queries, separator)
    return check(cfg, prompt, demo)
