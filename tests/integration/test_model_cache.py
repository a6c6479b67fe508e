"""Model loading and reuse: the dequantised GGUF cache, random_init without weights, in-memory restore."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from icl_gd.errors import ModelNotFoundError
from icl_gd.methods import finetune
from icl_gd.models import cache, clear_cache, load_model, resolve_source
from icl_gd.models.loading import FALLBACK_TOKENIZER, gguf_config_and_tokenizer, known_arch, package_folder
from tests.helpers.config import DATA, compose_config
from tests.helpers.methods import run_method


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "icl_gd_cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(root))
    return root


def write_file(path: Path, n_bytes: int, seed: int = 0) -> Path:
    path.write_bytes(
        torch.randint(0, 256, (n_bytes,), generator=torch.Generator().manual_seed(seed)).byte().numpy()
    )
    return path


# ---- the cache key ----


def test_cache_root_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"
    for off in ("off", "0", "none", "false"):
        monkeypatch.setenv(cache.CACHE_ENV, off)
        assert cache.cache_root() is None and cache.entry_dir(tmp_path / "x.gguf", "float32") is None
    monkeypatch.delenv(cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "icl_gd"


def test_key_changes_when_the_file_changes(tmp_path: Path) -> None:
    f = write_file(tmp_path / "m.gguf", 3 * cache.CHUNK + 17)
    key = cache.entry_key(f, "float32")
    assert cache.entry_key(f, "float32") == key  # stable
    assert cache.entry_key(f, "bfloat16") != key  # the dtype the weights were dequantised to

    st = f.stat()
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF  # same size, same mtime, one byte of the tail changed
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and cache.entry_key(f, "float32") != key
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.entry_key(f, "float32") == key  # the same content again

    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched
    assert cache.entry_key(f, "float32") != key
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open(f, "ab") as fh:  # grown
        fh.write(b"x")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.entry_key(f, "float32") != key


def test_entry_is_written_atomically_and_a_changed_file_replaces_it(
    tiny_lm, cache_dir: Path, tmp_path: Path
) -> None:
    """A stand-in source file (the cache never parses it): a new entry for the changed file, the old one gone."""
    src = write_file(tmp_path / "model.gguf", 2 * cache.CHUNK)
    old = cache.entry_dir(src, "float32")
    cache.write_base(old, src, tiny_lm.model.config, tiny_lm.tokenizer)
    assert cache.has_tokenizer(old) and not cache.has_weights(old)
    cache.write_weights(old, tiny_lm.model)
    assert cache.has_weights(old)
    assert not [p for p in old.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind

    write_file(src, 2 * cache.CHUNK, seed=1)  # the file is replaced
    new = cache.entry_dir(src, "float32")
    assert new != old and not cache.has_tokenizer(new)  # the stale entry is never read
    cache.write_base(new, src, tiny_lm.model.config, tiny_lm.tokenizer)
    assert cache.has_tokenizer(new) and not old.exists()


def test_cache_write_failure_never_fails_a_load(tiny_lm, tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    # logs, does not raise
    cache.write_base(blocker / "entry", blocker, tiny_lm.model.config, tiny_lm.tokenizer)
    assert not (blocker / "entry").exists()


@pytest.mark.slow
def test_random_init_reads_config_and_tokenizer_from_the_cache(cache_dir: Path, tmp_path: Path) -> None:
    """A temp copy of the bundled GGUF file: the first load writes the entry, a changed file gets a new one."""
    folder, name = package_folder(FALLBACK_TOKENIZER[0]), FALLBACK_TOKENIZER[1]
    copy = tmp_path / "gguf"
    copy.mkdir()
    shutil.copy2(folder / name, copy / name)
    overrides = ["model=tiny_random", f"model.path={copy}", "output_dir=/tmp/x"]
    first = load_model(compose_config(overrides).model)
    entry = cache.entry_dir(copy / name, "float32")
    assert cache.has_tokenizer(entry) and not cache.has_weights(entry)  # random_init dequantises nothing

    config, tok = gguf_config_and_tokenizer(str(copy), name, "float32")  # now from the entry
    texts = [
        line for line in (DATA / "classification" / "agnews" / "test.jsonl").read_text().splitlines()[:50]
    ]
    assert [tok(t).input_ids for t in texts] == [first.tokenizer(t).input_ids for t in texts]
    assert config.num_hidden_layers == 30  # SmolLM2's own config; tiny_random's arch is applied on top

    st = (copy / name).stat()
    os.utime(copy / name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    clear_cache()
    load_model(compose_config(overrides).model)
    assert cache.has_tokenizer(cache.entry_dir(copy / name, "float32")) and not entry.exists()


@pytest.mark.slow
def test_smollm2_from_the_cache_is_bit_identical(cache_dir: Path) -> None:
    cfg = compose_config(["output_dir=/tmp/x"]).model
    clear_cache()
    fresh = load_model(cfg)  # dequantised from the GGUF file, then cached
    src = resolve_source(cfg)
    entry = cache.entry_dir(Path(src.location) / src.gguf_file, "float32")
    assert cache.has_weights(entry)
    before = {n: p.detach().clone() for n, p in fresh.model.state_dict().items()}
    clear_cache()
    again = load_model(cfg)
    after = again.model.state_dict()
    assert again is not fresh and before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)
    texts = ["input: Stocks fell.\ntype:", " sports", "Ünïcode — text\n\n"]
    assert [fresh.tokenizer(t).input_ids for t in texts] == [again.tokenizer(t).input_ids for t in texts]
    assert again.tokenizer.pad_token_id == fresh.tokenizer.pad_token_id

    weights = entry / cache.WEIGHTS  # mapped copy-on-write: training the loaded model never writes the file
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    with torch.no_grad():
        for p in again.model.parameters():
            p.add_(1.0)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest
    clear_cache()


# ---- random_init without weights ----


def test_llama7b_random_init_needs_no_download() -> None:
    cfg = compose_config(["model=llama7b", "model.random_init=true", "output_dir=/tmp/x"]).model
    src = resolve_source(cfg)  # HF_HUB_OFFLINE=1 in tests: no network, nothing cached
    assert src.arch_only
    from transformers import AutoConfig, AutoModelForCausalLM  # noqa: PLC0415

    fields = dict(known_arch(cfg))
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):  # the full 7B architecture, no memory
        model = AutoModelForCausalLM.from_config(config)
    assert 6.7e9 < sum(p.numel() for p in model.parameters()) < 6.8e9


def test_llama7b_random_init_small_builds_and_runs() -> None:
    cfg = compose_config(
        [
            "model=llama7b",
            "model.random_init=true",
            "model.device=cpu",
            "model.dtype=float32",
            "++model.arch={num_hidden_layers: 1, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, "
            "num_key_value_heads: 4}",
            "output_dir=/tmp/x",
        ]
    ).model
    lm = load_model(cfg)
    assert type(lm.model).__name__ == "LlamaForCausalLM" and lm.model.config.num_hidden_layers == 1
    ids = torch.tensor([lm.tokenizer("hello world").input_ids])
    with torch.no_grad():
        assert torch.isfinite(lm.model(input_ids=ids).logits).all()


def test_random_init_of_an_unknown_hub_id_says_how_to_give_the_architecture() -> None:
    cfg = compose_config(
        ["model=gpt2", "model.path=someone/unknown-model", "model.random_init=true", "output_dir=/tmp/x"]
    ).model
    with pytest.raises(ModelNotFoundError, match="model.arch with a model_type"):
        resolve_source(cfg)
    ok = compose_config(
        [
            "model=gpt2",
            "model.path=someone/unknown-model",
            "model.random_init=true",
            "++model.arch={model_type: gpt2, n_layer: 1, n_embd: 32, n_head: 2}",
            "output_dir=/tmp/x",
        ]
    ).model
    assert resolve_source(ok).arch_only and load_model(ok).model.config.n_layer == 1


def test_trained_model_without_weights_still_fails() -> None:
    with pytest.raises(ModelNotFoundError, match="model.path="):
        resolve_source(compose_config(["model=llama7b", "output_dir=/tmp/x"]).model)


# ---- reuse within a process ----


def test_model_is_loaded_once_and_a_gd_job_leaves_it_bit_identical() -> None:
    model_cfg = compose_config(["model=tiny_random", "output_dir=/tmp/x"]).model
    tiny = load_model(model_cfg)  # other tests clear the per-process cache: load here, then again
    assert load_model(model_cfg) is tiny
    from icl_gd.data import Example, Template  # noqa: PLC0415

    before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    cfg = compose_config(
        ["output_dir=/tmp/x", "method=gd", "method.lr=1e-2", "method.epochs=2", "eval.top_k=3"]
    )
    template = Template("Q: {x}\nA: {label}", ["x"])
    demos = [Example(f"d{i}", {"x": f"word {i}"}, "a", "answer") for i in range(3)]
    queries = [Example("q", {"x": "walk"}, "a", "walked")]
    out = run_method(cfg.method, tiny, template, demos, queries, cfg.eval)
    assert out.train.final_loss < out.train.initial_loss  # it trained
    assert all(torch.equal(p, before[n]) for n, p in tiny.model.named_parameters())  # and was restored

    params = finetune.select_parameters(tiny.model, cfg.method)
    with finetune.restoring(params) as saved:
        assert all(s.data_ptr() != p.data_ptr() for s, p in zip(saved.values(), params.values(), strict=True))
