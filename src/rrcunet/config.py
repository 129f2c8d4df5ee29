"""Typed configs: frozen dataclass ⇄ plain JSON data ⇄ dotted ``key=value`` overrides, for every config.

Owns the one engine that every rrcunet config goes through (training, preprocessing, loss,
inference, experiments, model-file metadata): :func:`config_from_dict` (JSON data → dataclass,
checking every key and type), :func:`config_to_dict` / :func:`config_to_json` (back),
:func:`apply_overrides` (``optim.lr=1e-3``-style overrides on the data, typed by the dataclass
annotations) and :func:`read_config_data` (a JSON file or a packaged config by name).

Type checking and conversion are pydantic v2's (:class:`pydantic.TypeAdapter` over the standard
library dataclasses, in strict JSON mode, so ``"3"`` is not an int and ``true`` is not a number;
lists become tuples where the annotation says so). The dataclasses stay plain frozen dataclasses
with their ``__post_init__`` checks, so importing a config costs nothing and a config object is
hashable. What is ours is the wording: pydantic's errors are turned into one line that names the
dotted key, what it must be and what was found (``optim.lr must be a number, not 'fast'``),
and an unknown key lists the valid ones.

Example::

    from rrcunet.config import apply_overrides, config_from_dict
    cfg = config_from_dict(TrainConfig, apply_overrides({}, ["optim.lr=1e-3"], cls=TrainConfig))
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import ConfigDict, TypeAdapter, ValidationError

from rrcunet.errors import ConfigError

#: ``section.X=v`` with X not a field of the section is short for ``section.<field>.X=v`` for the
#: dataclasses that name such a free-form dict field here (``model.base_filters=8``).
KWARGS_FIELD = "__config_kwargs_field__"


@functools.lru_cache(maxsize=None)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    _forbid_extra(tp)
    return TypeAdapter(tp)


def _forbid_extra(tp: Any) -> None:
    """Make unknown keys errors in ``tp`` and every dataclass it nests (pydantic ignores them by default)."""
    for arg in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(arg) and "__pydantic_config__" not in vars(arg):
            arg.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[union-attr]
            for sub in _fields(arg).values():  # type: ignore[arg-type]
                _forbid_extra(sub)
        elif arg is not tp:
            _forbid_extra(arg)


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _section(tp: Any) -> type | None:
    """The dataclass of an annotation ``C`` or ``C | None``; ``None`` for any other annotation."""
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    if typing.get_origin(tp) in (Union, types.UnionType):
        classes = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if len(classes) == 1 and all(a is type(None) or a is classes[0] for a in typing.get_args(tp)):
            return classes[0]
    return None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} {_type_name(args[0]) if len(set(args)) == 1 else 'values'}"
    if tp is type(None):
        return "null"
    if origin is dict or tp is dict:
        return "object"
    return getattr(tp, "__name__", str(tp))


def _expected(tp: Any) -> str:
    """What a value of annotation ``tp`` must be, for an error message."""
    plain = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in plain:
        return plain[tp]
    return ("a " if typing.get_origin(tp) is tuple else "") + _type_name(tp)


def _join(where: str, name: str) -> str:
    return name if where == "config" else f"{where}.{name}"


def _message(exc: ValidationError, cls: type, data: Any, where: str) -> str:
    """One line for the first error of ``exc``: the dotted key, what it must be, what it is."""
    err = exc.errors()[0]
    node_cls: type | None = cls
    node, path, tp = data, where, None
    whole = True  # the location is a key path (not an index inside a value)
    consumed = 0  # parts of the location that are keys of config sections
    for part in err["loc"]:
        hints = _fields(node_cls) if node_cls is not None else {}
        if not isinstance(part, str) or part not in hints and err["type"] != "unexpected_keyword_argument":
            whole = False
            break
        if part not in hints:  # an unknown key
            return f"unknown config key {_join(path, part)!r}; valid keys under {path!r}: {', '.join(sorted(hints))}"
        tp, path = hints[part], _join(path, part)
        consumed += 1
        node = node.get(part) if isinstance(node, dict) else None
        node_cls = _section(tp)
    rest = list(err["loc"])[consumed:]  # inside a free-form dict: [key] or [key, "[key]"]
    if not whole and typing.get_origin(tp) is dict and rest and isinstance(node, dict):
        key_type, value_type = typing.get_args(tp)
        key = rest[0]
        if len(rest) > 1 and rest[1] == "[key]":
            return f"{path} has the key {key!r}: its keys must be {_expected(key_type)}"
        if len(rest) == 1 and key in node:
            return f"{path}[{key!r}] must be {_expected(value_type)}, not {node[key]!r}"
    if err["type"] in ("value_error", "assertion_error") and isinstance(err.get("ctx", {}).get("error"), Exception):
        return f"{path}: {err['ctx']['error']}" if path != where else str(err["ctx"]["error"])
    if err["type"] in ("missing", "missing_argument") and whole:
        return f"missing or wrong field {path!r}: it is required"
    if tp is None or err["type"] in ("dataclass_type", "dataclass_args_type") and node_cls is not None:
        keys = sorted(_fields(node_cls)) if node_cls is not None else []
        return f"{path} must be an object with keys {keys}, not {node!r}"
    return f"{path} must be {_expected(tp)}, not {'null' if node is None else repr(node)}"


def config_from_dict(cls: type, data: Any, *, where: str = "config") -> Any:
    """Build dataclass ``cls`` from plain JSON data, checking every key and type.

    Missing keys take the dataclass defaults; an unknown key raises :class:`ConfigError` listing
    the valid ones; a ``__post_init__`` check's :class:`ConfigError` is raised with its key.
    """
    if isinstance(data, cls):
        return data
    try:
        return _adapter(cls).validate_json(json.dumps(config_to_dict(data)), strict=True)
    except ValidationError as exc:
        raise ConfigError(_message(exc, cls, data, where)) from None
    except (TypeError, ValueError) as exc:  # not JSON data (a set, an object), or a check outside pydantic
        raise ConfigError(f"{where}: {exc}") from exc


def config_to_dict(config: Any) -> Any:
    """Plain JSON-ready data of a (nested) config dataclass: tuples become lists."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, dict):
        return {str(k): config_to_dict(v) for k, v in config.items()}
    return config


def config_to_json(config: Any) -> str:
    """Readable JSON of a config: one key per line, short lists (shapes, ranges) kept on one line."""
    return _dumps(config_to_dict(config), 0) + "\n"


def _dumps(value: Any, indent: int) -> str:
    pad = "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{json.dumps(str(k))}: {_dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return json.dumps(value)
    if isinstance(value, list):
        items = [f"{pad}{_dumps(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value)


# ---------------------------------------------------------------------------------------------
# key=value overrides


def parse_scalar(text: str) -> Any:
    """Best-effort reading of an override value for free-form options: ``null``/``none``, booleans,
    JSON, then a comma list (empty items dropped), else the text itself."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # not JSON (or absurdly nested): taken as text below
        pass
    if "," in text:
        return [parse_scalar(part) for part in text.split(",") if part.strip()]
    return text


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _parse_typed(text: str, tp: Any, where: str) -> Any:
    """The command-line text of an override, read as the annotation ``tp`` wants it: the first of
    its readings (a literal choice in any case, yes/no words, JSON or a comma/``x`` list, the plain text) that
    ``tp`` accepts."""
    literals = [a for a in typing.get_args(tp) if isinstance(a, str)] if typing.get_origin(tp) is Literal else []
    literals += [c for a in typing.get_args(tp) if typing.get_origin(a) is Literal for c in typing.get_args(a)]
    low = text.strip().lower()
    candidates: list[Any] = [c for c in literals if str(c).lower() == low]
    if low in _BOOL_WORDS:
        candidates.append(_BOOL_WORDS[low])
    candidates += [parse_scalar(text), text]
    for sep in (",", "x"):  # a one-item list, or a shape written 96x96x32
        candidates.append([parse_scalar(p) for p in text.split(sep) if p.strip()])
    for value in candidates:
        try:
            return _adapter(tp).validate_json(json.dumps(value), strict=True)
        except (ValidationError, ValueError):
            continue
    raise ConfigError(f"{where} must be {_expected(tp)}, not {text!r}")


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...], cls: type) -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys) to plain data of dataclass ``cls``, checking keys and types.

    Values are read for the type of the field: ``true``/``false``, numbers, ``none``/``null``,
    lists as ``256,256,48``, ``256x256x48`` or ``[256,256,48]``. Optional sections (``X | None``)
    are descended into like any other.

    Raises:
        ConfigError: malformed override, unknown key (the message lists the valid keys) or a value
            of the wrong type.
    """
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or "" in key.split("."):
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=1e-3)")
        _set_dotted(out, cls, key.split("."), text, "config", item)
    return out


def _set_dotted(node: dict[str, Any], node_cls: type | None, parts: list[str], text: str, where: str,
                item: str) -> None:
    part, rest = parts[0], parts[1:]
    here = _join(where, part)
    if node_cls is None:  # inside a free-form dict (model.kwargs)
        if not rest:
            node[part] = parse_scalar(text)
            return
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {here} is not an object")
        _set_dotted(child, None, rest, text, here, item)
        return
    hints = _fields(node_cls)
    free = getattr(node_cls, KWARGS_FIELD, None)
    if part not in hints:
        if free is not None:  # model.base_filters=8 -> model.kwargs.base_filters=8
            _set_dotted(node.setdefault(free, {}), None, parts, text, _join(where, free), item)
            return
        raise ConfigError(
            f"unknown config key {here!r} in override {item!r}; valid keys under {where!r}: "
            f"{', '.join(sorted(hints))}"
        )
    tp = hints[part]
    if not rest:
        node[part] = config_to_dict(_parse_typed(text, tp, here))
        return
    child_cls = _section(tp)
    if child_cls is None and part != free and typing.get_origin(tp) is not dict:
        raise ConfigError(f"override {item!r}: {here} is not a section (it is a {_type_name(tp)})")
    child = node.get(part)
    if child is None:
        child = node[part] = {}
    if not isinstance(child, dict):
        raise ConfigError(f"override {item!r}: {here} is not an object")
    _set_dotted(child, child_cls, rest, text, here, item)


# ---------------------------------------------------------------------------------------------
# files


def packaged_configs() -> list[str]:
    """Names of the configs shipped in ``rrcunet/configs`` (``paper``, ``cpu_tumour``, ...)."""
    folder = resources.files("rrcunet") / "configs"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def read_config_data(source: str | Path) -> dict[str, Any]:
    """Plain data of a config: a JSON file path, or the name of a packaged config (``_comment`` dropped)."""
    path = Path(source)
    if path.is_file():
        text, origin = path.read_text(encoding="utf-8"), str(path)
    else:
        name = str(source)
        candidate = resources.files("rrcunet") / "configs" / f"{name}.json"
        if path.suffix != "" or not candidate.is_file():
            raise ConfigError(
                f"config {name!r} is neither a file nor a packaged config; packaged configs: "
                f"{', '.join(packaged_configs()) or 'none'}"
            )
        text, origin = candidate.read_text(encoding="utf-8"), f"packaged config {name!r}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin}: not valid JSON ({exc})") from exc
    except RecursionError:
        raise ConfigError(f"{origin}: JSON nested too deeply to be a config; expected an object of sections "
                          "(see the packaged configs, `rrcunet train --config cpu_tumour`)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a config must be a JSON object, found {type(data).__name__}")
    data.pop("_comment", None)
    return data
