"""Bad inputs across configs, data, models and the machine, beyond those of test_config, test_data, test_runner,
test_methods and test_e2e: each fails with a message that names the problem and the fix, records `failed` in
its own status.json where it has a folder, and leaves every other job's files as they were."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import torch

from icl_gd import io
from icl_gd.errors import ConfigError, DataError, ModelNotFoundError
from icl_gd.runner import run
from tests.helpers.cli import run_py
from tests.helpers.config import compose_config, subprocess_env


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one good job; every bad job of this module writes beside it."""
    root = tmp_path_factory.mktemp("sweep")
    run(compose_config(["debug=smoke", "logger=none", f"output_dir={root / 'good'}"]), raise_on_failure=True)
    return root


@pytest.fixture
def untouched(sweep: Path):
    """Checks, after the test, that the good job's files did not change by a byte or a timestamp."""
    before = snapshot(sweep / "good")
    assert io.read_status(sweep / "good")["status"] == "done"
    yield
    assert snapshot(sweep / "good") == before


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Broken data files and model folders the cases below point at."""
    d = tmp_path_factory.mktemp("files")
    (d / "object.json").write_text('{"input": "walk", "output": "walked"}')  # word pairs must be an array
    (d / "no_output.json").write_text(json.dumps([{"input": f"w{i}"} for i in range(6)]))
    (d / "empty_model").mkdir()  # a folder without config.json or weights
    (d / "ckpts" / "step0").mkdir(parents=True)  # a checkpoints folder with one revision
    (d / "ckpts" / "step0" / "config.json").write_text("{}")
    return d


# (id, overrides, error type, [what names the problem, what names the fix]); {files} is the folder above
CASES = [
    (
        "device_tpu",
        ["model.device=tpu"],
        ConfigError,
        ["model.device='tpu'", "use cpu, auto, cuda or cuda:N"],
    ),
    (
        "gguf_missing",
        ["model.gguf_file=nope.gguf"],
        ModelNotFoundError,
        ["nope.gguf not found", "set model.gguf_file to one of them"],
    ),
    (
        "model_folder_without_config",
        ["model.path={files}/empty_model", "model.gguf_file=null"],
        ModelNotFoundError,
        ["has no config.json", "saved by save_pretrained"],
    ),
    (
        "model_folder_missing",
        ["model.path=./no/such/model"],
        ModelNotFoundError,
        ["does not exist", "point model.path at"],
    ),
    (
        "label_field_missing",
        ["dataset=sst2", "dataset.label_field=sentiment"],
        DataError,
        ["has no field(s) ['sentiment']", "fix dataset.text_fields / dataset.label_field"],
    ),
    (
        "test_fraction",
        ["dataset.test_fraction=1.5"],
        ConfigError,
        ["dataset.test_fraction=1.5", "must be in (0, 1)"],
    ),
    (
        "dataset_kind",
        ["dataset.kind=regression"],
        ConfigError,
        ["dataset.kind='regression'", "classification, wordpairs"],
    ),
    (
        "path_unset",
        ["dataset=wordpairs"],
        ConfigError,
        ["dataset.path is not set", "e.g. dataset.path=/data/my.jsonl"],
    ),
    (
        "label_words_unset",
        ["dataset=jsonl", "dataset.path=my.jsonl"],
        ConfigError,
        ["dataset.label_words is empty", "dataset.label_words='{0: negative, 1: positive}'"],
    ),
    (
        "test_path_missing",
        ["dataset=sst2", "dataset.test_path=no_such_test.jsonl"],
        DataError,
        ["no_such_test.jsonl not found", "set dataset.path to the file"],
    ),
    (
        "wordpairs_not_an_array",
        ["dataset=wordpairs", "dataset.path={files}/object.json"],
        DataError,
        ["object.json", "must be a non-empty JSON array of {'input': ..., 'output': ...} objects"],
    ),
    (
        "wordpairs_without_output",
        ["dataset=wordpairs", "dataset.path={files}/no_output.json"],
        DataError,
        ["has no field(s) ['output']", "fix dataset.text_fields / dataset.label_field"],
    ),
    (
        "top_k_over_vocabulary",
        ["eval.top_k=100000"],
        ConfigError,
        ["eval.top_k=100000 exceeds the vocabulary of model=tiny_random (49152 tokens)", "lower eval.top_k"],
    ),
    ("top_k_zero", ["eval.top_k=0"], ConfigError, ["eval.top_k=0", "must be >= 1"]),
    ("seed_not_int", ["seed=abc"], ConfigError, ["seed='abc'", "must be an integer"]),
    (
        "order_seed_not_int",
        ["order_seed=abc"],
        ConfigError,
        ["order_seed='abc'", "null (the sampled order) or an integer"],
    ),
    ("demos_fraction", ["demos=2.5"], ConfigError, ["demos=2.5", "must be an integer >= 0"]),
    (
        "grad_clip_zero",
        ["method=gd", "method.grad_clip=0"],
        ConfigError,
        ["method.grad_clip=0.0 must be > 0", "Use null for no clipping"],
    ),
    (
        "lora_no_targets",
        ["method=lora", "method.target_modules=[]"],
        ConfigError,
        ["method.target_modules is empty", "[q_proj, v_proj]"],
    ),
    (
        "lora_target_the_model_lacks",
        ["method=lora", "method.target_modules=[c_attn]"],
        ConfigError,
        ["['c_attn'] are not modules of this model", "choose from ['down_proj', 'gate_proj', 'k_proj'"],
    ),
    (
        "batch_size_word",
        ["method=gd", "method.batch_size=two"],
        ConfigError,
        ["method.batch_size='two'", "a positive integer"],
    ),
    (
        "linreg_model_on_text",
        ["model=lsa"],
        ConfigError,
        ["linear-regression lab", "use them with dataset=linreg"],
    ),
    pytest.param(
        "cuda_without_gpu",
        ["model.device=cuda"],
        ConfigError,
        ["model.device=cuda but this machine has no CUDA device", "use model.device=cpu"],
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
    ),
    (
        "dai_on_icl",
        ["method=icl", "analysis.dai=true"],
        ConfigError,
        ["analysis.dai=true", "needs method=gd"],
    ),
    (
        "sparsity_on_lora",
        ["method=lora", "analysis.sparsity=true"],
        ConfigError,
        ["analysis.sparsity=true", "use method=gd"],
    ),
    (
        "layer_not_a_layer",
        ["method=gd", "method.params=layer_v", "method.layer=deep"],
        ConfigError,
        ["method.layer='deep'", "or middle"],
    ),
    (
        "lr_grid_negative",
        ["method=gd", "method.lr_grid=[1e-3,-1]"],
        ConfigError,
        ["method.lr_grid=-1", "positive learning rates"],
    ),
    (
        "lr_grid_without_heldout",
        ["method=gd", "method.lr_grid=[1e-3]", "method.heldout=0"],
        ConfigError,
        ["method.heldout=0", ">= 1"],
    ),
    (
        "heldout_exceeds_pool",
        ["method=gd", "method.lr_grid=[1e-3]", "method.heldout=100000"],
        ConfigError,
        ["method.heldout=100000", "lower method.heldout"],
    ),
    (
        "revision_not_in_checkpoints",
        [
            "model=tiny_random",
            "model.random_init=false",
            "model.path={files}/ckpts",
            "model.package=null",
            "model.gguf_file=null",
            "model.revision=step5",
        ],
        ModelNotFoundError,
        ["model.revision=step5", "revisions there: ['step0']"],
    ),
    (
        "label_word_yaml_boolean",
        ["dataset=cb", "dataset.label_words.entailment=true"],
        ConfigError,
        ["maps label 'entailment' to True", "quote it ('entailment': \"true\")"],
    ),
    (
        "dataset_path_is_a_folder",
        ["dataset=sst2", "dataset.path=classification/sst2", "dataset.test_path=null"],
        DataError,
        ["is a folder, not a data file", "dev.jsonl", "point dataset.path"],
    ),
]


def case_id(case) -> str:
    return (case.values if hasattr(case, "values") else case)[0]


@pytest.mark.parametrize(("name", "overrides", "error", "needles"), CASES, ids=[case_id(c) for c in CASES])
def test_bad_input_names_the_problem_and_the_fix(
    sweep: Path, files: Path, untouched, name: str, overrides: list[str], error: type, needles: list[str]
) -> None:
    out = sweep / name
    cfg = compose_config(
        ["debug=smoke", "logger=none", f"output_dir={out}", *(o.format(files=files) for o in overrides)]
    )
    with pytest.raises(error) as e:
        run(cfg, raise_on_failure=True)
    for needle in needles:
        assert needle in str(e.value)
    st = io.read_status(out)
    assert st["status"] == "failed" and st["error"] == str(e.value)  # the job's own record says why
    assert not (out / "predictions.parquet").exists() and not (out / "metrics.json").exists()


def test_an_output_folder_that_cannot_be_made_fails_before_the_job(sweep: Path, untouched) -> None:
    (sweep / "a_file").write_text("not a folder")
    with pytest.raises(ConfigError) as e:
        run(
            compose_config(["debug=smoke", "logger=none", f"output_dir={sweep}/a_file/job"])
        )  # even as a sweep job
    assert "output_dir=" in str(e.value) and "cannot be created" in str(e.value)
    assert "at a writable folder" in str(e.value)


# ----------------------------------------------------------------------------------------------------------
# On the command line: what fails before any job (Hydra's own steps) exits with a message, not a traceback


def cli(
    args: list[str], env: dict[str, str] | None = None, hide: str | None = None
) -> subprocess.CompletedProcess:
    """run.py with args, not checked (these runs fail on purpose); hide: a module run.py cannot import."""
    return run_py(*args, env=env, hide_module=hide, check=False, timeout=300)


def assert_clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
    for needle in needles:
        assert needle in out, out[-3000:]


@pytest.mark.slow
def test_a_launcher_plugin_that_is_not_installed(sweep: Path, untouched) -> None:
    target = sweep / "joblib_sweep"
    proc = cli(
        ["-m", "debug=smoke", "method=icl,gd", "hydra/launcher=joblib", f"hydra.sweep.dir={target}"],
        hide="hydra_plugins.hydra_joblib_launcher",
    )
    assert_clean_failure(
        proc,
        "hydra/launcher=joblib needs the Hydra plugin hydra-joblib-launcher",
        "pip install -e '.[joblib]'",
    )
    assert not target.exists()  # no job started


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_an_output_folder_that_cannot_be_written(sweep: Path, untouched, mode: str) -> None:
    (sweep / "a_file").write_text("not a folder")
    key = "hydra.run.dir" if mode == "run" else "hydra.sweep.dir"
    args = ["debug=smoke", f"{key}={sweep}/a_file/out"]
    proc = cli(["-m", *args] if mode == "multirun" else args)
    assert_clean_failure(proc, f"output folder {sweep}/a_file/out cannot be written", f"set {key}=<a folder")


@pytest.mark.slow
def test_a_hub_id_with_no_network(sweep: Path, untouched) -> None:
    """Not the offline flag (test_runner covers HF_HUB_OFFLINE=1): a real attempt at a hub that cannot be reached."""
    env = subprocess_env()
    env.pop("HF_HUB_OFFLINE")
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there, with or without a network
    env["HF_HOME"] = str(sweep / "hf_home")  # an empty cache
    out = sweep / "hub_job"
    proc = cli(
        [
            "debug=smoke",
            "model.path=some-org/some-model",
            "model.gguf_file=null",
            "model.random_init=false",
            f"hydra.run.dir={out}",
        ],
        env=env,
    )
    assert proc.returncode == 2
    assert_clean_failure(
        proc, "weights for hub id 'some-org/some-model'", "the hub is not reachable", "point model.path="
    )
    assert io.read_status(out)["error_type"] == "ModelNotFoundError"
