"""Validate ``--json`` output against the JSON Schemas in docs/schemas (one per command).

``assert_schema("list", data)`` validates ``data`` against docs/schemas/list.json, whose ``$ref`` to
sibling files (``common.json#/$defs/time``) resolve among the files of that folder. tests/unit/test_schemas.py
checks that every schema there is named by at least one ``assert_schema`` call in the tests.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"
SHARED = "common"  # definitions only: not the output of a command


def schema_names() -> list[str]:
    """Every schema in docs/schemas, by file name without .json."""
    return sorted(path.stem for path in SCHEMAS.glob("*.json"))


@cache
def registry() -> Registry:
    return Registry().with_resources((f"{name}.json", Resource.from_contents(load(name))) for name in schema_names())


def load(name: str) -> dict[str, Any]:
    path = SCHEMAS / f"{name}.json"
    assert path.is_file(), f"no schema {path}"
    return json.loads(path.read_text())


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load(name), registry=registry(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_schema(name: str, data: Any) -> Any:
    """``data`` (parsed JSON, or the text of it) conforms to docs/schemas/<name>.json; returns it parsed."""
    if isinstance(data, str):
        data = json.loads(data)
    errors = sorted(validator(name).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:20]]
        raise AssertionError(f"--json output does not conform to {name}.json:\n" + "\n".join(lines))
    return data
