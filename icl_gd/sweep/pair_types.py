"""How the sweep names jobs and pairs: method and model labels, and the pair types with the rules to read them back.

A method pair is "<a>_vs_<b>"; an order pair (a noise floor) "<label>_vs_<label>_order"; a null control
"<a>_vs_<b>_shuffled_labels" or "<a>_vs_<b>_demos_from_<dataset>"; a pair of two control jobs ends in
"_both_shuffled" / "_both_demos_from_<dataset>". Pure string functions: no job files are read here.
"""

from __future__ import annotations

from typing import Any

from icl_gd.data.source import condition_words

ORDER_SUFFIX = "_order"  # an order pair is "<label>_vs_<label>_order"
ORDER_PAIR = "icl_vs_icl_order"  # THE floor: ICL against ICL in another order (verdicts test against it)
GD_ORDER_PAIR = "gd_vs_gd_order"  # GD's noise floor: GD against GD with the same demos in another order
SHUFFLED_SUFFIX = "_shuffled_labels"  # the control: ICL (original labels) vs a job on shuffled labels
BOTH_SHUFFLED = "_both_shuffled"  # a method or order pair of two jobs that are both on shuffled labels
SOURCE_SUFFIX = (
    "_demos_from_"  # the control "<a>_vs_<b>_demos_from_<dataset>": b's demos come from another task
)
BOTH_SOURCE = "_both_demos_from_"  # a pair of two jobs whose demos both come from that other task


def shown_label(label: str, demo_labels: Any, demo_source: Any = None) -> str:
    """A method label with " (shuffled labels)" / " (demos from agnews)" for a null-control job."""
    words = condition_words(demo_labels, demo_source)
    return f"{label} ({words})" if words else label


def order_pair(label: str) -> str:
    """The order pair of a method label: "icl" -> "icl_vs_icl_order" (ORDER_PAIR), "gd" -> "gd_vs_gd_order"."""
    return f"{label}_vs_{label}{ORDER_SUFFIX}"


def shuffled_pair(label_a: str, label_b: str) -> str:
    """The null control's pair type: ICL on the original labels vs `label_b` on shuffled ones."""
    return f"{label_a}_vs_{label_b}{SHUFFLED_SUFFIX}"


def source_pair(label_a: str, label_b: str, source: str) -> str:
    """The other-task control's pair type: ICL on its own task's demos vs `label_b` on demos from `source`."""
    return f"{label_a}_vs_{label_b}{SOURCE_SUFFIX}{source}"


def both_marker(pair_type: str) -> str:
    """The `_both_...` tail of a pair of two control jobs ("_both_shuffled", "_both_demos_from_agnews"), or ""."""
    if pair_type.endswith(BOTH_SHUFFLED):
        return BOTH_SHUFFLED
    head, sep, source = pair_type.rpartition(BOTH_SOURCE)
    return sep + source if sep and head else ""


def is_both_control(pair_type: str) -> bool:
    """A pair of two control jobs (both on shuffled labels, or both on another task's demos)."""
    return bool(both_marker(pair_type))


def is_both_shuffled(pair_type: str) -> bool:
    """A pair of two jobs both on shuffled labels (a method or an order pair among them)."""
    return pair_type.endswith(BOTH_SHUFFLED)


def control_source(pair_type: str) -> str | None:
    """The other task of a demo_source control pair ("icl_vs_gd_demos_from_agnews" -> "agnews"), else None."""
    if is_both_control(pair_type):
        return None
    head, sep, source = pair_type.rpartition(SOURCE_SUFFIX)
    return source if sep and head else None


def is_control(pair_type: str) -> bool:
    """A null control: ICL on its own demos vs a job on shuffled labels or on another task's demos."""
    return pair_type.endswith(SHUFFLED_SUFFIX) or control_source(pair_type) is not None


def order_label(pair_type: str) -> str | None:
    """The method label of an order pair ("gd_vs_gd_order" -> "gd", also when `_both_...`); None otherwise."""
    base = pair_type.removesuffix(both_marker(pair_type))
    if not base.endswith(ORDER_SUFFIX):
        return None
    a, sep, b = base.removesuffix(ORDER_SUFFIX).partition("_vs_")
    return a if sep and a == b else None


def is_order_pair(pair_type: str) -> bool:
    """An order pair of any method (a noise floor), on original or on shuffled labels."""
    return order_label(pair_type) is not None


def _fmt(v: Any) -> str:
    """A config value as a label shows it: floats in their shortest form (1e-3 -> "0.001")."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def method_label(method: dict[str, Any], varying: list[str]) -> str:
    """`tag` when set, else the name plus the `varying` keys that are set: "gd", "gd(lr=0.001)", "gd(batch_size=all)"."""
    if method.get("tag"):
        return str(method["tag"])
    shown = [
        f"{k}={_fmt(method[k])}" for k in varying if k not in ("name", "tag") and method.get(k) is not None
    ]
    return f"{method['name']}({','.join(shown)})" if shown else str(method["name"])


def model_label(model: dict[str, Any], show_revision: bool) -> str:
    """The model name, "@revision" when the sweep holds several revisions, " (untrained)" for random weights."""
    label = str(model["name"])
    if show_revision and model.get("revision"):
        label += f"@{model['revision']}"
    return label + (" (untrained)" if model.get("random_init") else "")


def base_label(label: str, revision: Any) -> str:
    """The model label without its "@revision": the model whose checkpoints a weight-evolution figure follows."""
    return label.replace(f"@{revision}", "") if isinstance(revision, str) and revision else label
