"""A small JSON-schema subset: what plugin manifests may declare, and the validator the daemon
runs on every call before the plugin sees its arguments.

Supported keywords: ``type`` (a name or a list of names), ``properties``, ``required``,
``additionalProperties`` (a boolean or a schema), ``items``, ``enum``, ``minimum``,
``maximum``, ``minLength``, ``maxLength``, ``minItems``, ``maxItems``, plus the annotations
``description``, ``title``, ``default`` and ``examples``. Anything else in a manifest is an
error naming the keyword: a schema the daemon cannot enforce is not advertised.

Example::

    >>> validate({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
    ...           "required": ["n"]}, {"n": 0})
    Traceback (most recent call last):
    SchemaError: args.n: 0 is less than the minimum 1
"""

from __future__ import annotations

from typing import Any

TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "description",
        "title",
        "default",
        "examples",
    }
)
MAX_DEPTH = 32


class SchemaError(ValueError):
    """A schema that uses something unsupported, or a value that does not match one."""


def check_schema(schema: Any, path: str = "") -> None:
    """Raise ``SchemaError`` naming the keyword when ``schema`` is outside the subset."""
    where = path or "schema"
    if path.count(".") > MAX_DEPTH:
        raise SchemaError(f"{where}: nested too deeply")
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: a schema must be a table/object")
    for key in schema:
        if key not in KEYWORDS:
            raise SchemaError(f"{where}: unsupported keyword {key!r}")
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        for name in names:
            if name not in TYPES:
                raise SchemaError(f"{where}.type: unknown type {name!r}")
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise SchemaError(f"{where}.properties: must be a table/object")
    for name, sub in props.items():
        check_schema(sub, f"{path}.properties.{name}" if path else f"properties.{name}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError(f"{where}.required: must be a list of property names")
    extra = schema.get("additionalProperties", True)
    if not isinstance(extra, bool):
        check_schema(extra, f"{path}.additionalProperties" if path else "additionalProperties")
    if "items" in schema:
        check_schema(schema["items"], f"{path}.items" if path else "items")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise SchemaError(f"{where}.enum: must be a list")
    for key in ("minimum", "maximum"):
        if key in schema and not _is_number(schema[key]):
            raise SchemaError(f"{where}.{key}: must be a number")
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        if key in schema and not (_is_int(schema[key]) and schema[key] >= 0):
            raise SchemaError(f"{where}.{key}: must be a non-negative integer")


def validate(schema: dict[str, Any], value: Any, path: str = "args") -> None:
    """Raise ``SchemaError`` naming the first field (``args.text``) that does not match."""
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_has_type(value, name) for name in names):
            raise SchemaError(f"{path}: expected {' or '.join(names)}, got {_type_name(value)}")
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        allowed = ", ".join(repr(e) for e in schema["enum"])
        raise SchemaError(f"{path}: {value!r} is not one of {allowed}")
    if _is_number(value):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(f"{path}: {value!r} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{path}: {value!r} is more than the maximum {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise SchemaError(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(f"{path}: longer than {schema['maxLength']} characters")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SchemaError(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(f"{path}: more than {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                validate(items, item, f"{path}[{i}]")
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise SchemaError(f"{path}.{name}: required field missing")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            sub = props.get(name)
            if sub is not None:
                validate(sub, item, f"{path}.{name}")
            elif extra is False:
                raise SchemaError(f"{path}.{name}: unknown field")
            elif isinstance(extra, dict):
                validate(extra, item, f"{path}.{name}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _has_type(v: Any, name: str) -> bool:
    if name == "integer":
        return _is_int(v) or (isinstance(v, float) and v.is_integer())
    if name == "number":
        return _is_number(v)
    return {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "null": type(None),
    }[name] is type(v)


def _same(a: Any, b: Any) -> bool:
    return (type(a) is type(b) and a == b) or (_is_number(a) and _is_number(b) and a == b)


def _type_name(v: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object", "null"):
        if _has_type(v, name):
            return name
    return type(v).__name__
