"""Typed model configs: one frozen dataclass per fine architecture (a ``FineConfig``), built from and written back
to the plain dict that checkpoints store (``crossview.fine.fine_config``).

Model code reads ``self.cfg.<field>`` (typed, immutable); ``model.config`` stays the plain dict saved with
checkpoints. Lists in the dict become tuples in the dataclass and lists again in ``config_dict``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar, TypeVar

from crossview.errors import ConfigError

__all__ = ["FineConfig", "config_from_dict", "config_dict"]

C = TypeVar("C")
_RECORD = ("arch", "name")  # registry bookkeeping carried by every config dict


def _nested(f: dataclasses.Field) -> type | None:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return type(default) if dataclasses.is_dataclass(default) else None


def config_from_dict(cls: type[C], d: dict[str, Any] | C, where: str = "") -> C:
    """``cls`` from a config dict (nested dataclass fields from nested dicts; lists -> tuples); ``arch`` and
    ``name`` are ignored, any other unknown key is refused with a message naming it. A ``cls`` passes through."""
    if isinstance(d, cls):
        return d
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields) - set(_RECORD)
    if unknown:
        raise ConfigError(f"unknown {where or cls.__name__} keys {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for key, value in d.items():
        if key not in fields:
            continue
        sub = _nested(fields[key])
        if sub is not None:
            value = config_from_dict(sub, value, f"{where} {key}".strip())
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[key] = value
    return cls(**kwargs)


def config_dict(cfg: Any) -> dict[str, Any]:
    """The plain dict of a config dataclass (tuples -> lists), as checkpoints store it."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


class FineConfig:
    """Base of the config dataclasses: ``arch`` names the architecture, ``check`` refuses inconsistent values."""

    arch: ClassVar[str]
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}  # keys with a closed set of values

    def check(self) -> None:
        """Raise ``ConfigError`` naming the key of an inconsistent value (a ``choices`` key outside its set, and
        whatever ``check_more`` refuses)."""
        for key, allowed in self.choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{self.arch} {key} must be one of {allowed}, got {getattr(self, key)!r}")
        self.check_more()

    def check_more(self) -> None:
        """The architecture's further consistency checks."""

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | Any) -> Any:
        """The typed config of a plain config dict (``fine_config``), checked."""
        out = config_from_dict(cls, cfg, cls.arch)
        out.check()
        return out

    @classmethod
    def resolve(cls, cfg: dict[str, Any] | Any) -> tuple[Any, dict[str, Any]]:
        """(typed config, the plain dict a checkpoint stores) of a config dict or dataclass."""
        typed = cls.from_dict(cfg)
        return typed, copy.deepcopy(cfg) if isinstance(cfg, dict) else {"arch": cls.arch, **config_dict(typed)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The architecture's default config dict (what ``register_arch`` takes)."""
        return {"arch": cls.arch, **{k: v for k, v in config_dict(cls()).items() if k != "name"}}
