"""The engine registry: every kind a policy can name is known; only kinds with an engine are usable."""

from __future__ import annotations

import pytest

from hadr_backup import engines
from hadr_backup.errors import UsageError
from hadr_backup.policy.load import parse_policy
from hadr_backup.postgres import KIND as PG


def policy_with_every_kind():
    return parse_policy(
        {
            "repository": {"path": "/tmp/unused"},
            "sources": {
                "postgres": [{"name": "main", "dsn": "host=x"}],
                "redis": [{"name": "queues", "url": "redis://127.0.0.1:6381"}],
                "buckets": [{"name": "items", "endpoint": "http://127.0.0.1:9000", "buckets": ["raw-data-items"]}],
            },
        },
        "test",
    )


def test_every_configured_source_is_listed_with_its_kind():
    assert engines.configured(policy_with_every_kind()) == [
        ("pg", policy_with_every_kind().sources.postgres[0]),
        ("redis", policy_with_every_kind().sources.redis[0]),
        ("s3", policy_with_every_kind().sources.buckets[0]),
    ]


def test_every_kind_has_an_engine_and_an_unknown_kind_is_refused():
    engine = engines.engine(PG)
    assert (engine.kind, engine.section) == (PG, "postgres")
    assert engine.sources(policy_with_every_kind())[0].name == "main"
    redis = engines.engine("redis")
    assert (redis.kind, redis.section) == ("redis", "redis")
    s3 = engines.engine("s3")
    assert (s3.kind, s3.section) == ("s3", "buckets")
    assert s3.sources(policy_with_every_kind())[0].buckets == ("raw-data-items",)
    with pytest.raises(UsageError, match="unknown kind"):
        engines.find("mysql")


def test_every_engine_satisfies_the_protocol():
    for kind in engines.KINDS:
        engine = engines.find(kind)
        if engine is None:
            continue
        for method in ("sources", "backup", "restore", "windows", "status", "needs", "verify"):
            assert callable(getattr(engine, method)), (kind, method)
        assert engine.section == engines.KINDS[kind][0]
