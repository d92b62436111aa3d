"""Progress of long work and the file log, through the real CLI on a real cluster: a bar on a terminal,
a start and an end line elsewhere, nothing with -q, stdout left to the JSON with --json, and every line
timestamped in --log-file."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import run_in_pty
from tests.integration.pg_support import PgEnv, restored_port

pytestmark = pytest.mark.integration

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \d+ (ERROR|WARN |INFO |DEBUG) "


@pytest.fixture(scope="module")
def env():
    env = PgEnv(encrypted=True)
    env.sql("create table item(id int primary key, payload text)")
    env.sql("insert into item select g, md5(g::text) || repeat('x', 200) from generate_series(1, 200000) g")
    yield env
    env.close()


def phase_lines(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def test_backup_off_a_terminal_says_one_line_when_it_starts_and_one_when_it_ends(env: PgEnv) -> None:
    done = env.hadr("backup", "pg", check=True)
    backup_id = done.stdout.split()[1]
    lines = phase_lines(done.stderr, f"backup {backup_id}: pg_basebackup of main")
    assert len(lines) == 2, done.stderr
    started, ended = lines
    size = env.sql("select sum(pg_database_size(oid)) from pg_database")[0][0]
    assert re.search(r", about \d+\.\d MiB$", started) and size > 40 << 20  # the estimate: the databases' size
    # the end: bytes read, time, throughput and what was stored
    assert re.search(r": done, \d+\.\d MiB in \d+\.\d s \(\d+\.\d MiB/s\); stored \d+\.\d MiB$", ended), ended
    assert "waiting for WAL" in done.stderr


def test_backup_on_a_terminal_draws_a_bar_with_bytes_and_rate(env: PgEnv) -> None:
    code, text = run_in_pty([sys.executable, "-m", "hadr_backup", "--policy", str(env.policy_path), "backup", "pg"])
    assert code == 0, text
    drawn = text.split(": done,")[0]  # the bar's frames, before the end line
    frames = [frame for frame in re.split(r"[\r\n]", drawn) if frame.startswith("backup ") and "━" in frame]
    assert frames, text
    # bytes read of the estimate, and the rate (the time left, too, while below the estimate)
    assert any(re.search(r"\d+\.\d MiB of about \d+\.\d MiB, \d+\.\d MiB/s(, .* left)?; stored", f) for f in frames), (
        frames
    )
    assert re.search(r"pg_basebackup of main .*: done, \d+\.\d MiB in", text)


def test_json_keeps_stdout_pure_while_progress_goes_to_stderr(env: PgEnv) -> None:
    done = env.hadr("--json", "backup", "pg", check=True)
    result = json.loads(done.stdout)  # nothing but the JSON document
    assert result["state"] == "complete"
    assert len(phase_lines(done.stderr, f"backup {result['backup_id']}: pg_basebackup")) == 2


def test_quiet_draws_no_progress(env: PgEnv) -> None:
    done = env.hadr("-q", "backup", "pg", check=True)
    assert done.stderr == ""
    assert "state      complete" in done.stdout


def test_restore_shows_extraction_and_replay_phases(env: PgEnv) -> None:
    to = env.new_restore_dir()
    done = env.hadr("restore", "pg", "--latest", "--to", str(to), "--start", "--target-action", "promote", check=True)
    extracting = phase_lines(done.stderr, f"restore {to}: extracting backup")
    assert len(extracting) == 2, done.stderr
    assert re.search(r"backup \S+, \d+\.\d MiB$", extracting[0])  # the backup's size: the total
    assert re.search(r": done, \d+\.\d MiB in \d+\.\d s \(\d+\.\d MiB/s\); \d+ files$", extracting[1])
    replaying = phase_lines(done.stderr, f"restore {to}: replaying WAL to ")
    assert len(replaying) == 2, done.stderr
    segments = int(re.search(r", (\d+) segments?$", replaying[0])[1])
    assert re.search(rf": done, {segments} segments? in \d+\.\d s$", replaying[1])
    assert env.sql("select count(*) from item", port=restored_port(to)) == env.sql("select count(*) from item")
    env.stop_restored(to)


def log_lines(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    assert lines and all(re.match(STAMP, line) for line in lines), lines
    return lines


def test_log_file_gets_every_line_timestamped(env: PgEnv) -> None:
    log = env.base / "hadr.log"
    done = env.hadr("--log-file", str(log), "backup", "pg", check=True)
    lines = log_lines(log)
    text = "\n".join(lines)
    assert re.search(STAMP + r"begin: hadr --policy \S+ --log-file \S+ backup pg \(version ", lines[0])
    for said in done.stderr.splitlines():  # what went to stderr is in the file, at info
        assert re.search(r"INFO  " + re.escape(said) + "$", text, re.MULTILINE), said
    assert re.search(r"INFO  backup +" + done.stdout.split()[1] + "$", text, re.MULTILINE)  # the result too
    assert re.search(r"INFO  end: exit 0 after \d+\.\d s$", lines[-1])
    assert " DEBUG " not in text  # info is the default level


def test_log_file_levels_filter_errors_and_add_tracebacks_at_debug(env: PgEnv) -> None:
    debug, errors = env.base / "debug.log", env.base / "errors.log"
    for path, level in ((debug, "debug"), (errors, "error")):
        failed = env.hadr("--log-file", str(path), "--log-level", level, "restore", "pg", "--to", "/tmp/nowhere")
        assert failed.returncode == 2 and "no recovery target given" in failed.stderr
    lines = log_lines(debug)
    assert any(re.search(r" ERROR no recovery target given$", line) for line in lines)
    assert any(re.search(r" ERROR   hint: use --target-time T", line) for line in lines)
    assert any(line.endswith("DEBUG Traceback (most recent call last):") for line in lines)
    assert any(" DEBUG " in line and "BadTarget" in line for line in lines)
    assert re.search(r" INFO  end: exit 2 after", lines[-1])
    only_errors = log_lines(errors)
    assert {line.split()[2] for line in only_errors} == {"ERROR"}
    assert len(only_errors) == 2  # the message and its hint


def test_an_unwritable_log_file_is_a_warning_never_a_failure(env: PgEnv) -> None:
    done = env.hadr("--log-file", "/nonexistent-dir/hadr.log", "list", check=True)
    assert "hadr: warning: cannot open log file /nonexistent-dir/hadr.log: No such file or directory" in done.stderr
    assert "backups" in done.stdout
