"""Typed configs: nested dataclasses ⇄ YAML presets, with dotted CLI overrides.

    cfg = load_config(RunConfig, "forecast_small", ["train.lr=3e-4", "model.width=256"])
    save_yaml(config_to_dict(cfg), run_dir / "config.yaml")

A config is a YAML file or the name of a preset shipped with the package (``forecast_small``, also written
``forecast_small.yaml`` or ``forecast_small``): presets live beside their recipe in
``dforce/recipes/<recipe>/presets/`` and are found from any working directory (:func:`resolve_preset`).

Values in overrides are parsed as YAML scalars (``3e-4`` → float, ``true`` → bool, ``null`` → None,
``[1,2]`` → list). Unknown keys, wrong types and values rejected by a dataclass's ``__post_init__`` all
raise :class:`ConfigError` naming the dotted key (and the file, when one was read).
"""

from __future__ import annotations

import copy
import dataclasses
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dforce._utils import check_regular_file
from dforce.errors import ConfigError, DforceError

T = TypeVar("T")
MAX_YAML_BYTES = 1 << 20  # a config is a few KiB: anything above 1 MiB is not one (and is not read)
_repr = reprlib.Repr()  # values in messages stay short, whatever their size
_repr.maxlevel, _repr.maxlist, _repr.maxdict, _repr.maxstring, _repr.maxother = 2, 4, 4, 60, 60
_brief = _repr.repr


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases (``*name``): configs never need them, and a few nested aliases
    ("billion laughs") expand into more data than memory holds as soon as anything walks the result."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not supported in dforce files; "
                                              "write the values out", mark)
        return super().compose_node(parent, index)


def safe_yaml(text: str):
    """``yaml.safe_load`` refusing aliases (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_NoAliasLoader)


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one short line: what and where (``line L, column C``)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or " ".join(str(e).split())
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem[:200]}{where}"


def read_yaml_mapping(path: str | Path, error=ConfigError, what: str = "file") -> dict:
    """Read a YAML file holding a mapping; anything else is one ``error`` line naming ``path``.

    Refused without reading: a missing path, a directory, a device or FIFO (``/dev/zero``, a pipe: reading
    would never end), a file over :data:`MAX_YAML_BYTES`. Then invalid YAML, aliases, a non-mapping top level.
    """
    path = check_regular_file(path, "a YAML file", error=error, label=f"{what} {path}")
    st = path.stat()
    if st.st_size > MAX_YAML_BYTES:
        raise error(f"{what} {path}: {st.st_size} bytes is too large for a YAML config (limit {MAX_YAML_BYTES})")
    try:
        data = safe_yaml(path.read_text(encoding="utf-8-sig"))
    except OSError as e:
        raise error(f"{what} {path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path}: is not a UTF-8 text file") from None
    except yaml.YAMLError as e:
        raise error(f"{what} {path} is not valid YAML: {yaml_problem(e)}") from None
    except RecursionError:
        raise error(f"{what} {path}: nested too deeply to be a config") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{what} {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def config_to_dict(cfg) -> dict:
    """A dataclass config as a plain dict (tuples become lists so YAML stays simple)."""

    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {_brief(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of fields, got {_brief(value)}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {_brief(value)}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key} must have {len(args)} entries, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {_brief(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {_brief(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if not (isinstance(value, float) and value.is_integer()):
                raise ConfigError(f"{key} must be an integer, got {_brief(value)}")
            value = int(value)
        if not -(2**63) <= value < 2**63:  # torch/numpy integers are 64-bit
            raise ConfigError(f"{key}={_brief(value)} is out of range for an integer setting")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {_brief(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {_brief(value)}")
        return value
    return value


def _renamed(cls, key: str, value: Any, prefix: str) -> list[str] | None:
    """A key ``cls`` renamed or removed (its ``RENAMED_KEYS``): the new dotted path (a list of names), ``[]`` for a
    removed key given at its old no-op default (dropped), None when ``key`` is not a renamed key of ``cls``."""
    table = getattr(cls, "RENAMED_KEYS", {})
    if key not in table:
        return None
    new, noop = table[key]
    if new is not None:
        return new.split(".")
    if value == noop:
        return []
    raise ConfigError(f"{prefix}{key} was removed in dforce 0.2 (it lost its experiment; see CHANGELOG.md)")


def _apply_renames(cls, data: dict, prefix: str) -> dict:
    """``data`` with the keys ``cls`` renamed moved to their new place (old saved configs keep loading)."""
    if not any(k in getattr(cls, "RENAMED_KEYS", {}) for k in data):
        return data
    out = copy.deepcopy({k: v for k, v in data.items() if k not in cls.RENAMED_KEYS})
    for k, v in data.items():
        path = _renamed(cls, k, v, prefix)
        if path:  # the old key wins over the new one's default (load_config merges the defaults in first)
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = v
    return out


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {_brief(data)}")
    data = _apply_renames(cls, data, prefix)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s} (valid keys under {prefix.rstrip('.') or 'the top level'}: "
            f"{', '.join(fields)})"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except DforceError as e:
        raise ConfigError(str(e)) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` → (``["train", "lr"]``, ``3e-4``)."""
    if "=" not in text:
        raise ConfigError(f"override {_brief(text)} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part.isidentifier() for part in key.split(".")):
        raise ConfigError(f"override {text!r}: {key!r} is not a dotted config key")
    try:
        value = safe_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...], cls: type | None = None) -> dict:
    """Apply dotted overrides to a nested dict (a copy). With ``cls``, unknown keys are rejected early."""
    out = yaml.safe_load(yaml.safe_dump(data)) if data else {}
    for text in overrides:
        path, value = parse_override(text)
        node, tp = out, cls
        i = 0
        while i < len(path):
            part = path[i]
            if tp is not None and part not in {f.name for f in dataclasses.fields(tp)} and i == len(path) - 1:
                new = _renamed(tp, part, value, ".".join(path[:i]) + "." if i else "")
                if new == []:  # a removed key at its no-op default: nothing to set
                    break
                if new:
                    path = path[:i] + new
                    part = path[i]
            if tp is not None:
                names = {f.name: f for f in dataclasses.fields(tp)}
                if part not in names:
                    raise ConfigError(
                        f"unknown config key {'.'.join(path[: i + 1])} in override {text!r} "
                        f"(valid: {', '.join(names)})"
                    )
                sub = typing.get_type_hints(tp)[part]
                tp = sub if dataclasses.is_dataclass(sub) else None
            if i == len(path) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is not a section")
            i += 1
    return out


def _defaults(cls) -> dict:
    """``cls()`` as a dict, so a partial section keeps the *parent's* defaults (not the section class's)."""
    try:
        return config_to_dict(cls())
    except (TypeError, DforceError):  # required fields: no defaults to start from
        return {}


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


PRESETS_ROOT = Path(__file__).resolve().parents[1] / "recipes"  # dforce/recipes/<recipe>/presets/*.yaml


def presets() -> dict[str, Path]:
    """Every preset shipped with dforce: ``{name: path}`` (names are unique across recipes)."""
    return {p.stem: p for p in sorted(PRESETS_ROOT.glob("*/presets/*.yaml"))}


def resolve_preset(path: str | Path) -> Path:
    """A config argument as a file: an existing path as given, else a shipped preset of that name.

    ``sequence_small``, ``sequence_small.yaml`` and ``sequence_small`` (the old repo layout) all
    name the preset ``dforce/recipes/sequence/presets/sequence_small.yaml`` when no such file exists here.
    """
    path = Path(path)
    if path.exists():
        return path
    name = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    known = presets()
    if path.suffix in ("", ".yaml") and name in known and (path.parent == Path(".") or path.parent.name == "configs"):
        return known[name]
    raise ConfigError(f"config file {path} not found (and no preset of that name; presets: {', '.join(known)})")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Defaults of ``cls`` ← YAML file or preset ``path`` ← dotted ``overrides``; validated."""
    data: dict = {}
    where = ""
    if path is not None:
        path = resolve_preset(path)
        where = f" (in {path})"
        data = read_yaml_mapping(path, ConfigError, "config file")
    try:
        data = _merge(_defaults(cls), data)
        data = apply_overrides(data, overrides, cls)
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{e}{where}") from None



def first_difference(a, b, prefix: str = "") -> str | None:
    """Dotted path of the first key where two nested config dicts differ (``None`` when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return None if a == b else prefix.rstrip(".")
