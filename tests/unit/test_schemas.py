"""The JSON Schemas in docs/schemas: valid draft 2020-12, one per command, every one used by a test, and
strict enough to refuse what the conventions (docs/JSON.md) rule out."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import click
import pytest
from jsonschema import Draft202012Validator

from hadr_backup.cli.main import COMMANDS, cli
from tests.helpers import leaf_commands
from tests.schema_check import SHARED, assert_schema, load, registry, schema_names

TESTS = Path(__file__).resolve().parents[1]
README = TESTS.parent / "README.md"
JSON_DOC = TESTS.parent / "docs" / "JSON.md"


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_every_schema_is_draft_2020_12_and_its_references_resolve() -> None:
    assert len(schema_names()) >= 18
    for name in schema_names():
        schema = load(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        Draft202012Validator.check_schema(schema)
        resolver = registry().resolver(base_uri=f"{name}.json")
        for ref in refs(schema):
            resolver.lookup(ref)  # raises when the file or the pointer does not exist


def test_every_command_has_a_schema() -> None:
    ctx = click.Context(cli)
    assert all(cli.get_command(ctx, name) is not None for name in COMMANDS)
    missing = {"-".join(words) for words in leaf_commands()} - set(schema_names())
    assert not missing, f"commands without a schema in docs/schemas: {sorted(missing)}"


def test_every_schema_is_used_by_a_test() -> None:
    """Each command schema is named by an ``assert_schema("<name>", ...)`` call in some test module."""
    called = set()
    for path in TESTS.rglob("test_*.py"):
        called |= set(re.findall(r'assert_schema\(\s*"([a-z0-9-]+)"', path.read_text()))
    unused = set(schema_names()) - {SHARED} - called
    assert not unused, f"schemas no test validates output against: {sorted(unused)}"
    assert not called - set(schema_names()), "a test names a schema that does not exist"
    shared_refs = {ref for name in schema_names() for ref in refs(load(name)) if ref.startswith(f"{SHARED}.json")}
    assert len(shared_refs) > 10


def test_the_json_conventions_are_documented_and_linked() -> None:
    text = JSON_DOC.read_text()
    for name in set(schema_names()) - {SHARED}:
        assert f"schemas/{name}.json" in text, name
    assert "docs/JSON.md" in README.read_text()


# -- strict: what the conventions rule out is refused ---------------------------------------------------

INFO = {
    "repository": "/srv/hadr",
    "id": "0123456789abcdef",
    "encryption": None,
    "stored_bytes": 10,
    "warnings": [],
    "schedules": [{"name": "nightly", "job": "backup pg", "cron": "0 2 * * *", "last": None}],
    "sources": [
        {
            "kind": "pg",
            "name": "main",
            "supported": True,
            "complete_backups": 1,
            "failed_backups": 0,
            "newest_backup": "2026-12-01T10:15:00.123456Z",
            "restorable_window": [
                {
                    "timeline": 1,
                    "start": "2026-12-01T10:15:00.123456Z",
                    "end": None,
                    "start_lsn": "0/3000028",
                    "end_lsn": "0/5000000",
                    "backups": ["20261201T101500Z-pg-1a2b"],
                }
            ],
            "archive": {
                "source": "main",
                "identity": {
                    "system_identifier": "7714291793327515997",
                    "segment_size": 16777216,
                    "page_magic": 53520,
                    "pg_version": 15,
                    "block_size": 8192,
                },
                "segments": 3,
                "timelines": [1],
                "newest_segment": "000000010000000000000004",
                "newest_time": "2026-12-01T10:15:00.123456Z",
                "history_files": 0,
                "partial_files": 0,
                "conflicts": [],
                "cluster": None,
                "cluster_error": "connection refused",
                "lag_segments": None,
                "lag_bytes": None,
                "lag_seconds": None,
                "lag_basis": None,
                "logs": [],
            },
        }
    ],
}
REPORT = {"title": "verify repo", "passed": True, "checked": {"backups": 1, "wal_objects": 4}, "findings": []}


def changed(document: dict, path: str, value: Any) -> dict:
    """A copy of ``document`` with the value at ``path`` (``a/0/b``) replaced."""
    result = copy.deepcopy(document)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
    node = result
    for part in parents:
        node = node[part]
    node[last] = value
    return result


def test_the_samples_conform() -> None:
    assert_schema("info", INFO)
    assert_schema("verify-repo", REPORT)


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        ("sources/0/newest_backup", 1796123527.38, "an instant as a float"),
        ("sources/0/newest_backup", "2026-12-01 10:15:00.123456+00", "an instant not in RFC 3339 UTC"),
        ("sources/0/newest_backup", "-", "a dash for an absent instant"),
        ("sources/0/restorable_window/0/end", "(no commit found near the end)", "prose for an absent value"),
        ("sources/0/archive/identity/system_identifier", 7714291793327515997, "the system identifier as a number"),
        ("sources/0/restorable_window/0/start_lsn", 50331688, "an LSN as a number"),
        ("stored_bytes", "12.3 MiB", "a size as text"),
        ("encryption", {}, "an empty object for no encryption"),
        ("sources/0/unknown_key", 1, "a key the schema does not know"),
    ],
)
def test_info_refuses(path: str, value: Any, why: str) -> None:
    with pytest.raises(AssertionError, match="does not conform"):
        assert_schema("info", changed(INFO, path, value))


@pytest.mark.parametrize("name", ["verify-repo", "check"])
@pytest.mark.parametrize(
    ("path", "value"),
    [("checked/wal objects", 4), ("checked/wal-objects", 4), ("checked/backups", "1"), ("passed", None)],
)
def test_reports_refuse(name: str, path: str, value: Any) -> None:
    with pytest.raises(AssertionError, match="does not conform"):
        assert_schema(name, changed(REPORT, path, value))
