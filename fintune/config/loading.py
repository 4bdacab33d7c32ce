"""Reading settings: the flat flag index, YAML profiles, flag overrides and --help.

Every field of the sections is a flat flag named after it (``--learning_rate``), so
field names are unique across sections; unknown keys and flags are errors that list
the valid names.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from fintune.config.sections import SECTIONS, ConfigError, PipelineConfig


def _flag_index() -> dict[str, tuple[str, Any]]:
    """Flat flag name -> (section, resolved type); every field must have its help text."""
    index: dict[str, tuple[str, Any]] = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in index:
                raise RuntimeError(f"config field {f.name!r} appears in two sections")
            if not str(f.metadata.get("help", "")).strip():
                raise RuntimeError(f"config field {section}.{f.name} has no help text: define it with "
                                   "setting(default, help)")
            index[f.name] = (section, _base_type(hints[f.name]))
    return index


def _base_type(annotation: Any) -> Any:
    """Optional[X] -> X; other annotations unchanged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    return annotation


FLAGS = _flag_index()
_FIELDS: dict[str, dataclasses.Field] = {f.name: f for cls in SECTIONS.values() for f in dataclasses.fields(cls)}


def _field(name: str) -> dataclasses.Field:
    if name not in _FIELDS:
        raise ConfigError(f"unknown option {name!r}; valid options: {', '.join(sorted(FLAGS))}")
    return _FIELDS[name]


def field_help(name: str) -> str:
    """The help text of a config field by its flat name (``learning_rate``)."""
    return _field(name).metadata["help"]


def field_default(name: str) -> Any:
    """A config field's default value (a fresh list for list fields)."""
    f = _field(name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def format_value(value: Any) -> str:
    """A setting's value as it is written on the command line: lists comma-separated,
    booleans true/false, floats in their shorter form (2e-4, not 0.0002)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, float):
        mantissa, exp = f"{value:e}".split("e")
        short = f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
        return short if len(short) < len(repr(value)) else repr(value)
    return str(value)


def _coerce(section: str, name: str, value: Any, where: str) -> Any:
    tp = FLAGS[name][1]
    if value is None:
        return None
    if typing.get_origin(tp) is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {section}.{name} must be a list of strings, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {section}.{name} must be true or false, got {value!r}")
    try:
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return tp(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {section}.{name} must be {tp.__name__}, got {value!r}") from None


def load_yaml(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a profile; unknown sections or keys fail with the valid names."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    out: dict[str, dict[str, Any]] = {}
    for section, values in raw.items():
        if section == "profile":
            out["profile"] = values
            continue
        if section in FLAGS:  # a flat file, as axolotl's: the key belongs inside its section
            home = FLAGS[section][0]
            raise ConfigError(f"{path}: unknown section {section!r}: it is a setting of [{home}]; "
                              f"put it under {home}:")
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section {section!r}; valid sections: "
                              f"profile, {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping")
        valid = [f.name for f in dataclasses.fields(SECTIONS[section])]
        for key, value in values.items():
            if key not in valid:
                raise ConfigError(f"{path}: unknown key {section}.{key}; valid keys in "
                                  f"{section}: {', '.join(valid)}")
            out.setdefault(section, {})[key] = _coerce(section, key, value, str(path))
    return out


def build_config(yaml_values: dict | None = None, overrides: dict[str, Any] | None = None,
                 profile: str | None = None) -> PipelineConfig:
    """Defaults, then YAML values, then flat flag overrides (``{"learning_rate": 1e-4}``)."""
    yaml_values = dict(yaml_values or {})
    sections: dict[str, dict[str, Any]] = {s: dict(yaml_values.get(s, {})) for s in SECTIONS}
    for name, value in (overrides or {}).items():
        if name not in FLAGS:
            raise ConfigError(f"unknown option {name!r}; valid options: {', '.join(sorted(FLAGS))}")
        section, _ = FLAGS[name]
        sections[section][name] = _coerce(section, name, value, "command line")
    built = {s: SECTIONS[s](**vals) for s, vals in sections.items()}
    return PipelineConfig(profile=profile or yaml_values.get("profile", "defaults"), **built)


def add_config_flags(parser: argparse.ArgumentParser, only: list[str] | None = None) -> None:
    """Add one flag per config field, its help text followed by the field's default;
    unset flags stay None so YAML values survive (the default shown is the dataclass's)."""
    for name, (section, tp) in FLAGS.items():
        if only is not None and name not in only:
            continue
        kwargs: dict[str, Any] = {"default": None}
        text = field_help(name)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is list:
            kwargs["metavar"] = "A,B,..."
            text += " Comma-separated."
        else:
            kwargs["type"] = tp
            kwargs["metavar"] = {int: "INT", float: "FLOAT"}.get(tp, "STR")  # the flag says what it is
        text += f" (default: {format_value(field_default(name))})"
        kwargs["help"] = text.replace("%", "%%")
        parser.add_argument(f"--{name}", **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in FLAGS and v is not None}


def config_fingerprint(values: Any) -> str:
    import hashlib

    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
