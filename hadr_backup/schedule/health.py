"""``hadr schedule health``: is the daemon on this host alive? Its /metrics must answer, say
``hadr_scheduler_up 1``, and carry a heartbeat of its main loop younger than ``max_age`` seconds (the
container's HEALTHCHECK)."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from hadr_backup.errors import EXIT_FAILURE, EXIT_OK


@dataclass
class Health:
    url: str
    healthy: bool
    reason: str
    heartbeat_age: float | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.healthy else EXIT_FAILURE

    def to_json(self) -> dict[str, Any]:
        age = None if self.heartbeat_age is None else round(self.heartbeat_age, 3)
        return {"url": self.url, "healthy": self.healthy, "reason": self.reason, "heartbeat_age": age}

    def render(self, out) -> None:
        out.line(f"{'healthy' if self.healthy else 'UNHEALTHY'}: {self.reason} ({self.url})")


def run_health(port: int, max_age: float, host: str = "127.0.0.1", now: float | None = None) -> Health:
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
    except OSError as error:
        return Health(url, False, f"no answer: {getattr(error, 'reason', None) or error}")
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}
    if values.get("hadr_scheduler_up") != 1:
        return Health(url, False, "hadr_scheduler_up is not 1: this is not a running hadr scheduler")
    age = (time.time() if now is None else now) - values.get("hadr_scheduler_heartbeat_timestamp_seconds", 0)
    if age > max_age:
        return Health(url, False, f"the main loop last ran {age:.0f} s ago (more than {max_age:g} s)", age)
    return Health(url, True, f"scheduling; main loop ran {age:.1f} s ago", age)
