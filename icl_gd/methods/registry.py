"""The method registry: `method.name` -> Method class, or a `_target_` class path for methods defined elsewhere.

Built-in methods register themselves when methods/ is imported (`@register`). A method outside the package needs
only its module and a YAML file with `_target_: my_pkg.my_module.MyMethod` in a config folder Hydra searches.
"""

from __future__ import annotations

from omegaconf import DictConfig

from icl_gd.errors import ConfigError
from icl_gd.methods.base import Method

METHODS: dict[str, type[Method]] = {}
TARGET_KEY = "_target_"


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` available as method=`cls.name`."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is registered twice ({METHODS[cls.name]} and {cls})")
    METHODS[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(METHODS)


def method_class(method: DictConfig) -> type[Method]:
    """The class of a `method` config node: its `_target_` when given, else the registered `method.name`."""
    target = method.get(TARGET_KEY)
    if target:
        from hydra.utils import get_class  # noqa: PLC0415 -- only extension methods need it

        try:
            cls = get_class(str(target))
        except Exception as e:  # noqa: BLE001 -- any import failure is the user's path: say which
            raise ConfigError(
                f"method._target_={target!r} cannot be imported ({type(e).__name__}: {e}): give the full "
                "module.Class path of a Method subclass on PYTHONPATH."
            ) from None
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise ConfigError(f"method._target_={target!r} is not a subclass of icl_gd.methods.Method.")
        return register(cls)
    name = method.get("name")
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not allowed; choose one of: {', '.join(names())}.")
    return METHODS[name]
