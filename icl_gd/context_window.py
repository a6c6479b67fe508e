"""Does a job's longest prompt fit the model's context? Checked once the tokenizer is loaded, before any forward pass.

A prompt past the model's position limit is not an error torch reports: positions wrap or attention degrades,
and the numbers come out wrong without a word. `eval.overflow` says what to do: `error` refuses the job naming the
lengths and the fixes; `truncate` drops demonstrations from the front (the first shown go first) until every
query's prompt and its longest answer fit, with a warning that says how many were dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from icl_gd.data import Example, Template
from icl_gd.data.prompts import build_prompt
from icl_gd.errors import ConfigError
from icl_gd.models.forward import continuation_ids, encode

log = logging.getLogger(__name__)

LONGEST_CHECKED = 4  # while truncating, only the longest few queries are re-measured (the rest are shorter)


@dataclass(frozen=True)
class PromptShape:
    """What the prompts of a job are built from (see MethodInputs.predict)."""

    template: Template
    separator: str
    queries: list[Example]
    label_continuations: list[str]  # scored after each prompt, all but their last token fed to the model
    add_special: bool


def prompt_tokens(shape: PromptShape, tokenizer, demos: list[Example], queries: list[Example]) -> list[int]:
    """Tokens the model reads for each query: its prompt after `demos`, then a label word but its last token."""
    shown = [shape.template.demo(d.fields, d.answer) for d in demos]
    prompts = [
        build_prompt(shown, shape.template.query(q.fields, q.answer)[0], shape.separator) for q in queries
    ]
    extra = max((len(continuation_ids(tokenizer, w)) - 1 for w in shape.label_continuations), default=0)
    return [len(ids) + extra for ids in encode(tokenizer, prompts, shape.add_special)]


def fit_demos(
    shape: PromptShape, tokenizer, demos: list[Example], limit: int | None, overflow: str
) -> list[Example]:
    """The demonstrations the prompts can hold: all of them, fewer (overflow=truncate), or a ConfigError."""
    if limit is None:
        return demos
    lengths = prompt_tokens(shape, tokenizer, demos, shape.queries)
    if max(lengths) <= limit:
        return demos
    worst = max(lengths)
    alone = max(prompt_tokens(shape, tokenizer, [], shape.queries))
    if alone > limit:
        raise ConfigError(
            f"a query's prompt alone takes {alone} tokens, past the model's context of {limit}: no demonstration "
            "can be dropped to fit it. Use a model with a longer context or shorter texts."
        )
    if overflow != "truncate":
        raise ConfigError(
            f"the longest prompt takes {worst} tokens with demos={len(demos)}, past the model's context of {limit} "
            "tokens. Lower demos, or set eval.overflow=truncate to drop demonstrations from the front (warned)."
        )
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    longest = [shape.queries[i] for i in order[:LONGEST_CHECKED]]
    kept = list(demos)
    while kept and max(prompt_tokens(shape, tokenizer, kept, longest)) > limit:
        kept = kept[1:]
    while kept and max(prompt_tokens(shape, tokenizer, kept, shape.queries)) > limit:  # the rest, to be sure
        kept = kept[1:]
    log.warning(
        "eval.overflow=truncate: the prompt with all %d demonstrations takes %d tokens, past the model's context "
        "of %d; dropped the first %d, keeping %d (metrics.json: n_demos, demos_dropped)",
        len(demos),
        worst,
        limit,
        len(demos) - len(kept),
        len(kept),
    )
    return kept
