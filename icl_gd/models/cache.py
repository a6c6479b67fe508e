"""On-disk cache of dequantised GGUF models, so only the first process pays for the dequantisation.

Loading the bundled SmolLM2 GGUF file dequantises every tensor and converts the GGUF tokenizer (about 25 s here);
loading the same weights from a safetensors folder takes about a second. The first load of a GGUF file writes
its config, tokenizer and dequantised weights to an entry folder under the cache root; later processes load that.

Cache root: `$ICL_GD_CACHE` (`off`, `0`, `none` or `false` turn the cache off), else `$XDG_CACHE_HOME/icl_gd`,
else `~/.cache/icl_gd`.

Entry key: sha256 over the GGUF file's name, size, modification time (ns) and the sha256 of its first and last
MiB, plus the dtype the weights were dequantised to, the transformers version (the dequantisation code) and this
module's FORMAT. Hashing 2 MiB costs milliseconds whatever the file's size; size + mtime catch any rewrite by a
normal tool, and the head/tail hash catches a file replaced in place with its mtime kept (GGUF keeps its metadata
at the head). A changed file gets a new key, so a stale entry is never read; writing a new entry removes the
other entries made from the same path.

An entry is written into a temporary folder and renamed into place (weights added later by an atomic replace),
so concurrent processes of a parallel sweep never read a half-written entry. Any failure to write is logged
and ignored: the cache only ever saves time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_ENV = "ICL_GD_CACHE"
OFF_VALUES = ("", "0", "off", "none", "false", "no")
FORMAT = 1  # bump when the layout of an entry changes
CHUNK = 1 << 20  # bytes hashed at each end of the file
META = "meta.json"  # written last in an entry: its presence means config + tokenizer are there
WEIGHTS = "model.safetensors"


def cache_root() -> Path | None:
    """The cache folder, or None when the cache is off."""
    raw = os.environ.get(CACHE_ENV)
    if raw is not None:
        return None if raw.strip().lower() in OFF_VALUES else Path(raw).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "icl_gd"


def fingerprint(path: Path) -> dict[str, Any]:
    """What identifies a file's content cheaply: size, mtime and a hash of its first and last MiB."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(CHUNK))
        if st.st_size > CHUNK:
            f.seek(max(CHUNK, st.st_size - CHUNK))
            h.update(f.read(CHUNK))
    return {
        "name": path.name,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "head_tail_sha256": h.hexdigest(),
    }


def entry_key(path: Path, dtype: str) -> str:
    import transformers  # noqa: PLC0415 -- the dequantisation code is part of what the weights depend on

    payload = {
        "file": fingerprint(path),
        "dtype": dtype,
        "transformers": transformers.__version__,
        "format": FORMAT,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def entry_dir(path: Path, dtype: str, root: Path | None = None) -> Path | None:
    """The entry folder for a GGUF file at a dtype (it may not exist yet); None when the cache is off."""
    root = root or cache_root()
    if root is None:
        return None
    return root / "gguf" / f"{path.stem}-{entry_key(path, dtype)}"


def has_tokenizer(entry: Path | None) -> bool:
    return entry is not None and (entry / META).exists()


def has_weights(entry: Path | None) -> bool:
    return has_tokenizer(entry) and (entry / WEIGHTS).exists()


def _clean_config(config) -> Any:
    """A copy of a GGUF model's config without its quantization_config (the cached weights are plain tensors)."""
    import copy  # noqa: PLC0415

    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


def write_base(entry: Path, source: Path, config, tokenizer) -> None:
    """Write config + tokenizer (+ meta.json last) of an entry atomically; no-op when it exists."""
    if has_tokenizer(entry):
        return
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like the Hugging Face cache
            _clean_config(config).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            meta = {"source": str(source.resolve()), "file": fingerprint(source), "format": FORMAT}
            (tmp / META).write_text(json.dumps(meta, indent=1))
            try:
                os.rename(tmp, entry)
            except OSError:  # another process wrote it first (or a partial folder is in the way)
                if not has_tokenizer(entry):
                    shutil.rmtree(entry, ignore_errors=True)
                    os.rename(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _prune_siblings(entry, source)
        log.info("cached config and tokenizer of %s in %s", source.name, entry)
    except Exception as e:  # the cache only saves time: never fail a load because of it
        log.warning("could not write the model cache entry %s: %s: %s", entry, type(e).__name__, e)


def write_weights(entry: Path, model) -> None:
    """Add the dequantised weights to an entry (written to a temp file, then renamed into place)."""
    if has_weights(entry) or not has_tokenizer(entry):
        return
    try:
        from safetensors.torch import save_model  # noqa: PLC0415 -- drops tied duplicates, as save_pretrained does

        fd, tmp = tempfile.mkstemp(prefix=".weights.", suffix=".safetensors", dir=entry)
        os.close(fd)
        try:
            save_model(model, tmp, metadata={"format": "pt"})
            os.replace(tmp, entry / WEIGHTS)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        log.info("cached the dequantised weights in %s", entry / WEIGHTS)
    except Exception as e:
        log.warning("could not write the cached weights in %s: %s: %s", entry, type(e).__name__, e)


def _prune_siblings(entry: Path, source: Path) -> None:
    """Remove the entries made from the same GGUF path with another key (the file changed since)."""
    src = str(source.resolve())
    for other in entry.parent.glob(f"{source.stem}-*"):
        if other == entry or not other.is_dir():
            continue
        try:
            meta = json.loads((other / META).read_text())
        except (OSError, ValueError):
            continue
        if meta.get("source") == src and meta.get("file") != fingerprint(source):
            shutil.rmtree(other, ignore_errors=True)
            log.info("removed the stale model cache entry %s (%s changed)", other, source.name)
