"""The background helpers (async pusher, prefetcher) on real clusters: what goes wrong in them ends up in
the log file that ``hadr info`` names for the source, with its last error line."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.integration.test_wal_archive import make_archive, make_wal, wait_archived, wait_failed


def helper_log(archive, helper: str, timeout: float = 60) -> dict:
    """``hadr --json info``'s entry for ``helper``'s log of source ``main``, once it shows an error."""
    deadline = time.monotonic() + timeout
    while True:
        info = archive.hadr("--json", "info")
        assert info.returncode == 0, info.stderr
        logs = {log["helper"]: log for log in json.loads(info.stdout)["sources"][0]["archive"]["logs"]}
        if logs[helper]["last_error"] or time.monotonic() > deadline:
            return logs[helper]
        time.sleep(0.2)


def test_a_pusher_that_cannot_write_the_repository_says_why_in_the_log_hadr_info_names(
    pg_cluster_factory, short_tmp_dir
):
    archive = make_archive(short_tmp_dir)
    repo_root = Path(archive.data["repository"]["path"])
    os.chown(repo_root, 0, 0)  # the archiver runs as postgres: the repository refuses its writes
    os.chmod(repo_root, 0o755)
    cluster = archive.cluster(pg_cluster_factory, async_archive=True)  # no data_dir: info asks the cluster
    make_wal(cluster, 1)
    wait_failed(cluster, 1)

    log = helper_log(archive, "wal-pusher")
    expected = cluster.data_dir / "pg_wal" / ".hadr-spool" / "main" / "pusher.log"
    assert Path(log["path"]).samefile(expected) and log["exists"], log
    assert "cannot write" in log["last_error"] and "Permission denied" in log["last_error"], log
    assert log["last_error"] in expected.read_text().splitlines()
    human = archive.hadr("info")
    assert f"wal-pusher log: {log['path']} (last error: {log['last_error']})" in human.stdout, human.stdout

    os.chown(repo_root, *_owner_of(cluster.data_dir))  # fixed: the next pusher stores the backlog
    cluster.execute("select pg_switch_wal()")
    wait_archived(cluster, make_wal(cluster, 1)[0])


def test_a_prefetcher_that_meets_a_damaged_segment_says_why_in_the_log_hadr_info_names(
    pg_cluster_factory, short_tmp_dir
):
    archive = make_archive(short_tmp_dir)
    cluster = archive.cluster(pg_cluster_factory)
    names = make_wal(cluster, 4)
    wait_archived(cluster, names[-1])
    damaged = Path(archive.data["repository"]["path"]) / archive.archived().find(names[2]).key
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    restore = short_tmp_dir / "restore"  # a cluster in recovery: its restore_command runs wal-fetch
    (restore / "pg_wal").mkdir(parents=True)
    archive.source(dsn=cluster.dsn(), data_dir=str(restore))

    dest = str(restore / "pg_wal" / "RECOVERYXLOG")
    fetched = archive.hadr("--json", "wal-fetch", "--source", "main", names[0], dest, cwd=restore)
    assert fetched.returncode == 0 and json.loads(fetched.stdout)["warning"] is None, fetched.stdout

    log = helper_log(archive, "wal-prefetcher")
    assert log["path"] == str(restore / "pg_wal" / ".hadr-spool" / "main" / "prefetch.log"), log
    assert f"error: cannot prefetch {names[2]}" in log["last_error"] and "does not authenticate" in log["last_error"]
    assert log["last_error"] in Path(log["path"]).read_text().splitlines()
    served = archive.hadr("--json", "wal-fetch", "--source", "main", names[1], dest)
    assert json.loads(served.stdout)["status"] == "prefetched"  # what it fetched before the damage is served


def _owner_of(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid
