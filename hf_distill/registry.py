"""The registries of methods and modalities, filled by decorators when their modules are imported.

A leaf module: it imports nothing of this package, so configs can look a method up by name without importing the
methods (importing `hf_distill` imports every method and modality, which registers them).
"""

from typing import Any

#: Method name -> `DistillationMethod` subclass (see `hf_distill.methods`).
METHODS: dict[str, Any] = {}
#: Modality name -> `Modality` subclass (see `hf_distill.modalities`).
MODALITIES: dict[str, Any] = {}


def _add(registry: dict[str, Any], kind: str, name: str, cls: Any) -> Any:
    if name in registry and registry[name] is not cls:
        raise ValueError(f"A {kind} named {name!r} is already registered ({registry[name].__name__}).")
    cls.name = name
    registry[name] = cls
    return cls


def _lookup(registry: dict[str, Any], kind: str, kinds: str, name: str) -> Any:
    if name not in registry:
        raise ValueError(f"Unknown {kind} {name!r}. Available {kinds}: {', '.join(sorted(registry))}.")
    return registry[name]


def register_method(name: str):
    """Class decorator that adds a `DistillationMethod` to [`METHODS`] under `name`.

    The class must define `config_class`, whose `method` field defaults to `name`.
    """

    def decorator(method_class):
        if method_class.config_class.method_name() != name:
            raise ValueError(
                f"{method_class.config_class.__name__}.method defaults to "
                f"{method_class.config_class.method_name()!r}, expected {name!r}."
            )
        return _add(METHODS, "method", name, method_class)

    return decorator


def methods_for_modality(modality: str) -> list[str]:
    """The registered methods that support `modality` (their `modalities` attribute names it), sorted."""
    return sorted(name for name, cls in METHODS.items() if modality in getattr(cls, "modalities", ()))


def get_method_class(name: str):
    """The registered method class called `name`; a `ValueError` lists the known names otherwise."""
    return _lookup(METHODS, "method", "methods", name)


def register_modality(name: str):
    """Class decorator that adds a `Modality` to [`MODALITIES`] under `name` (its `name` attribute is set)."""
    return lambda modality_class: _add(MODALITIES, "modality", name, modality_class)


def get_modality_class(name: str):
    """The registered modality class called `name`; a `ValueError` lists the known names otherwise."""
    return _lookup(MODALITIES, "modality", "modalities", name)
