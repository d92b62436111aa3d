"""docs/alerts.yml and the metrics, checked by Prometheus' own promtool (Debian's prometheus package):
the rules are valid, fire where they must and stay silent where they must not (alerts_test.yml), and
``hadr metrics`` prints what promtool accepts. A missing promtool fails these tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from click.testing import CliRunner

from hadr_backup.cli.main import cli
from hadr_backup.procs import free_port
from tests.schema_check import assert_schema
from tests.unit.test_schedule import make_policy

ROOT = Path(__file__).resolve().parents[2]


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: apt-get install prometheus (scripts/setup.sh does)"
    return subprocess.run([tool, *args], input=stdin, capture_output=True, text=True, timeout=120)


def test_the_rules_are_valid() -> None:
    done = promtool("check", "rules", str(ROOT / "docs" / "alerts.yml"))
    assert done.returncode == 0 and "SUCCESS: 6 rules found" in done.stdout, done.stdout + done.stderr


def test_the_rules_fire_and_stay_silent_as_their_tests_say() -> None:
    done = promtool("test", "rules", str(ROOT / "tests" / "unit" / "alerts_test.yml"))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_a_rules_test_that_expects_silence_from_a_firing_alert_fails(tmp_path: Path) -> None:
    """The rules tests can fail: a copy that expects no alert where one fires is refused."""
    text = (
        (ROOT / "tests" / "unit" / "alerts_test.yml")
        .read_text()
        .replace("../../docs/alerts.yml", str(ROOT / "docs" / "alerts.yml"))
    )
    firing = "      - eval_time: 90m\n        alertname: HadrJobNotSucceeding\n"
    broken = text.replace(firing, firing + "        exp_alerts: []\n" + firing.replace("90m", "91m"), 1)
    assert broken != text
    (tmp_path / "broken_test.yml").write_text(broken)
    done = promtool("test", "rules", str(tmp_path / "broken_test.yml"))
    assert done.returncode != 0 and "HadrJobNotSucceeding" in done.stdout + done.stderr


def test_metrics_once_pass_promtool_and_their_schema(tmp_path: Path) -> None:
    policy = make_policy(
        tmp_path,
        [{"name": "verify", "job": "verify repo", "cron": "0 3 * * *"}],
        sources={"redis": [{"name": "cache", "url": "redis://127.0.0.1:1/0"}]},
    )
    assert CliRunner().invoke(cli, ["--policy", str(policy), "schedule", "exec", "verify"]).exit_code == 0
    text = CliRunner().invoke(cli, ["--policy", str(policy), "metrics"]).stdout
    checked = promtool("check", "metrics", stdin=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'hadr_job_last_success_timestamp_seconds{job="verify repo",schedule="verify"}' in text
    assert 'hadr_job_interval_seconds{job="verify repo",schedule="verify"} 86400.0' in text
    assert 'hadr_backups_complete{kind="redis",source="cache"} 0.0' in text and "hadr_repository_up 1.0" in text
    data = assert_schema("metrics", CliRunner().invoke(cli, ["--policy", str(policy), "metrics", "--json"]).stdout)
    names = {s["name"] for s in data["samples"]}
    assert {"hadr_job_runs_total", "hadr_job_failures_total", "hadr_repository_stored_bytes"} <= names
    assert data["errors"] == [] and data["output"] is None


def test_metrics_to_a_textfile_and_an_unwritable_one(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, [{"name": "verify", "job": "verify repo", "cron": "0 3 * * *"}])
    target = tmp_path / "hadr.prom"
    done = CliRunner().invoke(cli, ["--policy", str(policy), "--json", "metrics", "--output", str(target)])
    assert done.exit_code == 0 and json.loads(done.stdout)["output"] == str(target)
    assert promtool("check", "metrics", stdin=target.read_text()).returncode == 0
    refused = CliRunner().invoke(cli, ["--policy", str(policy), "metrics", "--output", str(tmp_path / "no" / "x.prom")])
    assert refused.exit_code == 1 and "cannot" not in refused.stdout and "x.prom" in refused.stderr


def test_metrics_of_an_unreadable_repository_say_so(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, [{"name": "verify", "job": "verify repo", "cron": "0 3 * * *"}])
    shutil.rmtree(tmp_path / "repo")
    done = CliRunner().invoke(cli, ["--policy", str(policy), "metrics", "--json"])
    data = assert_schema("metrics", done.stdout)
    assert {"name": "hadr_repository_up", "labels": {}, "value": 0.0} in data["samples"]
    assert data["errors"] and data["errors"][0].startswith("repository:")


def test_health_without_a_daemon_is_unhealthy() -> None:
    done = CliRunner().invoke(cli, ["schedule", "health", "--metrics-port", str(free_port()), "--json"])
    data = assert_schema("schedule-health", done.stdout)
    assert done.exit_code == 1 and data["healthy"] is False and data["reason"].startswith("no answer")
