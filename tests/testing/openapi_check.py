"""A small validator for SnapTrade's OpenAPI 3.0 schemas (the subset the document uses).

``data/snaptrade_openapi_subset.json`` is SnapTrade's published OpenAPI document (August 2026)
reduced to each operation's 200 response schema and the component schemas, with descriptions and
examples removed. The document is older than the SDK: operations it lacks are skipped, and where
the two disagree the SDK's schemas (checked in test_emulator_schemas.py) are the contract.

Rules: ``$ref``, ``nullable``, ``type``, ``properties``, ``required``, ``additionalProperties``,
``items``, ``enum``, ``allOf`` (all), ``anyOf`` (one or more), ``oneOf`` (the discriminator's
mapping when there is one, else at least one branch: branches of all-optional objects overlap),
and the formats ``uuid``, ``date``, ``date-time``.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

_DOCUMENT = Path(__file__).parent / "data" / "snaptrade_openapi_subset.json"


@cache
def document() -> dict[str, Any]:
    return dict(json.loads(_DOCUMENT.read_text()))


def sdk_name(operation_id: str) -> str:
    """``AccountInformation_getUserHoldings`` -> ``get_user_holdings``."""
    camel = operation_id.split("_", 1)[1]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def response_schema(sdk_operation: str) -> dict[str, Any] | None:
    for operation_id, operation in document()["operations"].items():
        if sdk_name(operation_id) == sdk_operation:
            return operation["response"]  # type: ignore[no-any-return]
    return None


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = document()["schemas"][name]
    return schema


def _format_ok(fmt: str, value: str) -> bool:
    try:
        if fmt == "uuid":
            uuid.UUID(value)
        elif fmt == "date-time":
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif fmt == "date":
            date.fromisoformat(value)
    except ValueError:
        return False
    return True


_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
}


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every violation of ``schema`` by ``value``, as ``path: problem`` strings."""
    schema = _resolve(schema)
    if value is None:
        nullable = schema.get("nullable") or any(_resolve(s).get("nullable") for s in schema.get("allOf", ()))
        return [] if nullable or not schema else [f"{path}: null is not allowed"]
    errors: list[str] = []
    for sub in schema.get("allOf", ()):
        errors += validate(value, sub, path)
    if "anyOf" in schema and all(validate(value, s, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches no anyOf branch")
    if "oneOf" in schema:
        mapping = (schema.get("discriminator") or {}).get("mapping")
        prop = (schema.get("discriminator") or {}).get("propertyName")
        if mapping and isinstance(value, dict) and value.get(prop) in mapping:
            errors += validate(value, {"$ref": mapping[value[prop]]}, path)
        elif all(validate(value, s, path) for s in schema["oneOf"]):
            errors.append(f"{path}: matches no oneOf branch")
    kind = schema.get("type")
    if kind is not None:
        expected = _TYPES[kind]
        if isinstance(value, bool) and kind in ("integer", "number"):
            return [*errors, f"{path}: expected {kind}, got bool"]
        if not isinstance(value, expected):
            return [*errors, f"{path}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str) and "format" in schema and not _format_ok(schema["format"], value):
        errors.append(f"{path}: {value!r} is not a {schema['format']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                errors.append(f"{path}: missing required {name!r}")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                errors += validate(item, properties[name], f"{path}.{name}")
            elif extra is False:
                errors.append(f"{path}: unexpected property {name!r}")
            elif isinstance(extra, dict):
                errors += validate(item, extra, f"{path}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{index}]")
    return errors
