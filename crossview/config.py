"""Config merging shared by the retrieval and fine-grained presets: ``key=value`` parsing and dotted overrides."""

from __future__ import annotations

from typing import Any

from crossview.errors import ConfigError


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value parsed as YAML (numbers, booleans, lists, dicts, null)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. --set lr=3e-4)")
    key, value = text.split("=", 1)
    parsed = yaml.safe_load(value) if value.strip() else None
    if isinstance(parsed, str):  # YAML 1.1 reads 3e-3 (no dot) as a string: a number was meant
        try:
            parsed = float(parsed) if parsed.strip().lower() not in ("nan", "inf", "-inf", "infinity") else parsed
        except ValueError:
            pass
    return key.strip(), parsed


def merge_preset(base: dict[str, Any], presets: dict[str, dict[str, Any]], preset: str | None,
                 overrides: dict[str, Any] | None, what: str = "preset") -> dict[str, Any]:
    """The one config resolver: ``base`` ← ``presets[preset]`` ← ``overrides`` (dotted keys reach nested entries,
    unknown top-level keys are refused); the preset's name is recorded under ``preset``. Callers then check and
    fill in what is specific to them."""
    import copy

    cfg = copy.deepcopy(base)
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"unknown {what} {preset!r}; choose one of: {', '.join(sorted(presets))}")
        cfg.update(copy.deepcopy(presets[preset]))
        cfg["preset"] = preset
    return apply_overrides(cfg, overrides, base)


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any] | None, known: dict[str, Any]) -> dict[str, Any]:
    """Set ``overrides`` on ``cfg`` in place (and return it). Top-level keys must be in ``known`` (or ``preset``);
    dotted keys (``model_kwargs.aerial_size``) set nested dictionary entries."""
    for key, value in (overrides or {}).items():
        head, _, rest = key.partition(".")
        if head not in cfg and head != "preset":
            raise ConfigError(f"unknown config key {head!r}; known keys: {', '.join(sorted(known))}")
        if not rest:
            cfg[key] = value
            continue
        node = cfg.setdefault(head, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{head!r} is not a dictionary; cannot set {key!r}")
        parts = rest.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg
