"""A repository written by the hadr of catalog format 1 (tests/fixtures/format1: an encrypted local
repository with one PostgreSQL base backup and its WAL, made before format 2) stays readable,
verifiable and restorable, and a writer carries it on in format 2."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from hadr_backup.procs import prepare_dir_for_postgres
from tests.helpers import hadr_cli
from tests.integration.pg_support import BIN, restored_port

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "format1"


@pytest.fixture
def old_repository():
    base = prepare_dir_for_postgres(tempfile.mkdtemp(prefix="hadr-f1-", dir="/tmp"))
    shutil.copytree(FIXTURE / "repo", base / "repo")
    shutil.copy(FIXTURE / "hadr.key", base / "hadr.key")
    (base / "hadr.key").chmod(0o600)
    for path in [base / "hadr.key", *base.rglob("*")]:
        shutil.chown(path, "postgres", "postgres")
    policy = base / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "repository": {"path": str(base / "repo")},
                "encryption": {"key_file": str(base / "hadr.key")},
                "sources": {
                    "postgres": [{"name": "main", "dsn": "host=127.0.0.1 port=9 user=postgres", "bin_dir": BIN}]
                },
            }
        )
    )
    yield base, policy, json.loads((FIXTURE / "expected.json").read_text())
    if (base / "restored" / "postmaster.pid").exists():
        from hadr_backup.procs import run_as_owner

        run_as_owner([f"{BIN}/pg_ctl", "-D", str(base / "restored"), "-m", "immediate", "-w", "stop"], check=False)
    shutil.rmtree(base, ignore_errors=True)


def catalog_format(policy: Path) -> int:
    from hadr_backup.policy.load import load_policy
    from hadr_backup.repo.repository import open_repo

    with open_repo(load_policy(str(policy))) as repo:  # the catalog is encrypted like every object
        return json.loads(b"".join(repo.read_object("catalog.json")))["catalog"]["format"]


def test_format_1_repository_lists_verifies_and_restores(old_repository) -> None:
    base, policy, expected = old_repository
    assert catalog_format(policy) == 1

    listed = json.loads(hadr_cli(policy, "--json", "list", check=True).stdout)["backups"]
    assert [(row["id"], row["state"]) for row in listed] == [(expected["backup_id"], "complete")]
    report = hadr_cli(policy, "--json", "verify", "repo")
    assert report.returncode == 0, report.stdout
    assert {f["code"] for f in json.loads(report.stdout)["findings"]} == {"description-missing"}

    to = base / "restored"
    done = hadr_cli(
        policy,
        "--json",
        "restore",
        "pg",
        "--latest",
        "--to",
        str(to),
        "--start",
        "--target-action",
        "promote",
        "--socket-dir",
        str(base),
    )  # its own was a temp dir
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backup"] == expected["backup_id"]
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={restored_port(to)} user=postgres dbname=postgres") as conn:
        assert conn.execute("select count(*) from item").fetchone()[0] == expected["rows"]


def test_a_writer_carries_a_format_1_catalog_on_in_format_2(old_repository) -> None:
    base, policy, expected = old_repository
    done = hadr_cli(policy, "--json", "repair", "catalog")  # a writer: takes the lock, rewrites the catalog
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["kept"] == 1 and json.loads(done.stdout)["undescribed"] == []
    assert catalog_format(policy) == 2
    listed = json.loads(hadr_cli(policy, "--json", "list", check=True).stdout)["backups"]
    assert [(row["id"], row["state"]) for row in listed] == [(expected["backup_id"], "complete")]
