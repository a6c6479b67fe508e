r"""Prompt templates: a Python format string over the text fields and `{label}`.

Escapes: `\n`, `\t` and `\\` in a template or separator stand for a newline, a tab and a backslash, wherever
the text came from. A YAML double-quoted string has already turned them into characters; a command-line override
(`dataset.template='Q: {input}\nA: {label}'`) has not, since Hydra keeps backslashes as they are, and a literal
backslash-n in every prompt is never what was meant.

A demonstration is the template filled in. A query is the template cut just before `{label}`; the whitespace
in front of `{label}` moves into the answer (" walked"), because that is how the answer's first token is spelt
when the model continues the prompt.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from icl_gd.errors import ConfigError

LABEL = "label"
ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}
_ESCAPE = re.compile(r"\\([nt\\])")


def unescape(text: str) -> str:
    r"""`\n`, `\t` and `\\` as the characters they stand for; any other backslash stays as it is."""
    return _ESCAPE.sub(lambda m: ESCAPES[m.group(1)], text)


@dataclass(frozen=True)
class Template:
    text: str
    fields: list[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", unescape(self.text))
        try:
            names = [n for _, n, _, _ in string.Formatter().parse(self.text) if n is not None]
        except ValueError as e:
            raise ConfigError(f"dataset.template={self.text!r} is not a valid format string: {e}.") from None
        if LABEL not in names:
            raise ConfigError(
                f"dataset.template={self.text!r} has no {{label}}: put {{label}} where the answer goes, "
                "e.g. 'Review: {sentence}\\nSentiment: {label}'."
            )
        if names.count(LABEL) > 1 or not self.text.rstrip().endswith("{label}"):
            raise ConfigError(
                f"dataset.template={self.text!r} must end with a single {{label}} (the answer comes last)."
            )
        missing = [n for n in names if n != LABEL and n not in self.fields]
        if missing:
            raise ConfigError(
                f"dataset.template names field(s) {missing} that are not in dataset.text_fields={self.fields}: "
                "fix the template or add the field to text_fields."
            )

    def demo(self, fields: dict[str, str], answer: str) -> str:
        """The full demonstration text: fields filled in and the answer in place of {label}."""
        prompt, lead = self._split(fields)
        return prompt + lead + answer

    def query(self, fields: dict[str, str], answer: str) -> tuple[str, str]:
        """(prompt, answer continuation): the prompt stops before {label}; the continuation starts with its space."""
        prompt, lead = self._split(fields)
        return prompt, lead + answer

    def _split(self, fields: dict[str, str]) -> tuple[str, str]:
        head = self.text[: self.text.rindex("{label}")]
        filled = head.format(**{k: fields[k] for k in self.fields})
        stripped = filled.rstrip(" ")
        return stripped, filled[len(stripped) :]


def build_prompt(demo_texts: list[str], query_prompt: str, separator: str) -> str:
    """Demonstrations joined by `separator`, then the query (the zero-shot prompt when there are no demos)."""
    return separator.join([*demo_texts, query_prompt])
