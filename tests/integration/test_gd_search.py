"""GD given its best chance: trajectories, the selection split, the search's choice, collapse, and the null control."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from icl_gd import io
from icl_gd.data import Example, sample_queries, sample_selection, shuffle_labels
from icl_gd.errors import ConfigError
from icl_gd.methods import finetune, gd_search
from icl_gd.methods.base import MethodInputs
from icl_gd.methods.collapse import CollapsedError, collapse_reason
from icl_gd.methods.predict import predict
from icl_gd.runner import run
from icl_gd.validation import validate
from tests.helpers.config import compose_config

DEMOS = [("walk", "walked"), ("jump", "jumped"), ("sing", "sang")]
PROMPTS = ["word: go\npast:", "word: see\npast:"]
SEARCH = [
    "method=gd_search",
    "eval.n_select=4",
    "search.optimizer=[sgd,adam]",
    "search.lr=[1e-3,1e-1]",
    "search.params=[attn_kv]",
    "search.eval_at=[0,1,3]",
]


def batch(lm):
    return finetune.build_batch(
        lm.tokenizer, [f"word: {a}\npast:" for a, _ in DEMOS], [f" {b}" for _, b in DEMOS], None
    )


def node(**kw):
    base = {
        "optimizer": "sgd",
        "momentum": 0.9,
        "lr": 0.5,
        "params": "attn_kv",
        "layer": None,
        "epochs": 1,
        "batch_size": 1,
        "weight_decay": 0.0,
        "grad_clip": None,
        "explode_factor": 1e3,
        "layer_causal": False,
    }
    return OmegaConf.create({**base, **kw})


def answers(lm):
    return predict(lm.model, lm.tokenizer, PROMPTS, [" went", " saw"], None, 10, 2, True)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_trajectory_step_equals_a_training_stopped_there(tiny_lm, optimizer: str) -> None:
    """One training scored at steps 1, 2, 5 gives what three trainings stopped at 1, 2, 5 give."""
    cfg = node(optimizer=optimizer, lr=0.5 if optimizer == "sgd" else 1e-2)
    params = finetune.select_parameters(tiny_lm.model, cfg)
    seen: dict[int, object] = {}
    with finetune.restoring(params):
        finetune.train(
            tiny_lm.model,
            tiny_lm.tokenizer,
            batch(tiny_lm),
            params,
            cfg,
            0,
            steps=5,
            on_eval=lambda s: seen.__setitem__(s, answers(tiny_lm)),
            eval_at=[1, 2, 5],
        )
    assert sorted(seen) == [1, 2, 5]
    for step in (1, 2, 5):
        with finetune.restoring(params):
            result = finetune.train(
                tiny_lm.model, tiny_lm.tokenizer, batch(tiny_lm), params, cfg, 0, steps=step
            )
            alone = answers(tiny_lm)
        assert len(result.curve) == step
        assert torch.allclose(seen[step].full_dist.float(), alone.full_dist.float(), atol=1e-6)
        assert torch.equal(seen[step].topk_ids, alone.topk_ids)
    assert not torch.allclose(seen[1].full_dist.float(), seen[5].full_dist.float())  # training moved it


def test_selection_queries_are_disjoint_from_test_queries_of_any_size() -> None:
    pool = [Example(f"t:{i}", {"input": str(i)}, str(i), str(i)) for i in range(30)]
    select = {q.id for q in sample_selection(pool, 8, 10, 0, "d")}
    for n in (1, 10, 22):
        assert not select & {q.id for q in sample_queries(pool, n, 0, "d")}
    assert select == {q.id for q in sample_selection(pool, 8, 22, 0, "d")}  # not moved by n_queries
    with pytest.raises(ConfigError, match=r"eval\.n_select=8 \+ eval\.n_queries=23 exceed the 30"):
        sample_selection(pool, 8, 23, 0, "d")


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory):
    """A gd_search job on the tiny model, with every predict call recorded (queries and context)."""
    out = tmp_path_factory.mktemp("search")
    calls: list[tuple[str, list[str], int]] = []
    original, final = MethodInputs.predict, gd_search.GDSearch._final
    phase = ["search"]

    def recording(self, model, context, prefix_cache=False, queries=None, save_full_dist=None):
        ids = [q.id for q in (self.queries if queries is None else queries)]
        calls.append((phase[0], ids, len(context)))
        return original(self, model, context, prefix_cache, queries, save_full_dist)

    def final_phase(self, *a, **k):
        phase[0] = "final"
        return final(self, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(MethodInputs, "predict", recording)
    mp.setattr(gd_search.GDSearch, "_final", final_phase)
    try:
        cfg = compose_config(["debug=smoke", "logger=none", f"output_dir={out}", *SEARCH])
        metrics = run(cfg, raise_on_failure=True)
    finally:
        mp.undo()
    return out, metrics, calls


def test_the_search_table_has_every_setting_at_every_step(searched) -> None:
    out, metrics, _ = searched
    t = pd.read_parquet(out / io.SEARCH)
    assert len(t) == 2 * 2 * 3 and set(t.step) == {0, 1, 3} and set(t.optimizer) == {"sgd", "adam"}
    assert not t.duplicated(["optimizer", "lr", "params", "step"]).any()
    best = t[t.chosen.str.contains("best")]
    assert len(best) == 1 and best.select_score.iloc[0] == t[~t.collapsed].select_score.max()
    assert (t.chosen.str.contains("acc_matched")).sum() == 1
    assert metrics["best_lr"] == best.lr.iloc[0] and metrics["best_step"] == best.step.iloc[0]
    assert (t.select_metric == "overlap@k").all() and t.select_value.between(0, 1).all()  # no label words


def test_the_selection_never_sees_a_test_query(searched) -> None:
    out, _, calls = searched
    ids = json.loads((out / io.QUERIES).read_text())
    select, test = set(ids["select"]), set(ids["test"])
    assert len(select) == 4 and len(test) == 4 and not select & test
    before = [c for c in calls if c[0] == "search"]
    assert before and all(
        set(c[1]) == select for c in before
    )  # ICL, zero-shot and every point: selection only
    after = [c for c in calls if c[0] == "final"]
    t = pd.read_parquet(out / io.SEARCH)
    trained = 1 if (t.chosen == "best,acc_matched").any() else 2  # the winner, and the accuracy-matched point
    assert len(after) == trained and all(set(c[1]) == test and c[2] == 0 for c in after)  # zero-shot, on test
    preds = pd.read_parquet(out / io.PREDICTIONS)
    assert set(preds.query_id) == test


def test_the_accuracy_matched_point_is_a_job_of_its_own_equal_to_running_it_alone(searched, tmp_path) -> None:
    """The search's accuracy-matched point answers the test queries as companions/gd_acc_matched: a done job whose
    config is select=accuracy, and whose predictions are those of that job run by itself."""
    out, _, _ = searched
    child = out / "companions" / "gd_acc_matched"
    assert json.loads((child / io.STATUS).read_text())["status"] == "done"
    cfg = OmegaConf.load(child / io.CONFIG)
    assert cfg.method.tag == "gd_acc_matched" and cfg.method.select == "accuracy"
    assert cfg.method.acc_matched_tag is None and cfg.output_dir == str(child)
    assert json.loads((child / io.QUERIES).read_text()) == json.loads((out / io.QUERIES).read_text())
    assert not (child / io.SEARCH).exists()  # the points are the parent's search.parquet
    t = pd.read_parquet(out / io.SEARCH)
    matched = t[t.chosen.str.contains("acc_matched")].iloc[0]
    m = json.loads((child / io.METRICS).read_text())
    assert m["train_steps"] == matched.step and m["n_queries"] == 4

    alone = tmp_path / "alone"
    job = ["debug=smoke", "logger=none", f"output_dir={alone}", *SEARCH, "method.select=accuracy"]
    run(
        compose_config([*job, "method.tag=gd_acc_matched", "method.acc_matched_tag=null"]),
        raise_on_failure=True,
    )
    a, b = pd.read_parquet(child / io.PREDICTIONS), pd.read_parquet(alone / io.PREDICTIONS)
    assert list(a.query_id) == list(b.query_id)
    assert torch.allclose(torch.tensor(a.gold_prob.tolist()), torch.tensor(b.gold_prob.tolist()), atol=1e-6)
    assert not (alone / "companions").exists()  # select=accuracy writes no companion of itself
    same = {k: v for k, v in m.items() if not k.startswith("train_")}
    assert same == pytest.approx(
        {k: v for k, v in json.loads((alone / io.METRICS).read_text()).items() if k in same}
    )


def test_acc_matched_tag_must_differ_from_the_tag() -> None:
    cfg = compose_config(["debug=smoke", "output_dir=/tmp/x", *SEARCH, "method.acc_matched_tag=gd_best"])
    with pytest.raises(ConfigError, match=r"method\.acc_matched_tag='gd_best' is method\.tag too"):
        validate(cfg)


def test_a_collapsed_point_is_never_chosen_and_all_collapsed_fails(smoke, monkeypatch) -> None:
    """Points flagged collapsed (here: every adam point) are excluded; when every point is, the job fails."""
    calls = []

    def flag_adam(*args, **kwargs):  # sgd's 3 points are scored first, then adam's
        calls.append(args)
        return "flagged" if len(calls) > 3 else None

    monkeypatch.setattr(gd_search, "collapse_reason", flag_adam)
    cfg = smoke(*SEARCH, "search.lr=[1e-1]")
    run(cfg, raise_on_failure=True)
    t = pd.read_parquet(Path(cfg.output_dir) / io.SEARCH)
    assert t.collapsed.tolist() == [False, False, False, True, True, True]
    assert t[t.chosen != ""].optimizer.eq("sgd").all()
    monkeypatch.setattr(gd_search, "collapse_reason", lambda *a, **k: "flagged")
    cfg = smoke(*SEARCH)
    with pytest.raises(CollapsedError, match="every point of the GD search collapsed"):
        run(cfg, raise_on_failure=True)
    assert json.loads((Path(cfg.output_dir) / io.METRICS).read_text())["collapsed"] == 1.0


def test_collapse_criteria_on_the_issues_numbers() -> None:
    cfg = OmegaConf.create({"entropy_fraction": 0.95, "loss_rise": 2.0})
    ln_v = math.log(49152)
    assert collapse_reason(cfg, ln_v, 10.80, 4.6) is not None  # SGD at lr 1e6: the loss of a uniform answer
    assert collapse_reason(cfg, ln_v, 2e-5, 4.6) is None  # memorised, not collapsed
    assert collapse_reason(cfg, ln_v, 10.80, 10.85) is None  # the untrained control starts uniform
    assert "over 2.0 x" in collapse_reason(cfg, ln_v, 9.5, 4.6)
    assert "near uniform" in collapse_reason(cfg, ln_v, 1.0, 1.0, entropy=10.5, initial_entropy=1.2)
    assert collapse_reason(cfg, ln_v, math.nan, 4.6) is not None


def test_a_gd_job_that_collapses_fails_with_the_reason(smoke, monkeypatch) -> None:
    from icl_gd.methods import training

    monkeypatch.setattr(
        training, "collapse_reason", lambda *a, **k: "the demo loss rose to 10.8, chance level"
    )
    cfg = smoke("method=gd", "method.epochs=1")
    with pytest.raises(CollapsedError, match="training collapsed the model: the demo loss rose"):
        run(cfg, raise_on_failure=True)
    m = json.loads((Path(cfg.output_dir) / io.METRICS).read_text())
    assert m["collapsed"] == 1.0 and m["diverged"] == 1.0


def test_gd_search_needs_selection_queries() -> None:
    cfg = compose_config(["debug=smoke", "output_dir=/tmp/x", *SEARCH, "eval.n_select=0"])
    with pytest.raises(ConfigError, match=r"eval\.n_select>=1"):
        validate(cfg)


def test_shuffled_labels_permute_the_answers_and_nothing_else(smoke) -> None:
    """demo_labels=shuffled: the same demos in the same order, their answers permuted among them."""
    demos = [Example(f"t:{i}", {"input": f"w{i}"}, f"l{i % 3}", f"a{i % 3}") for i in range(6)]
    shuffled = shuffle_labels(demos, 0, "d")
    assert [d.id for d in shuffled] == [d.id for d in demos] and [d.fields for d in shuffled] == [
        d.fields for d in demos
    ]
    assert sorted(d.answer for d in shuffled) == sorted(d.answer for d in demos)
    assert [d.answer for d in shuffled] != [d.answer for d in demos]
    assert all(d.label[1:] == d.answer[1:] for d in shuffled)  # a demo's raw label moves with its answer
    rows = {}
    for labels in ("original", "shuffled"):
        cfg = smoke("method=icl", "demos=6", f"demo_labels={labels}")
        run(cfg, raise_on_failure=True)
        rows[labels] = [json.loads(s) for s in (Path(cfg.output_dir) / io.DEMOS).read_text().splitlines()]
    a, b = rows["original"], rows["shuffled"]
    assert [r["id"] for r in a] == [r["id"] for r in b] and [r["fields"] for r in a] == [
        r["fields"] for r in b
    ]
    assert sorted(r["answer"] for r in a) == sorted(r["answer"] for r in b) != [r["answer"] for r in b]
    assert all(r["demo"].endswith(r["answer"]) for r in b)  # the prompt shows the shuffled answer


def test_small_updates_survive_in_bf16_through_float32_master_weights() -> None:
    """A step of 1e-3 on a bf16 weight of 1.0 is below half its ulp: rounded away every time without masters."""
    cfg = node(optimizer="sgd", momentum=0.0, lr=4e-3)

    def ten_steps(with_masters: bool) -> float:
        w = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
        master = finetune.MasterWeights({"w": w}) if with_masters else None
        opt = finetune.make_optimizer(master.trained if master else [w], cfg)
        for _ in range(10):
            opt.zero_grad()
            (0.25 * w.float()).sum().backward()  # gradient 0.25: an update of 1e-3 a step
            if master:
                master.pull_grads()
            opt.step()
            if master:
                master.push()
        return float(w.detach()[0])

    assert ten_steps(False) == 1.0  # every update rounded away
    assert ten_steps(True) == pytest.approx(0.99, abs=4e-3) and ten_steps(True) < 1.0


def test_gd_on_a_bf16_model_keeps_a_small_lr_update(tmp_path, monkeypatch) -> None:
    """finetune.train on the tiny model in bf16 at a small lr: far more weights move than without masters."""
    from icl_gd.models import load_model

    lm = load_model(
        compose_config(["model=tiny_random", "model.dtype=bfloat16", f"output_dir={tmp_path}"]).model
    )
    cfg = node(optimizer="sgd", momentum=0.0, lr=1e-4, batch_size="all")
    params = finetune.select_parameters(lm.model, cfg)

    def moved() -> float:
        with finetune.restoring(params) as before:
            finetune.train(lm.model, lm.tokenizer, batch(lm), params, cfg, 0, steps=20)
            changed = sum(int((p.detach() != before[n]).sum()) for n, p in params.items())
        return changed / sum(p.numel() for p in params.values())

    with_masters = moved()
    monkeypatch.setattr(finetune.MasterWeights, "__init__", _no_masters)
    without = moved()
    assert all(p.dtype == torch.bfloat16 for p in params.values())
    assert with_masters > 2 * without and with_masters > 0.2


def _no_masters(self, params) -> None:
    """The naive update: the optimizer steps the bf16 parameters themselves."""
    self.params = list(params.values())
    self.masters = self.params
