"""Models: loading by hub id, local folder, GGUF file or random init, cached once per process."""

from icl_gd.models.loading import LoadedModel, clear_cache, load_model, resolve_source

__all__ = ["LoadedModel", "clear_cache", "load_model", "resolve_source"]
