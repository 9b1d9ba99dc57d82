"""Config plumbing: Hydra composition of params/ and strict dataclass sections.

The library never reads params.yaml itself: stage scripts load their section
with :func:`load_section` and build one dataclass per concern with
:func:`from_dict`, which rejects unknown keys (a typo in params must not be
silently ignored).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def compose(config_dir: str | Path, overrides: list[str] | None = None, config_name: str = "config") -> str:
    """Compose ``config_dir/config_name.yaml`` with Hydra and return the YAML text of params.yaml."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    # `import fairseq` registers a structured schema named "config" in Hydra's
    # global ConfigStore, which would be merged into ours; hide it while composing.
    store = ConfigStore.instance()
    shadowed = store.repo.pop(f"{config_name}.yaml", None)
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides or []))
    finally:
        if shadowed is not None:
            store.repo[f"{config_name}.yaml"] = shadowed
    return OmegaConf.to_yaml(cfg)


def load_params(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def load_section(path: str | Path, name: str) -> dict[str, Any]:
    params = load_params(path)
    if name not in params:
        raise KeyError(f"{path}: no section {name!r}; regenerate it with `make params` (sections: {sorted(params)})")
    return params[name]


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses.

    Unknown keys raise ValueError naming the key path; missing keys take the
    dataclass default (or raise if there is none).
    """
    where = where or cls.__name__
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = from_dict(kind, value, f"{where}.{name}")
        elif _is_tuple(kind) and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _is_tuple(kind: Any) -> bool:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple(a) for a in typing.get_args(kind))
    return origin is tuple or kind is tuple
