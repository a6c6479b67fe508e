"""The null control `demo_source=<dataset>`: demonstrations drawn from another task, shown in this task's template.

The queries, the template and the label words stay the job's own; only the demos change: the ones the other
data set's own job would draw for that seed (its pool, its answers), so a model that learns the task from its demos
has nothing of this task to learn. The other data set is a conf/dataset option, composed through Hydra like the job's
own, and checked before any model loads: it must hold every field this template fills in.
"""

from __future__ import annotations

from omegaconf import DictConfig

from icl_gd.confdir import CONFIG_NAME, hydra_config_path
from icl_gd.errors import ConfigError

LAB = "linreg"  # the regression lab's data set: no text, no demos to borrow
SHUFFLED = "shuffled"  # demo_labels=shuffled: the other null control
SHUFFLED_WORDS = "shuffled labels"  # how tables, the report and search tables name the shuffled-label control
SOURCE_WORDS = "demos from"  # ... and this one: "demos from agnews"


def condition_words(demo_labels: object, demo_source: object = None) -> str | None:
    """What a null control changed about a job's demos, in words ("shuffled labels", "demos from agnews"); None for
    a job on its own task's demos with their labels."""
    if str(demo_labels or "original") == SHUFFLED:
        return SHUFFLED_WORDS
    return f"{SOURCE_WORDS} {demo_source}" if demo_source else None


def demo_source_name(cfg: DictConfig) -> str | None:
    """The other task whose demos the job uses, or None (its own; `demo_source` null or the job's dataset)."""
    source = cfg.get("demo_source")
    return None if source in (None, "", cfg.dataset.name) else str(source)


def _compose_dataset(name: str) -> DictConfig:
    """conf/dataset/<name>.yaml as the job's config tree composes it (inside the running app, its search path)."""
    from hydra import compose, initialize_config_dir, initialize_config_module  # noqa: PLC0415
    from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415

    overrides = [f"dataset={name}"]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=CONFIG_NAME, overrides=overrides).dataset
    path = hydra_config_path()
    init = (
        initialize_config_module(path.removeprefix("pkg://"), version_base="1.3")
        if path.startswith("pkg://")
        else initialize_config_dir(path, version_base="1.3")
    )
    with init:
        return compose(config_name=CONFIG_NAME, overrides=overrides).dataset


def source_dataset(cfg: DictConfig, template_fields: list[str]) -> DictConfig | None:
    """The dataset config the demos come from (None: the job's own), checked: ConfigError naming the fix."""
    from hydra.errors import HydraException  # noqa: PLC0415

    name = demo_source_name(cfg)
    if name is None:
        return None
    if str(cfg.get("demo_labels", "original")) != "original":
        raise ConfigError(
            f"demo_source={name} with demo_labels={cfg.demo_labels}: one null control at a time. Run the "
            "shuffled-label control and the other-task control as separate jobs."
        )
    if int(cfg.demos) == 0:
        raise ConfigError(f"demo_source={name} with demos=0 draws nothing: set demos>=1 or demo_source=null.")
    if name == LAB:
        raise ConfigError(
            f"demo_source={LAB} is the regression lab's data: give a text data set (conf/dataset/)."
        )
    try:
        source = _compose_dataset(name)
    except HydraException as e:
        raise ConfigError(
            f"demo_source={name} is not a data set of conf/dataset/ ({str(e).splitlines()[0]}). "
            "Give one of its names, e.g. demo_source=agnews, or null for this task's own demos."
        ) from None
    missing = [f for f in template_fields if f not in source.text_fields]
    if missing:
        raise ConfigError(
            f"demo_source={name} has text_fields={list(source.text_fields)}, but dataset={cfg.dataset.name}'s "
            f"template fills in {missing}: its demos cannot be shown in this template. Pick a source with the same "
            "fields (classification sets share `sentence`, word-pair sets `input`)."
        )
    return source
