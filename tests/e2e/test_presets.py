"""Paper presets (conf/experiment/): each composes, expands to the jobs it promises, and every job validates."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from hydra_plugins.icl_gd_sweeper.grids_sweeper import expand
from icl_gd.validation import validate
from tests.helpers.cli import run_py
from tests.helpers.config import CONF

# preset -> (jobs per demo set, jobs per method name per demo set); validated job by job below (one demo set)
SEEDS = 5  # every preset runs five demo sets by default
PRESETS = {
    "shen_main": (224, {"icl": 32, "gd": 192}),
    "order_sensitivity": (30, {"icl": 10, "gd": 20}),
    "dai": (15, {"gd": 5, "icl": 10}),
    "untrained_control": (30, {"gd": 10, "icl": 20}),
    "layer_causal_gd": (8, {"gd": 4, "icl": 4}),
    "sparsity": (4, {"gd": 4}),
    "weight_evolution": (30, {"icl": 20, "gd": 10}),
}


def compose_preset(name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(
            config_name="config", overrides=[f"experiment={name}", *overrides], return_hydra_config=True
        )


def jobs_of(name: str, cli: list[str] | None = None) -> list[list[str]]:
    """The jobs `run.py -m experiment=<name> <cli>` runs: hydra.* overrides change the sweep, the rest are jobs'."""
    sweep_cfg = [o for o in cli or [] if o.startswith("hydra.")]
    cfg = compose_preset(name, ["output_dir=/tmp/x", *sweep_cfg])
    sweeper = cfg.hydra.sweeper
    job_cli = [o for o in cli or [] if o not in sweep_cfg]
    return expand(sweeper.get("params"), sweeper.get("grids"), [f"experiment={name}", *job_cli])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_expands_to_its_jobs_and_each_validates(name: str) -> None:
    every = jobs_of(name)
    total, per_method = PRESETS[name]
    assert len(every) == SEEDS * total
    assert {o for j in every for o in j if o.startswith("seed=")} == {f"seed={s}" for s in range(SEEDS)}
    jobs = [j for j in every if "seed=0" in j]
    assert len(jobs) == total
    methods = Counter()
    for overrides in jobs:
        cfg = compose_preset(name, [*overrides[1:], "output_dir=/tmp/x"])  # [0] is experiment=<name>
        OmegaConf.set_struct(cfg, False)
        cfg.pop("hydra")
        validate(cfg)  # a bad combination (e.g. analysis.dai on ICL) fails here, not an hour into the sweep
        methods[cfg.method.name] += 1
    assert dict(methods) == per_method


def test_icl_never_repeats_per_learning_rate() -> None:
    icl = [j for j in jobs_of("shen_main") if "method=icl" in j]
    assert not any(o.startswith("method.lr") for j in icl for o in j)
    assert len({tuple(j) for j in icl}) == len(icl) == 4 * 4 * 2 * SEEDS


def test_the_command_line_narrows_every_grid() -> None:
    jobs = jobs_of("shen_main", ["dataset=sst2", "demos=8", "seed=0"])
    assert len(jobs) == 2 + 4 + 8
    assert all("dataset=sst2" in j and "demos=8" in j for j in jobs)


def test_presets_set_what_the_papers_set() -> None:
    dai = compose_preset("dai", ["output_dir=/tmp/x", "method=gd"]).hydra.sweeper.grids.dai
    assert (
        dai["method.params"],
        dai["method.optimizer"],
        dai["method.epochs"],
        dai["method.batch_size"],
    ) == (
        "attn_kv",
        "sgd",
        1,
        1,
    )
    untrained = compose_preset("untrained_control", ["output_dir=/tmp/x"]).hydra.sweeper.params
    assert untrained["model.random_init"] == "false,true" and untrained["dataset"] == "sst2,sst5,mr,agnews,cb"


# each preset narrowed to a few jobs on the tiny model: the sweeper, the analyses, the comparison and the report
SMOKE_RUNS = {
    "shen_main": [  # one lr per GD grid: ICL twice, GD on all parameters, GD on the middle layer's v_proj
        "dataset=sst2",
        "seed=0",
        "demos=2",
        'hydra.sweeper.grids.gd_all={method: gd, method.lr: "1e-3"}',
        'hydra.sweeper.grids.gd_layer_v={method: gd, method.params: layer_v, method.layer: middle, method.lr: "1e-3"}',
    ],
    "order_sensitivity": ["order_seed=0,1", "seed=0"],
    "calibrated": [  # two demo sets (the unit of replication), a 2-point grid scored at 2 steps
        "dataset=present_past",
        "demos=2",
        "seed=0,1",
        "eval.n_select=4",
        "search.optimizer=[sgd,adam]",
        "search.lr=[1e-3]",
        "search.params=[attn_kv]",
        "search.eval_at=[1,2]",
    ],
    "dai": ["dataset=sst2", "seed=0"],
    "untrained_control": [
        "dataset=sst2",
        "model.random_init=true",
        "seed=0",
    ],  # false would load the real SmolLM2
    "layer_causal_gd": ["dataset=sst2", "seed=0"],
    "sparsity": ["dataset=sst2", "seed=0"],
    "weight_evolution": [
        "dataset=sst2",
        "model.revision=step1000",
        "seed=0",
    ],  # tiny_random: the revision is moot here
}
FIGURES = {
    "shen_main": {"agreement_vs_demos.png", "accuracy_vs_demos.png"},
    "order_sensitivity": {"order_sensitivity.png"},
    "calibrated": {"gd_trajectory.png", "agreement_vs_demos.png"},
    "dai": {"simaou_layers.png"},
    "untrained_control": {"simaou_layers.png"},
    "layer_causal_gd": {"simaou_layers.png"},
    "sparsity": {"sparsity.png"},
    "weight_evolution": {"agreement_vs_demos.png"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOKE_RUNS))
def test_preset_runs_end_to_end_on_the_tiny_model(name: str, tmp_path) -> None:
    sweep = tmp_path / name
    run_py(
        "-m",
        f"experiment={name}",
        "debug=smoke",
        "logger=none",
        *SMOKE_RUNS[name],
        f"hydra.sweep.dir={sweep}",
        timeout=None,
    )  # a failure shows the tails of stdout and stderr
    statuses = [json.loads(p.read_text())["status"] for p in sweep.glob("*/status.json")]
    assert statuses and set(statuses) == {"done"}
    assert len(statuses) == len(jobs_of(name, SMOKE_RUNS[name]))
    assert (sweep / "report.md").exists()
    for fig in FIGURES[name]:
        assert (sweep / "figures" / fig).stat().st_size > 0


def test_calibrated_has_its_floors_controls_and_search_in_every_cell() -> None:
    """4 datasets x N = 2, 4, 8 x 5 demo sets; per cell zero-shot, ICL in two orders, the searched GD, GD in two
    orders (its floor), and both null controls (shuffled labels; another task's demos) for ICL and the searched GD:
    600 jobs (each checked by the sweeper before any runs)."""
    jobs = jobs_of("calibrated")
    methods = Counter(next(o.split("=", 1)[1] for o in j if o.startswith("method=")) for j in jobs)
    assert len(jobs) == 600 and dict(methods) == {"zeroshot": 60, "icl": 240, "gd_search": 180, "gd": 120}
    assert sum("demo_labels=shuffled" in j for j in jobs) == 120
    assert sum("demo_source=other" in j for j in jobs) == 120
    narrowed = jobs_of("calibrated", ["dataset=present_past", "demos=4", "seed=0,1", "search.lr=[1e-3]"])
    assert len(narrowed) == 20 and all("search.lr=[0.001]" in j for j in narrowed)
