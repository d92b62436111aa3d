"""Policy parsing: typed models, and bad files rejected with file, field path and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from hadr_backup.errors import PolicyError
from hadr_backup.policy import load as policy_load
from hadr_backup.policy.load import NoPolicy, find_policy, load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]


def minimal(**extra):
    return {"repository": {"path": "/tmp/repo"}, **extra}


# -- which policy: --policy / HADR_POLICY, ./hadr.yaml, /etc/hadr/hadr.yaml, else exit 2 -----------------


@pytest.fixture
def lookup(tmp_path, monkeypatch):
    """An empty current directory and a system policy path (instead of /etc/hadr/hadr.yaml) that does not exist."""
    cwd, system = tmp_path / "cwd", tmp_path / "etc" / "hadr.yaml"
    cwd.mkdir()
    system.parent.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(policy_load, "SYSTEM_POLICY", system)
    return cwd, system


def test_a_given_policy_wins_over_the_files_looked_for(lookup, tmp_path):
    cwd, system = lookup
    for path in (cwd / "hadr.yaml", system, tmp_path / "given.yaml"):
        path.write_text(f"repository: {{path: /r/{path.stem}}}\n")
    assert find_policy(str(tmp_path / "given.yaml")) == str(tmp_path / "given.yaml")
    assert load_policy(str(tmp_path / "given.yaml")).repository.path == "/r/given"


def test_hadr_yaml_in_the_current_directory_comes_first(lookup):
    cwd, system = lookup
    (cwd / "hadr.yaml").write_text("repository: {path: /r/local}\n")
    system.write_text("repository: {path: /r/system}\n")
    policy = load_policy(None)
    assert policy.path == str(cwd / "hadr.yaml") and policy.repository.path == "/r/local"


def test_the_system_policy_when_the_current_directory_has_none(lookup):
    cwd, system = lookup
    (cwd / "hadr.yml").write_text("repository: {path: /r/other-name}\n")  # only hadr.yaml counts
    system.write_text("repository: {path: /r/system}\n")
    policy = load_policy(None)
    assert policy.path == str(system) and policy.repository.path == "/r/system"


def test_no_policy_anywhere_fails_with_exit_2_and_says_how_to_make_one(lookup, capsys):
    from hadr_backup.cli import main as cli_main

    with pytest.raises(NoPolicy):
        find_policy(None)
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["list"])
    assert exited.value.code == 2
    cwd, system = lookup
    err = capsys.readouterr().err
    assert (
        f"hadr: error: no policy: pass --policy FILE, set HADR_POLICY, or create ./hadr.yaml or {system}\n"
        "  hint: start from policies/example.yaml; for the sandbox, run `hadr sandbox up` and export the line "
        "it prints\n"
    ) == err


def test_the_sandbox_policy_is_written_with_absolute_paths_and_its_ports(tmp_path, monkeypatch):
    from hadr_backup.sandbox.layout import export_line, sandbox_policy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HADR_SANDBOX_PG_PORT", "55432")
    folder = tmp_path / ".hadr-sandbox"
    unwritten, where = sandbox_policy(None, None)  # status / down before any up: nothing is written
    assert where == folder and not folder.exists() and unwritten.path == str(folder / "policy.yaml")
    policy, where = sandbox_policy(None, None, write=True)
    written = (folder / "policy.yaml").read_text()
    assert "${" not in written and "/.hadr-sandbox/repo" in written
    monkeypatch.delenv("HADR_SANDBOX_PG_PORT")  # the file keeps the port it was written with
    again = load_policy(str(folder / "policy.yaml"))
    for loaded in (policy, again):
        assert loaded.path == str(folder / "policy.yaml") and loaded.sandbox_dir == folder
        assert loaded.repository.path == str(folder / "repo")
        assert loaded.encryption.key_file == str(folder / "hadr.key")
        assert loaded.sources.postgres[0].port == 55432
        assert loaded.sources.postgres[0].data_dir == str(folder / "pg" / "data")
        assert [r.port for r in loaded.sources.redis] == [63790, 63810]
        assert loaded.sources.postgres[0].databases == ("payment_service", "upload_service")
        assert loaded.sources.buckets[0].buckets == ("raw-data-items",)
    assert export_line(policy) == f"export HADR_POLICY={folder}/policy.yaml"
    assert written.splitlines()[1] == f"# Point the other commands at it: export HADR_POLICY={folder}/policy.yaml"


def test_shipped_policies_are_valid():
    example = load_policy(str(ROOT / "policies" / "example.yaml"))
    assert example.retention.hourly == 24 and example.retention.daily == 7
    assert example.retention.weekly == 4 and example.retention.monthly == 12
    assert {r.port for r in example.sources.redis} == {6379, 6381}
    assert {r.role for r in example.sources.redis} == {"cache", "queue"}
    assert example.sources.buckets[0].buckets == ("raw-data-items",)
    assert example.sources.postgres[0].databases == ("payment_service", "upload_service")
    assert example.sources.postgres[0].rpo == 300


def test_defaults():
    policy = parse_policy(minimal(), "p.yaml")
    assert policy.compression.level == 3
    assert not policy.encryption.enabled
    assert policy.sources.postgres == ()
    assert policy.retention.monthly == 12
    assert (policy.repository.retry.attempts, policy.repository.retry.max_seconds) == (5, 30.0)


def test_postgres_rpo_defaults_to_five_minutes():
    source = {"name": "m", "dsn": "host=h"}
    assert parse_policy(minimal(sources={"postgres": [source]}), "p").sources.postgres[0].rpo == 300.0
    policy = parse_policy(minimal(sources={"postgres": [{**source, "rpo": 60}]}), "p")
    assert policy.sources.postgres[0].rpo == 60.0


def test_repository_retry_bound():
    policy = parse_policy({"repository": {"path": "/r", "retry": {"attempts": 8, "max_seconds": 90}}}, "p")
    assert (policy.repository.retry.attempts, policy.repository.retry.max_seconds) == (8, 90.0)
    policy = parse_policy({"repository": {"path": "/r", "retry": {"max_seconds": 2.5}}}, "p")
    assert (policy.repository.retry.attempts, policy.repository.retry.max_seconds) == (5, 2.5)


def test_s3_repository_url_is_split():
    policy = parse_policy({"repository": {"url": "s3://backups/hadr/prod", "endpoint": "http://x:9000"}}, "p")
    assert policy.repository.is_s3
    assert (policy.repository.bucket, policy.repository.prefix) == ("backups", "hadr/prod")


def test_env_expansion(monkeypatch):
    monkeypatch.setenv("PGPORT_X", "6000")
    policy = parse_policy(minimal(sources={"postgres": [{"name": "m", "dsn": "host=h port=${PGPORT_X}"}]}), "p")
    assert policy.sources.postgres[0].port == 6000
    policy = parse_policy(minimal(sources={"postgres": [{"name": "m", "dsn": "port=${NOPE_X:-7}"}]}), "p")
    assert policy.sources.postgres[0].port == 7


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"repository": {"path": "/r"}, "sources": {"postgres": [{"name": "m", "dsn": 42}]}},
            "p.yaml: sources.postgres[0].dsn: expected a string, got int 42",
        ),
        (
            {"repository": {"path": "/r"}, "sources": {"postgres": [{"dsn": "host=x"}]}},
            "p.yaml: sources.postgres[0].name: required",
        ),
        ({"repository": {}}, "p.yaml: repository: expected exactly one of path"),
        ({"repository": {"path": "/r", "url": "s3://bbb"}}, "expected exactly one of path"),
        ({"repository": {"url": "http://x"}}, "repository.url: expected s3://bucket[/prefix]"),
        ({"sources": {}}, "repository: required"),
        (
            {"repository": {"path": "/r"}, "retention": {"hourly": -1}},
            "retention.hourly: expected an integer from 0 to 100000, got int -1",
        ),
        ({"repository": {"path": "/r"}, "retention": {"daily": "seven"}}, "retention.daily: expected an integer"),
        ({"repository": {"path": "/r"}, "compression": {"level": 40}}, "compression.level: expected an integer from 1"),
        ({"repository": {"path": "/r"}, "retention": {"dayly": 7}}, "retention: unknown key 'dayly'"),
        (
            {"repository": {"path": "/r"}, "sources": {"redis": [{"name": "c", "url": "http://x"}]}},
            "sources.redis[0].url: expected redis://host:port[/db]",
        ),
        (
            {"repository": {"path": "/r"}, "sources": {"redis": [{"name": "c", "url": "redis://x", "role": "db"}]}},
            "sources.redis[0].role: expected cache or queue",
        ),
        (
            {
                "repository": {"path": "/r"},
                "sources": {"redis": [{"name": "c", "url": "redis://a"}, {"name": "c", "url": "redis://b"}]},
            },
            "sources.redis: name 'c' used twice",
        ),
        (
            {"repository": {"path": "/r"}, "schedules": [{"name": "x", "job": "prune", "cron": "daily"}]},
            "schedules[0].cron: expected five cron fields",
        ),
        ({"repository": {"path": "/r"}, "encryption": {"key_file": "/k", "key_env": "K"}}, "not both"),
        (
            {"repository": {"path": "/r"}, "sources": {"postgres": [{"name": "m", "dsn": "${UNSET_VAR_X}"}]}},
            "sources.postgres[0].dsn: environment variable UNSET_VAR_X is not set",
        ),
        (["not", "a", "mapping"], "p.yaml: (top level): expected a mapping"),
        (
            {"repository": {"path": "/r", "retry": {"attempts": 0}}},
            "repository.retry.attempts: expected an integer from 1 to 100, got int 0",
        ),
        (
            {"repository": {"path": "/r", "retry": {"max_seconds": -1}}},
            "repository.retry.max_seconds: expected a positive number up to 3600, got int -1",
        ),
        ({"repository": {"path": "/r", "retry": {"max_seconds": "soon"}}}, "repository.retry.max_seconds: expected"),
        ({"repository": {"path": "/r", "retry": {"tries": 3}}}, "repository.retry: unknown key 'tries'"),
        ({"repository": {"path": "/r", "retry": 5}}, "repository.retry: expected a mapping, got int 5"),
        (
            {"repository": {"path": "/r"}, "sources": {"postgres": [{"name": "m", "dsn": "host=h", "rpo": 0}]}},
            "sources.postgres[0].rpo: expected a positive number, got int 0",
        ),
        (
            {"repository": {"path": "/r"}, "sources": {"postgres": [{"name": "m", "dsn": "host=h", "rpo": "5min"}]}},
            "sources.postgres[0].rpo: expected a positive number, got str '5min'",
        ),
        *[
            ({"repository": {"path": "/r"}, "sources": {"buckets": [{"name": "b", "buckets": ["raw"], **entry}]}}, text)
            for entry, text in (
                ({"versions": "some"}, "sources.buckets[0].versions: expected all or current, got str 'some'"),
                ({"noncurrent_days": 0}, "sources.buckets[0].noncurrent_days: expected an integer from 1 to 36500"),
                ({"workers": 0}, "sources.buckets[0].workers: expected an integer from 1 to 256, got int 0"),
                ({"buckets": ["Raw_Items"]}, "sources.buckets[0].buckets[0]: 'Raw_Items' is not a valid bucket name"),
                ({"buckets": []}, "sources.buckets[0].buckets: expected a non-empty list of bucket names"),
                ({"object_lock": {"mode": "strict"}}, "sources.buckets[0].object_lock.mode: expected GOVERNANCE or"),
                ({"object_lock": {"days": -1}}, "sources.buckets[0].object_lock.days: expected an integer from 1"),
                ({"mirror": {"endpoint": "http://m"}}, "sources.buckets[0].mirror.bucket: required"),
                ({"mirror": {"bucket": "m", "path": "/x"}}, "sources.buckets[0].mirror: unknown key 'path'"),
                ({"lifecycle": 3}, "sources.buckets[0]: unknown key 'lifecycle'"),
            )
        ],
    ],
)
def test_bad_policies_name_file_field_and_expectation(data, message):
    with pytest.raises(PolicyError) as caught:
        parse_policy(data, "p.yaml")
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_unreadable_and_invalid_yaml_files(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy file .*missing.yaml"):
        load_policy(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("repository: [unclosed\n")
    with pytest.raises(PolicyError, match=r"bad.yaml: not valid YAML"):
        load_policy(str(bad))


def test_cli_reports_bad_policy_in_one_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("repository: {path: /tmp/r}\nretention: {hourly: lots}\n")
    run = subprocess.run(
        [sys.executable, "-m", "hadr_backup", "--policy", str(bad), "list"], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "retention.hourly: expected an integer from 0 to 100000, got str 'lots'" in run.stderr
    assert "Traceback" not in run.stderr


def test_bucket_source_keys_and_their_defaults():
    policy = parse_policy(
        {
            "repository": {"path": "/r"},
            "sources": {
                "buckets": [
                    {"name": "plain", "buckets": ["raw-data-items"]},
                    {
                        "name": "guarded",
                        "buckets": ["a-bucket"],
                        "versions": "current",
                        "noncurrent_days": 14,
                        "object_lock": {"mode": "compliance", "days": 3},
                        "mirror": {"bucket": "dr-copy", "endpoint": "http://dr:9000", "prefix": "/site-a/"},
                        "workers": 4,
                    },
                ]
            },
        },
        "p.yaml",
    )
    plain, guarded = policy.sources.buckets
    assert (plain.versions, plain.noncurrent_days, plain.object_lock, plain.mirror, plain.workers) == (
        "all",
        30,
        None,
        None,
        16,
    )
    assert (guarded.versions, guarded.noncurrent_days, guarded.workers) == ("current", 14, 4)
    assert (guarded.object_lock.mode, guarded.object_lock.days) == ("COMPLIANCE", 3)
    assert (guarded.mirror.bucket, guarded.mirror.endpoint, guarded.mirror.prefix) == (
        "dr-copy",
        "http://dr:9000",
        "site-a/",
    )
