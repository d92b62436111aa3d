"""The ``drill`` job on real servers: the newest state of a PostgreSQL cluster (archiving into the
repository) and of a Redis instance restored into scratch, proven, measured (RTO, RPO) and removed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from tests.helpers import hadr_cli
from tests.integration.pg_support import PgEnv
from tests.schema_check import assert_schema


def test_the_drill_restores_pg_and_redis_measures_rto_and_rpo_and_leaves_nothing(redis_server) -> None:
    pg = PgEnv()
    try:
        pg.sql("create table ledger(id int primary key)")
        pg.backup()
        pg.sql("insert into ledger values (1)")
        committed = time.time()
        pg.switch_and_wait()
        redis_server.client().set("k", "v")
        policy = yaml.safe_load(pg.policy_path.read_text())
        policy["sources"]["redis"] = [{"name": "cache", "url": redis_server.url}]
        policy["schedules"] = [
            {"name": "snap", "job": "backup redis", "cron": "0 * * * *"},
            {"name": "weekly-drill", "job": "drill", "cron": "0 4 * * 0"},
        ]
        path = pg.base / "drill-policy.yaml"
        path.write_text(yaml.safe_dump(policy))
        pg.policy_path, original = path, pg.policy_path
        assert json.loads(pg.hadr("--json", "schedule", "exec", "snap", check=True).stdout)["result"] == "succeeded"
        began = time.time()
        done = pg.hadr("--json", "schedule", "exec", "weekly-drill")
        by_hand = pg.hadr("--json", "drill")  # the command runs the same drill
        pg.policy_path = original
    finally:
        pg.close()
    result = assert_schema("schedule-exec", done.stdout)
    assert done.returncode == 0 and result["result"] == "succeeded", done.stdout + done.stderr
    drill = result["output"]
    assert drill["passed"] is True
    by_kind = {s["kind"]: s for s in drill["sources"]}
    assert set(by_kind) == {"pg", "redis"}
    for source in by_kind.values():
        assert source["passed"] and source["rto_seconds"] > 0 and 0 <= source["rpo_seconds"] < time.time() - began + 600
    # the restored PostgreSQL replayed the insert: the instant it reached is at or after that commit
    assert by_kind["pg"]["reached"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(committed - 1))
    assert not Path(drill["scratch"]).exists()
    alone = assert_schema("drill", by_hand.stdout)
    assert by_hand.returncode == 0 and alone["passed"], by_hand.stdout + by_hand.stderr
    assert {s["kind"]: s["passed"] for s in alone["sources"]} == {"pg": True, "redis": True}
    assert not Path(alone["scratch"]).exists()


def test_a_drill_with_nothing_backed_up_fails_and_says_why(tmp_path: Path, redis_server) -> None:
    policy = {
        "repository": {"path": str(tmp_path / "repo")},
        "sources": {"redis": [{"name": "c", "url": redis_server.url}]},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    assert hadr_cli(path, "init").returncode == 0
    done = hadr_cli(path, "--json", "drill")
    result = assert_schema("drill", done.stdout)
    assert done.returncode == 1 and result["passed"] is False
    (source,) = result["sources"]
    assert source["kind"] == "redis" and not source["passed"] and "snapshot" in source["error"]
