"""Start-up time of the command line: what every ``wal-push`` from PostgreSQL pays before any work.

Median wall time of ``python3 -m hadr_backup --help`` and, when installed, ``hadr --help``, after one
warm-up run. No competitor: the target is absolute.
"""

from __future__ import annotations

import shutil
import statistics
import sys

from runner import ROOT, Figure, timed

RUNS = 10
TARGET = "< 150"


def median_ms(command: list[str]) -> float:
    timed(command)  # warm-up: byte-code and page cache
    return statistics.median(timed(command) for _ in range(RUNS)) * 1000


def run() -> list[Figure]:
    figures = [
        Figure(
            "startup: python3 -m hadr_backup --help",
            median_ms([sys.executable, "-m", "hadr_backup", "--help"]),
            None,
            "ms",
            False,
            "-",
            TARGET,
        )
    ]
    installed = shutil.which("hadr")
    if installed:
        figures.append(Figure("startup: hadr --help", median_ms([installed, "--help"]), None, "ms", False, "-", TARGET))
    return figures


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from runner import main

    sys.exit(main(["startup", *sys.argv[1:]]))
