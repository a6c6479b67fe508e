"""Shared inputs of the Dai-analysis tests: token sequences, a sentiment task with demos and queries, tiny models
of other architectures (GPT-2, GPT-NeoX) built in memory."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from icl_gd.data import Example, Template

SEQS = [[5, 17, 300, 42, 7], [9, 12], [100, 200, 300, 400, 500, 600, 700]]  # lengths 5, 2, 7: padded batches
PAD = 2
TOL = 1e-5

SENTIMENT = Template("Review: {sentence}\nSentiment: {label}", ["sentence"])
LABEL_WORDS = ["negative", "positive"]
SEPARATOR = "\n\n"


def review(i: int, sentence: str, label: str) -> Example:
    return Example(id=f"test:{i}", fields={"sentence": sentence}, label=label, answer=LABEL_WORDS[int(label)])


DEMOS = [review(0, "a dull, lifeless film", "0"), review(1, "a joy from start to finish", "1")]
QUERIES = [
    review(10, "great acting", "1"),
    review(11, "the plot makes no sense at all and the jokes fall flat", "0"),
    review(12, "fine", "1"),
]
QUERY_IDS = [q.id for q in QUERIES]


TINY = {"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 3, "vocab_size": 1000}


def tiny_gpt2() -> torch.nn.Module:
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_head=2, n_layer=3, vocab_size=1000, n_positions=64))


def tiny_neox() -> torch.nn.Module:
    return GPTNeoXForCausalLM(GPTNeoXConfig(intermediate_size=64, **TINY))
