"""The console facade: progress (a bar on a terminal, a start and an end line elsewhere, nothing with -q),
the file log and its levels, tables that never cut a cell."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from hadr_backup.filelog import LEVELS, FileLog
from hadr_backup.progress import BarProgress, LineProgress, Meter, duration
from hadr_backup.ui import UI, Human, plural

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \d+ "


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def meter(clock: Clock, **kwargs) -> Meter:
    options = {
        "phase": "backup X: pg_basebackup of main",
        "label": "backup",
        "total": 100 << 20,
        "estimate": True,
        **kwargs,
    }
    return Meter(**options, started=clock.now, clock=clock)


def test_a_bar_on_a_terminal_shows_bytes_rate_and_time_left() -> None:
    clock, screen = Clock(), io.StringIO()
    progress = BarProgress(meter(clock), None, screen).start()
    clock.now += 2
    progress.update(40 << 20, note="stored 10.0 MiB")
    clock.now += 1
    progress.update(60 << 20, note="stored 15.0 MiB")
    progress.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert "━" in text
    assert "backup" in text and "40.0 MiB of about 100.0 MiB, 20.0 MiB/s, 3.0 s left; stored 10.0 MiB" in text
    assert "60.0 MiB of about 100.0 MiB, 20.0 MiB/s, 2.0 s left; stored 15.0 MiB" in text
    assert text.rstrip().endswith(
        "backup X: pg_basebackup of main: done, 60.0 MiB in 3.0 s (20.0 MiB/s); stored 15.0 MiB"
    )


def test_off_a_terminal_a_phase_is_a_start_line_and_an_end_line() -> None:
    clock, lines = Clock(), []
    with LineProgress(meter(clock), None, lines.append).start() as progress:
        for done in range(1, 11):
            clock.now += 0.5
            progress.update(done * (10 << 20), note="stored 1.0 MiB")
    assert lines == [
        "backup X: pg_basebackup of main, about 100.0 MiB",
        "backup X: pg_basebackup of main: done, 100.0 MiB in 5.0 s (20.0 MiB/s); stored 1.0 MiB",
    ]


def test_a_phase_that_fails_says_where_it_stopped() -> None:
    clock, lines = Clock(), []
    with (
        pytest.raises(RuntimeError),
        LineProgress(meter(clock, unit="segments", total=40, estimate=False), None, lines.append).start() as progress,
    ):
        clock.now += 3
        progress.update(12)
        raise RuntimeError("boom")
    assert lines[-1] == "backup X: pg_basebackup of main: stopped after 3.0 s, at 12 of 40 segments"


def test_units_other_than_bytes() -> None:
    clock = Clock()
    load = meter(clock, phase="load", unit="seconds", total=10, estimate=False)
    clock.now += 4
    load.done, load.note = 4, plural(80, "operation")
    assert load.now_text() == "4.0 s of 10.0 s, 6.0 s left; 80 operations"
    segments = meter(clock, phase="replay", unit="segments", total=1, estimate=False)
    assert segments.start_line() == "replay, 1 segment"
    assert duration(59.94) == "59.9 s" and duration(185) == "3 min 05 s" and duration(7300) == "2 h 01 min"


def test_ui_progress_picks_bar_lines_or_nothing() -> None:
    screen = io.StringIO()
    with UI(err=screen, terminal=True).progress("restore D: extracting", total=1 << 20, label="extract") as shown:
        shown.update(1 << 20)
    assert "━" in screen.getvalue()
    lines = io.StringIO()
    with UI(err=lines, terminal=False).progress("restore D: extracting", total=1 << 20) as shown:
        shown.update(1 << 20)
    assert lines.getvalue().splitlines()[0] == "restore D: extracting, 1.0 MiB"
    assert re.fullmatch(r"restore D: extracting: done, 1\.0 MiB in \d\.\d s \(.*/s\)", lines.getvalue().splitlines()[1])
    quiet = io.StringIO()
    with UI(err=quiet, verbosity=-1).progress("restore D: extracting", total=1 << 20) as shown:
        shown.update(1 << 20)
    assert quiet.getvalue() == ""


def read_log(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text().splitlines()
    assert all(re.match(STAMP + r"(ERROR|WARN |INFO |DEBUG) ", line) for line in lines), lines
    return [(line.split()[2], line.split(" ", 3)[3].lstrip()) for line in lines]


@pytest.mark.parametrize("level", LEVELS)
def test_the_log_file_takes_lines_up_to_its_level(tmp_path: Path, level: str) -> None:
    path = tmp_path / "hadr.log"
    ui = UI(err=io.StringIO(), verbosity=-1, argv=["backup", "pg"])
    ui.open_log(str(path), level)
    ui.error("it broke\n  hint: fix it", details="Traceback (most recent call last):\n  boom")
    ui.warn("careful")
    ui.info("working")
    with ui.progress("phase P", total=3, unit="segments") as shown:
        shown.update(3)
    ui.end(0)
    logged = read_log(path)
    expected = {
        "error": [("ERROR", "it broke"), ("ERROR", "hint: fix it")],
        "warn": [("WARN", "careful")],
        "info": [
            ("INFO", "begin: hadr backup pg (version 0.1.0)"),
            ("INFO", "working"),
            ("INFO", "phase P, 3 segments"),
        ],
        "debug": [("DEBUG", "Traceback (most recent call last):"), ("DEBUG", "boom")],
    }
    for name in LEVELS:
        for line in expected[name]:
            assert (line in logged) is (LEVELS.index(name) <= LEVELS.index(level)), (name, line, logged)
    assert any(text.startswith("end: exit 0 after") for _, text in logged) is (level in ("info", "debug"))
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o640)


def test_the_log_file_gets_the_result_with_its_warnings_as_warn(tmp_path: Path, capsys) -> None:
    class Result:
        def to_json(self) -> dict:
            return {"ok": True}

        def render(self, out: Human) -> None:
            out.line("backup  B1")
            out.line("warning: data checksums are off")

    ui = UI(json_mode=True)
    ui.open_log(str(tmp_path / "hadr.log"), "info")
    ui.render(Result())
    assert capsys.readouterr().out.strip() == '{\n  "ok": true\n}'  # stdout: the JSON only
    assert read_log(tmp_path / "hadr.log")[1:] == [("INFO", "backup  B1"), ("WARN", "warning: data checksums are off")]


def test_a_log_that_stops_taking_lines_is_reported_not_fatal(tmp_path: Path) -> None:
    log = FileLog(str(tmp_path / "hadr.log"))
    os.close(log._fd)  # the descriptor goes bad under it
    log._fd = os.open(os.devnull, os.O_RDONLY)
    log.write("info", "lost")
    assert log.failure and log.failure.startswith(f"cannot write {tmp_path / 'hadr.log'}")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_table_too_wide_for_the_terminal_wraps_rows_and_never_cuts_a_cell(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    screen = Terminal()
    columns = ["id", "kind", "source", "state", "started (UTC)", "stopped (UTC)", "size", "WAL"]
    row = [
        "20261201T101500Z-pg-1a2b",
        "pg",
        "main",
        "complete",
        "2026-12-01 10:15:00",
        "2026-12-01 10:15:04",
        "30.1 MiB",
        "000000010000000000000002 .. 000000010000000000000003",
    ]
    Human(screen).table("backups", columns, [row], key_columns=4)
    lines = screen.getvalue().splitlines()
    assert lines == [
        "backups",
        "20261201T101500Z-pg-1a2b  pg  main  complete",
        "  started (UTC) 2026-12-01 10:15:00, stopped (UTC) 2026-12-01 10:15:04",
        "  size 30.1 MiB, WAL 000000010000000000000002 .. 000000010000000000000003",
    ]
    monkeypatch.setenv("COLUMNS", "200")
    wide = Terminal()
    Human(wide).table("backups", columns, [row], key_columns=4)
    assert "┃" in wide.getvalue() and all(cell in wide.getvalue() for cell in row) and "…" not in wide.getvalue()


def test_plural() -> None:
    assert [plural(n, "segment") for n in (0, 1, 2)] == ["0 segments", "1 segment", "2 segments"]
    assert plural(2, "entry", "entries") == "2 entries"
