"""Data: examples from local files or the hub, prompt templates, and seeded demo/query sampling."""

from icl_gd.data.loading import Example, Splits, load_splits
from icl_gd.data.paths import DATA_ENV, resolve_data_dir
from icl_gd.data.prompts import Template
from icl_gd.data.sampling import (
    order_demos,
    sample_demos,
    sample_heldout,
    sample_queries,
    sample_selection,
    shuffle_labels,
)

__all__ = [
    "DATA_ENV",
    "Example",
    "Splits",
    "Template",
    "load_splits",
    "order_demos",
    "resolve_data_dir",
    "sample_demos",
    "sample_heldout",
    "sample_queries",
    "sample_selection",
    "shuffle_labels",
]
