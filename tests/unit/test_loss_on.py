"""method.loss_on (Dai et al.'s fine-tune: the loss on every token of each demo) and layer-causal GD's own learning
rate: the labels, the check, the presets that use them, and the job identity of configs written before the keys."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from icl_gd.config import config_hash
from icl_gd.errors import ConfigError
from icl_gd.methods import finetune
from icl_gd.validation import validate
from tests.helpers.config import CONF, compose_config

BATCH = [([5, 6, 7, 8], [finetune.IGNORE, finetune.IGNORE, 7, 8]), ([9, 10], [finetune.IGNORE, 10])]


def test_loss_on_all_makes_every_token_a_target() -> None:
    assert finetune.with_loss_on(BATCH, finetune.ANSWER) is BATCH
    assert finetune.with_loss_on(BATCH, finetune.ALL_TOKENS) == [
        ([5, 6, 7, 8], [5, 6, 7, 8]),
        ([9, 10], [9, 10]),
    ]
    with pytest.raises(ConfigError, match="loss_on"):
        finetune.with_loss_on(BATCH, "prompt")


def test_loss_on_all_trains_on_more_tokens_than_the_answer(tiny_lm) -> None:
    fmt = ["Review: a fine film\nSentiment:", "Review: dull\nSentiment:"]
    batch = finetune.build_batch(tiny_lm.tokenizer, fmt, [" positive", " negative"], None)
    answer = finetune.mean_demo_loss(tiny_lm.model, batch, tiny_lm.tokenizer.pad_token_id)
    every = finetune.mean_demo_loss(
        tiny_lm.model, finetune.with_loss_on(batch, finetune.ALL_TOKENS), tiny_lm.tokenizer.pad_token_id
    )
    assert answer != pytest.approx(every)


def test_bad_loss_on_is_refused_before_any_work(tmp_path) -> None:
    cfg = compose_config(["method=gd", "method.loss_on=prompt", f"output_dir={tmp_path}", "logger=none"])
    with pytest.raises(ConfigError, match="method.loss_on"):
        validate(cfg)


def test_configs_without_the_new_keys_keep_their_identity(tmp_path) -> None:
    cfg = compose_config(["method=gd", f"output_dir={tmp_path}", "logger=none"])
    assert cfg.method.loss_on == "answer" and cfg.method.layer_causal_lr is None
    old = OmegaConf.to_container(cfg, resolve=False)
    for key in ("loss_on", "layer_causal_lr"):
        del old["method"][key]
    assert config_hash(OmegaConf.create(old)) == config_hash(cfg)
    other = compose_config(["method=gd", "method.loss_on=all", f"output_dir={tmp_path}", "logger=none"])
    assert config_hash(other) != config_hash(cfg)


@pytest.mark.parametrize("preset", ["dai", "untrained_control", "layer_causal_gd", "weight_evolution"])
def test_dai_presets_train_as_dai_et_al(preset: str) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            "config", overrides=[f"experiment={preset}", "output_dir=/tmp/x"], return_hydra_config=True
        )
    grids = OmegaConf.to_container(cfg.hydra.sweeper.grids)
    gd = [g for g in grids.values() if g.get("method") == "gd"]
    assert gd and all(g["method.loss_on"] == "all" and g["method.grad_clip"] is None for g in gd)
    assert all(
        g["method.optimizer"] == "sgd" and g["method.epochs"] == 1 and g["method.batch_size"] == 1 for g in gd
    )
    if preset == "layer_causal_gd":
        assert gd[0]["method.layer_causal_lr"] < gd[0]["method.lr"]
