"""Recipes as YAML: a file (optionally naming a ``base`` file it extends) plus ``key=value``
overrides, checked against a frozen dataclass.

Every key is checked against the dataclass's fields (nested dataclasses take dotted keys on
the command line, ``lora.rank=64``, and nested mappings in YAML); values are converted to the
field's type, so ``lr=2e-4`` is a float even though YAML 1.1 reads it as a string. A bad key or
value is one error naming the file, the line and the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from mathrl.errors import UserError

T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | None, overrides: Sequence[str] = ()) -> T:
    """``cls`` built from the YAML file ``path`` (and its ``base`` chain) and ``key=value`` overrides.

    >>> load_config(SFTConfig, "configs/tiny/sft.yaml", ["lr=1e-3", "lora.rank=8"])  # doctest: +SKIP
    """
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    if path is not None:
        values, where = read_recipe(path)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r}: expected key=value")
        target = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise UserError(f"override {item!r}: {part} is not a section")
        target[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        where[key.strip()] = f"command line: {item}"
    return _build(cls, values, where, prefix="")


PACKAGED_RECIPES = Path(__file__).parent / "configs"


def recipe_path(path: str | Path) -> Path:
    """``path`` if it exists, else the packaged recipe of that name (``tiny/grpo.yaml`` or
    ``configs/tiny/grpo.yaml``), so recipes work from an installed package outside the repo."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    packaged = PACKAGED_RECIPES.joinpath(*parts)
    return packaged if packaged.is_file() else path


def read_recipe(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """A YAML recipe with its ``base`` chain merged: (values, where each key was set: ``file:line``)."""
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    _read_yaml(recipe_path(path), values, where, seen=())
    return values, where


def option_defaults(parser: argparse.ArgumentParser, path: str | Path) -> dict[str, Any]:
    """Defaults for an option-style command (``mathrl eval --config F``) from a YAML recipe whose
    keys are the command's option names (``max_tokens`` or ``max-tokens``). Flags given on the
    command line still win. Unknown keys and bad values are errors naming file and line."""
    values, where = read_recipe(path)
    actions = {
        a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config_file")
    }
    defaults = {}
    for key, value in values.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None:
            raise UserError(
                f"{where[key]}: unknown setting {key!r} for this command; known: {', '.join(sorted(actions))}"
            )
        if isinstance(value, list) and action.type in (None, str):
            value = ",".join(str(v) for v in value)  # benchmarks: [math500, aime2024]
        if value is not None and action.type is not None and not isinstance(value, bool):
            try:
                value = action.type(value)
            except (TypeError, ValueError):
                raise UserError(f"{where[key]}: {key}: cannot read {value!r}") from None
        if action.choices is not None and value not in action.choices:
            raise UserError(f"{where[key]}: {key} must be one of {', '.join(map(str, action.choices))}")
        defaults[dest] = value
        action.required = False  # given by the recipe
    return defaults


def describe_changes(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> str:
    """What differs between two recorded settings, as ``key: old -> new`` (nested keys dotted);
    empty when nothing that matters does. Every "other settings" refusal says this.

    >>> describe_changes({"lr": 1e-4, "lora": {"rank": 8}}, {"lr": 2e-4, "lora": {"rank": 16}})
    'lora.rank: 8 -> 16; lr: 0.0001 -> 0.0002'
    """
    return "; ".join(_changes(old, new, "", ignore))


def _changes(old: dict, new: dict, prefix: str, ignore: tuple[str, ...] = ()) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if key in ignore or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changes(a, b, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}: {_short(a)} -> {_short(b)}")
    return out


def _short(value: Any) -> str:
    text = "unset" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fill_defaults(recorded: dict, cls: type) -> dict:
    """``recorded`` (a config as a run folder holds it) with every field of ``cls`` it lacks set to
    its default, nested sections included: a setting a later version added compares as the
    value the earlier run in effect had."""
    out = dict(recorded)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(out.get(f.name), dict):
            out[f.name] = fill_defaults(out[f.name], hints[f.name])
        elif f.name not in out:
            plain = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default
            out[f.name] = _plain(plain)
    return out


def config_dict(cfg: Any) -> dict:
    """A dataclass config as plain YAML-safe data (tuples become lists)."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _read_yaml(path: Path, values: dict, where: dict, seen: tuple[Path, ...]) -> None:
    path = path.resolve()
    if path in seen:
        raise UserError(f"{path}: 'base' files form a cycle")
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except OSError as err:
        raise UserError(f"cannot read config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return
    if not isinstance(data, dict):
        raise UserError(f"{path}:1: a config is a mapping of settings")
    base = data.pop("base", None)
    if base is not None:
        _read_yaml(path.parent / str(base), values, where, seen + (path,))
    _merge(values, data, where, _key_lines(node), str(path), prefix="")


def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = f"{prefix}{key.value}"
            lines[name] = key.start_mark.line + 1
            lines.update(_key_lines(value, name + "."))
    return lines


def _merge(values: dict, data: dict, where: dict, lines: dict[str, int], file: str, prefix: str) -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if not isinstance(values.get(key), dict):
                values[key] = {}
            _merge(values[key], value, where, lines, file, name + ".")
        else:
            values[key] = value
        where[name] = f"{file}:{lines.get(name, 1)}"


def _build(cls: type, values: dict, where: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in fields:
            moved = getattr(cls, "RENAMED", {}).get(key)
            if moved:
                raise UserError(f"{where.get(name, name)}: {name} is now {prefix}{moved}")
            known = ", ".join(sorted(fields))
            raise UserError(f"{where.get(name, name)}: unknown setting {name!r} (known: {known})")
        kwargs[key] = _convert(hints[key], value, name, where)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UserError(f"missing required setting(s): {', '.join(prefix + m for m in missing)}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from None


def _convert(hint: Any, value: Any, name: str, where: dict) -> Any:
    def bad(expected: str) -> UserError:
        return UserError(f"{where.get(name, name)}: {name} must be {expected}, got {value!r}")

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise bad("a mapping")
        return _build(hint, value, where, name + ".")
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, name, where)
            except UserError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(map(repr, args)))
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        key_type, value_type = args or (Any, Any)
        return {
            _convert(key_type, k, f"{name}.{k}", where): _convert(value_type, v, f"{name}.{k}", where)
            for k, v in value.items()
        }
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise bad("a list")
        item = args[0] if args else Any
        return tuple(_convert(item, v, name, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise bad("an integer")
        try:
            return int(value)
        except ValueError:
            raise bad("an integer") from None
    if hint is float:
        if isinstance(value, bool):
            raise bad("a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad("a number") from None
    if hint is str:
        if isinstance(value, dict | list):
            raise bad("a string")
        return str(value)
    return value
