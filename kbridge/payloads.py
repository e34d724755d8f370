"""Typed payloads: a route's payload_model turns the deserialized payload into a validated instance.

Three kinds of model are understood: a pydantic v2 BaseModel, a msgspec Struct, and a
plain dataclass (nested dataclasses, lists, dicts, Optional and Literal included). pydantic
and msgspec are optional: they are only imported when a model of theirs is declared, and
then the user's module already imported them.

Validation is part of reading the payload, so it stays lazy: the listener validates only
when a filter reads the payload. A payload that does not validate is a DeserializationError:
no retry can fix it, so it is dead-lettered at once, and its field paths and messages travel
in the letter's headers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import re
import sys
import types
import typing
import uuid
from collections.abc import Mapping
from typing import Any

from .errors import PayloadValidationError
from .params import Deserializer

FieldError = tuple[str, str]  # (field path such as "items.0.price", message)

KINDS = ("pydantic", "msgspec", "dataclass")
MAX_ERRORS = 20  # a letter's headers carry at most this many field errors
MAX_ERROR_TEXT = 300  # characters of one path or message: an error quoting a huge input stays small


def model_kind(model: object) -> str | None:
    """'pydantic', 'msgspec', 'dataclass', or None; imports nothing the user did not import first."""
    if not isinstance(model, type):
        return None
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and issubclass(model, pydantic.BaseModel):
        return "pydantic"
    msgspec = sys.modules.get("msgspec")
    if msgspec is not None and issubclass(model, msgspec.Struct):
        return "msgspec"
    if dataclasses.is_dataclass(model):
        return "dataclass"
    return None


def payload_model_problems(where: str, opts: Mapping[str, Any]) -> list[str]:
    model = opts.get("payload_model")
    kind = model_kind(model)
    if model is None or kind in ("pydantic", "msgspec"):
        return []
    if kind == "dataclass":
        assert isinstance(model, type)
        try:
            _field_types(model)
        except Exception as exc:
            return [f"{where}: payload_model {model.__qualname__}'s field types cannot be resolved "
                    f"({type(exc).__name__}: {exc}); define the types it names at module level"]
        return []
    return [f"{where}: payload_model must be a pydantic v2 BaseModel, a msgspec Struct or a dataclass "
            f"(the class itself), got {model!r}"]


def model_name(model: type) -> str:
    return model.__qualname__


class TypedDeserializer:
    """The route's deserializer followed by validation into payload_model."""

    def __init__(self, inner: Deserializer, model: type) -> None:
        self.inner = inner
        self.model = model
        self.kind = model_kind(model)
        self.__name__ = f"{getattr(inner, '__name__', repr(inner))} as {model_name(model)}"
        self._validate = {"pydantic": _pydantic, "msgspec": _msgspec, "dataclass": _dataclass}[self.kind or ""]

    def __call__(self, raw: bytes) -> Any:
        return self._validate(self.model, self.inner(raw))

    def __repr__(self) -> str:
        return f"<TypedDeserializer {self.__name__}>"


def typed_deserializer(inner: Deserializer, model: type | None) -> Deserializer:
    """inner itself when there is no model, so an untyped route costs nothing more."""
    return inner if model is None else TypedDeserializer(inner, model)


def _fail(model: type, found: list[FieldError]) -> PayloadValidationError:
    errors = [(path[:MAX_ERROR_TEXT], message[:MAX_ERROR_TEXT]) for path, message in found[:MAX_ERRORS]]
    shown = "; ".join(f"{path}: {message}" for path, message in errors)
    more = f" (and {len(found) - MAX_ERRORS} more)" if len(found) > MAX_ERRORS else ""
    return PayloadValidationError(f"does not validate as {model_name(model)}: {len(found)} error(s): {shown}{more}",
                                  errors)


def _pydantic(model: Any, data: Any) -> Any:
    import pydantic

    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _fail(model, [(".".join(map(str, e["loc"])) or "$", e["msg"]) for e in exc.errors()]) from None


_MSGSPEC_AT = re.compile(r"^(?P<message>.*) - at `(?P<path>[^`]*)`$", re.S)


def _msgspec(model: Any, data: Any) -> Any:
    import msgspec

    try:
        return msgspec.convert(data, model)
    except msgspec.ValidationError as exc:
        m = _MSGSPEC_AT.match(str(exc))
        if m is None:
            raise _fail(model, [("$", str(exc))]) from None
        path = re.sub(r"\[(\d+)\]", r".\1", m["path"]).removeprefix("$").removeprefix(".") or "$"
        raise _fail(model, [(path, m["message"])]) from None


# -- dataclasses: a small converter from JSON-like data, every error reported with its path --------------

class _Invalid(Exception):
    pass


_hints: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    if cls not in _hints:
        _hints[cls] = typing.get_type_hints(cls)
    return _hints[cls]


def _dataclass(model: Any, data: Any) -> Any:
    errors: list[FieldError] = []
    value = _convert(model, data, "", errors)
    if errors:
        raise _fail(model, errors)
    return value


def _where(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str, errors: list[FieldError]) -> Any:
    """value as tp; on a mismatch, an error at path is appended and None returned."""
    here = path or "$"
    if tp is Any or tp is object:
        return value
    if tp is type(None) or tp is None:
        if value is not None:
            errors.append((here, f"Input should be null, got {type(value).__name__}"))
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        for arm in args:
            trial: list[FieldError] = []
            converted = _convert(arm, value, path, trial)
            if not trial:
                return converted
        errors.append((here, f"Input should be {' or '.join(_type_name(a) for a in args)}, "
                             f"got {type(value).__name__}"))
        return None
    if origin is typing.Literal:
        if value not in args:
            errors.append((here, f"Input should be one of {', '.join(map(repr, args))}, got {value!r}"))
        return value
    if origin is typing.Annotated:
        return _convert(args[0], value, path, errors)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path, errors)
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        return _convert_sequence(origin or tp, args, value, path, errors)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            errors.append((here, f"Input should be an object, got {type(value).__name__}"))
            return None
        vt = args[1] if len(args) == 2 else Any
        return {k: _convert(vt, v, _where(path, k), errors) for k, v in value.items()}
    return _convert_scalar(tp, value, here, errors)


def _convert_dataclass(tp: type, value: Any, path: str, errors: list[FieldError]) -> Any:
    if isinstance(value, tp):
        return value
    if not isinstance(value, dict):
        errors.append((path or "$", f"Input should be an object ({tp.__name__}), got {type(value).__name__}"))
        return None
    hints = _field_types(tp)
    kwargs: dict[str, Any] = {}
    before = len(errors)
    for f in dataclasses.fields(tp):
        if not f.init:
            continue
        if f.name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                errors.append((_where(path, f.name), "Field required"))
            continue
        kwargs[f.name] = _convert(hints.get(f.name, Any), value[f.name], _where(path, f.name), errors)
    if len(errors) > before:
        return None
    try:
        return tp(**kwargs)
    except Exception as exc:  # __post_init__ checks of the user's own
        errors.append((path or "$", f"{type(exc).__name__}: {exc}"))
        return None


def _convert_sequence(kind: Any, args: tuple[Any, ...], value: Any, path: str, errors: list[FieldError]) -> Any:
    if not isinstance(value, list):
        errors.append((path or "$", f"Input should be an array, got {type(value).__name__}"))
        return None
    if kind is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            errors.append((path or "$", f"Input should have {len(args)} items, got {len(value)}"))
            return None
        return tuple(_convert(t, v, _where(path, i), errors) for i, (t, v) in enumerate(zip(args, value, strict=True)))
    item = args[0] if args else Any
    items = [_convert(item, v, _where(path, i), errors) for i, v in enumerate(value)]
    return items if kind is list else kind(items)


_FROM_TEXT: dict[type, Any] = {
    dt.datetime: dt.datetime.fromisoformat, dt.date: dt.date.fromisoformat, dt.time: dt.time.fromisoformat,
    uuid.UUID: uuid.UUID, decimal.Decimal: decimal.Decimal,
}


def _convert_scalar(tp: Any, value: Any, here: str, errors: list[FieldError]) -> Any:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            errors.append((here, f"Input should be one of {', '.join(repr(m.value) for m in tp)}, got {value!r}"))
            return None
    elif tp in _FROM_TEXT:
        if isinstance(value, tp):
            return value
        try:
            return _FROM_TEXT[tp](value if isinstance(value, str) else str(value))
        except (ValueError, TypeError, decimal.InvalidOperation) as exc:
            errors.append((here, f"Input should be a valid {tp.__name__}: {exc}"))
            return None
    elif isinstance(tp, type):
        ok = isinstance(value, tp)
    else:
        return value  # a typing construct this converter does not check (a TypeVar, a NewType)
    if not ok:
        errors.append((here, f"Input should be {_type_name(tp)}, got {type(value).__name__}"))
        return None
    return value


# -- JSON Schemas of models, for kbridge asyncapi ---------------------------------------------------------

def json_schema(model: type, ref_template: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the model's schema, the schemas it refers to by name); refs are ref_template.format(model=name)."""
    kind = model_kind(model)
    if kind == "pydantic":
        schema = dict(model.model_json_schema(ref_template=ref_template))  # type: ignore[attr-defined]
        return schema, schema.pop("$defs", {})
    if kind == "msgspec":
        import msgspec

        (top,), defs = msgspec.json.schema_components([model], ref_template=ref_template.replace("{model}", "{name}"))
        name = top["$ref"].rsplit("/", 1)[-1] if "$ref" in top else None
        if name is not None and name in defs:
            top = defs.pop(name)
        return dict(top), dict(defs)
    if kind == "dataclass":
        builder = _SchemaBuilder(ref_template)
        top = builder.object_schema(model)
        builder.defs.pop(model_name(model), None)
        return top, builder.defs
    raise TypeError(f"{model!r} is not a pydantic model, msgspec Struct or dataclass")


_SCALAR_SCHEMAS: dict[Any, dict[str, Any]] = {
    bool: {"type": "boolean"}, int: {"type": "integer"}, float: {"type": "number"}, str: {"type": "string"},
    type(None): {"type": "null"}, dt.datetime: {"type": "string", "format": "date-time"},
    dt.date: {"type": "string", "format": "date"}, dt.time: {"type": "string", "format": "time"},
    uuid.UUID: {"type": "string", "format": "uuid"}, decimal.Decimal: {"type": "string", "format": "decimal"},
}


class _SchemaBuilder:
    """The schema a dataclass validates against in _convert, nested dataclasses as named refs."""

    def __init__(self, ref_template: str) -> None:
        self.ref_template = ref_template
        self.defs: dict[str, dict[str, Any]] = {}

    def object_schema(self, cls: type) -> dict[str, Any]:
        hints = _field_types(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            prop = self.schema(hints.get(f.name, Any))
            if f.default is not dataclasses.MISSING and _jsonable(f.default):
                prop = {**prop, "default": f.default}
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
            properties[f.name] = prop
        schema: dict[str, Any] = {"title": cls.__name__, "type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):  # not dataclass's generated one
            schema["description"] = cls.__doc__.strip()
        return schema

    def schema(self, tp: Any) -> dict[str, Any]:
        if tp is Any or tp is object:
            return {}
        if tp is None:
            tp = type(None)
        if tp in _SCALAR_SCHEMAS:
            return dict(_SCALAR_SCHEMAS[tp])
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Union or origin is types.UnionType:
            return {"anyOf": [self.schema(a) for a in args]}
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin is typing.Annotated:
            return self.schema(args[0])
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            name = model_name(tp)
            if name not in self.defs:
                self.defs[name] = {}  # a placeholder first: a dataclass may refer to itself
                self.defs[name] = self.object_schema(tp)
            return {"$ref": self.ref_template.format(model=name)}
        if origin in (list, set, frozenset) or tp in (list, set, frozenset):
            out: dict[str, Any] = {"type": "array", "items": self.schema(args[0]) if args else {}}
            if (origin or tp) is not list:
                out["uniqueItems"] = True
            return out
        if origin is tuple or tp is tuple:
            if args and args[-1] is not Ellipsis:
                return {"type": "array", "prefixItems": [self.schema(a) for a in args],
                        "minItems": len(args), "maxItems": len(args)}
            return {"type": "array", "items": self.schema(args[0]) if args else {}}
        if origin in (dict, Mapping) or tp is dict:
            return {"type": "object", "additionalProperties": self.schema(args[1]) if len(args) == 2 else {}}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"title": tp.__name__, "enum": [m.value for m in tp]}
        return {}


def _jsonable(value: object) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
