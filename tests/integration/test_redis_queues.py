"""`hadr verify queues` on a real redis-server holding BullMQ queues in BullMQ's key layout: a clean set of
queues passes; a job id without its hash, an id in two states, an id counter behind the highest id and a job
left active without a lock are each found (exit 3) and nothing is changed; --requeue-active moves the
unlocked active jobs back to the end of wait workers take from (paused for a paused queue), with BullMQ's
events, and leaves a locked one alone; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hadr_backup.redis.queues import PAGE, check_queues
from hadr_backup.redis.wire import Address, Connection
from hadr_backup.sandbox.servers import RedisServer
from tests.helpers import hadr_cli, write_policy
from tests.schema_check import assert_schema


def add_job(client, queue: str, state: str = "wait", job_id: str | None = None, *, hash_: bool = True) -> str:
    """A job the way BullMQ adds it: the counter first, then the hash and the state in one MULTI."""
    job_id = job_id or str(client.incr(f"bull:{queue}:id"))
    pipe = client.pipeline(transaction=True)
    if hash_:
        pipe.hset(f"bull:{queue}:{job_id}", mapping={"name": queue, "data": "{}", "opts": "{}", "timestamp": 1})
    if state in ("wait", "paused", "active"):
        pipe.lpush(f"bull:{queue}:{state}", job_id)
    else:
        pipe.zadd(f"bull:{queue}:{state}", {job_id: int(job_id) if job_id.isdigit() else 1})
    pipe.execute()
    return job_id


def clean_queues(client) -> None:
    for _ in range(3):
        add_job(client, "emails", "wait")
        add_job(client, "emails", "completed")
        add_job(client, "emails", "delayed")
    add_job(client, "emails", "failed")
    add_job(client, "emails", "prioritized")
    add_job(client, "emails", "waiting-children")
    add_job(client, "emails", "completed", "custom-id-1")  # a custom job id: no counter behind it
    add_job(client, "reports", "paused")
    client.lpush("bull:emails:wait", "0:1700000000000")  # a BullMQ 4 delay marker, not a job
    client.hset("bull:emails:meta", mapping={"opts.maxLenEvents": 10000})


def snapshot(client) -> dict[bytes, bytes]:
    """Every key and its serialized value: proof that a check changed nothing."""
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}


def verify(url: str, *args: str, expect: int, tmp_path: Path) -> dict:
    done = hadr_cli(tmp_path / "absent-policy.yaml", "--json", "verify", "queues", "--url", url, *args)
    assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return assert_schema("verify-queues", done.stdout)


def codes(result: dict) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in result["findings"]:
        found.setdefault(finding["code"], []).append(finding["subject"])
    return found


def test_clean_queues_pass_and_are_counted(redis_server: RedisServer, tmp_path: Path) -> None:
    client = redis_server.client()
    clean_queues(client)
    result = verify(redis_server.url, expect=0, tmp_path=tmp_path)
    assert result["passed"] and result["findings"] == []
    queues = {q["name"]: q for q in result["queues"]}
    assert set(queues) == {"emails", "reports"}
    emails = queues["emails"]["jobs"]
    assert (emails["wait"], emails["completed"], emails["delayed"], emails["failed"]) == (3, 4, 3, 1)
    assert (emails["prioritized"], emails["waiting-children"], emails["active"]) == (1, 1, 0)
    assert queues["emails"]["id_counter"] == queues["emails"]["highest_id"] == 12
    assert queues["reports"]["jobs"]["paused"] == 1
    assert result["checked"]["queues"] == 2 and result["checked"]["jobs"] == 14


def test_each_broken_invariant_is_found_and_nothing_changes(redis_server: RedisServer, tmp_path: Path) -> None:
    client = redis_server.client()
    clean_queues(client)
    add_job(client, "emails", "wait", hash_=False)  # 13: no hash
    twice = add_job(client, "emails", "completed")  # 14 ...
    client.zadd("bull:emails:failed", {twice: 1})  # ... also failed
    add_job(client, "reports", "wait", "90")  # the reports counter is 1: behind 90
    stuck = add_job(client, "emails", "active")  # 15: no worker's lock
    working = add_job(client, "emails", "active")  # 16: a worker holds it
    client.set(f"bull:emails:{working}:lock", "token", px=600_000)
    before = snapshot(client)

    result = verify(redis_server.url, expect=3, tmp_path=tmp_path)

    found = codes(result)
    assert found["job-without-hash"] == ["emails job 13"]
    assert found["job-in-two-states"] == [f"emails job {twice}"]
    assert found["id-counter-behind"] == ["reports"]
    assert found["job-left-active"] == [f"emails job {stuck}"]
    assert set(found) == {"job-without-hash", "job-in-two-states", "id-counter-behind", "job-left-active"}
    assert all(f.get("hint") for f in result["findings"] if f["code"] != "job-in-two-states")
    assert result["checked"]["active_jobs_locked"] == 1
    assert snapshot(client) == before


def test_requeue_active_moves_unlocked_jobs_back_to_wait_as_bullmq_does(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    client = redis_server.client()
    clean_queues(client)
    first, second = add_job(client, "emails", "active"), add_job(client, "emails", "active")
    locked = add_job(client, "emails", "active")
    client.set(f"bull:emails:{locked}:lock", "token", px=600_000)
    client.sadd("bull:emails:stalled", first)
    paused_job = add_job(client, "reports", "active")
    client.hset("bull:reports:meta", "paused", 1)
    waiting_before = client.lrange("bull:emails:wait", 0, -1)

    result = verify(redis_server.url, "--requeue-active", expect=0, tmp_path=tmp_path)

    assert result["passed"] and result["requeued"] == 3
    assert {q["name"]: sorted(q["requeued"]) for q in result["queues"]} == {
        "emails": sorted([first, second]),
        "reports": [paused_job],
    }
    assert [f["code"] for f in result["findings"]] == ["active-requeued", "active-requeued"]
    # the right end of wait is where workers take the next job from (LMOVE wait active RIGHT LEFT)
    wait = [j.decode() for j in client.lrange("bull:emails:wait", 0, -1)]
    assert wait[: len(waiting_before)] == [j.decode() for j in waiting_before]
    assert sorted(wait[len(waiting_before) :]) == sorted([first, second])
    assert [j.decode() for j in client.lrange("bull:emails:active", 0, -1)] == [locked]
    assert client.smembers("bull:emails:stalled") == set()
    assert [j.decode() for j in client.lrange("bull:reports:paused", 0, -1)] == ["1", paused_job]
    assert client.zscore("bull:emails:marker", "0") == 0 and not client.exists("bull:reports:marker")
    events = [
        {k.decode(): v.decode() for k, v in fields.items()} for _id, fields in client.xrange("bull:emails:events")
    ]
    assert {(e["event"], e["jobId"], e.get("prev")) for e in events} == {
        ("waiting", first, "active"),
        ("stalled", first, None),
        ("waiting", second, "active"),
        ("stalled", second, None),
    }
    # a second check finds nothing left to do
    again = verify(redis_server.url, expect=0, tmp_path=tmp_path)
    assert again["requeued"] == 0 and again["findings"] == []


def test_big_states_are_read_in_pages(redis_server: RedisServer) -> None:
    client = redis_server.client()
    total = PAGE * 3 + 7
    pipe = client.pipeline(transaction=False)
    for number in range(1, total + 1):
        pipe.hset(f"bull:big:{number}", "name", "big")
        pipe.zadd("bull:big:completed", {str(number): number})
    pipe.set("bull:big:id", total)
    pipe.rpush("bull:big:wait", str(total))  # the last id, also completed: found across pages
    pipe.execute()
    with Connection(Address.parse(redis_server.url)) as conn:
        result = check_queues(conn)
    assert result.queues[0].jobs["completed"] == total
    assert [(f.code, f.subject) for f in result.report.problems] == [("job-in-two-states", f"big job {total}")]


def test_a_source_in_the_policy_and_bad_input(redis_server: RedisServer, tmp_path: Path) -> None:
    clean_queues(redis_server.client())
    policy = write_policy(
        tmp_path / "policy.yaml",
        {
            "repository": {"path": str(tmp_path / "repo")},
            "sources": {"redis": [{"name": "queues", "url": redis_server.url, "role": "queue"}]},
        },
    )
    done = hadr_cli(policy, "--json", "verify", "queues")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["target"] == f"127.0.0.1:{redis_server.port}"
    for args, message in [
        (("--source", "queues", "--url", redis_server.url), "not both"),
        (("--source", "nope"), "no sources.redis entry named 'nope'"),
        (("--url", "http://127.0.0.1:1"), "not a Redis URL"),
    ]:
        done = hadr_cli(policy, "verify", "queues", *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr and done.stdout == ""


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0"])
def test_an_unreachable_instance_is_a_failure_not_a_pass(url: str, tmp_path: Path) -> None:
    done = hadr_cli(tmp_path / "absent.yaml", "verify", "queues", "--url", url)
    assert done.returncode == 1 and "cannot connect to Redis at 127.0.0.1:1" in done.stderr


def test_a_restore_of_a_queue_source_runs_the_queue_checks_on_its_scratch_server(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    client = redis_server.client()
    clean_queues(client)
    add_job(client, "emails", "wait", hash_=False)  # 13: no hash
    stuck = add_job(client, "emails", "active")
    for role in ("queue", "cache"):
        policy = write_policy(
            tmp_path / f"{role}.yaml",
            {
                "repository": {"path": str(tmp_path / "repo")},
                "sources": {"redis": [{"name": "queues", "url": redis_server.url, "role": role}]},
            },
        )
        hadr_cli(policy, "init", check=True)
        hadr_cli(policy, "backup", "redis", check=True)
        done = hadr_cli(policy, "--json", "restore", "redis", "--latest", "--to", str(tmp_path / f"restored-{role}"))
        assert done.returncode == 0, done.stderr
        warnings = assert_schema("restore-redis", done.stdout)["warnings"]
        if role == "cache":
            assert warnings == []
            continue
        assert any("job-without-hash" in w and "emails job 13" in w for w in warnings), warnings
        [active] = [w for w in warnings if "left active" in w]
        assert (
            f"emails job {stuck}" in active and "hadr verify queues --url redis://HOST:PORT --requeue-active" in active
        )
        human = hadr_cli(policy, "restore", "redis", "--latest", "--to", str(tmp_path / "restored-human"))
        assert human.returncode == 0 and "warning: queue check: job-without-hash" in human.stdout
