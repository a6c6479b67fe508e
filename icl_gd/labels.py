"""Raw labels as text: one rule for a data file's label values and the keys of `dataset.label_words`.

A leaf module, so that both the config checks (config.py) and the data loaders (data/) use it without importing
each other.
"""

from __future__ import annotations

from typing import Any


def raw_label_text(value: Any) -> str:
    """A raw label as text, the same for a data file's value and a label_words key: 0 -> "0", true -> "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
