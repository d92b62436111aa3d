"""A fault-injecting HTTP proxy in front of an S3 endpoint (moto), for tests of what hadr does when S3 fails.

    with FaultProxy(s3_server.endpoint_url) as proxy:           # listens on 127.0.0.1:proxy.port
        proxy.fail(method="PUT", status=503, code="SlowDown", times=5)          # the first 5 PUTs
        proxy.fail(method="PUT", status=503, code="SlowDown", seconds=2.0)      # PUTs for 2 s from the first
        proxy.fail(query="list-type=2", status=403, code="AccessDenied")        # every ListObjectsV2
        proxy.fail(query="continuation-token", status=500, code="InternalError")  # listings' later pages
        ... point hadr at proxy.endpoint_url ...
    proxy.seen  # every request: method, path, query, the status answered, whether it was faulted

A request that no rule matches is forwarded to the endpoint and its answer relayed. ``FaultProxy(...,
port=P)`` with ``start_in=seconds`` listens only after that delay, so that until then connections to
``proxy.endpoint_url`` are refused.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from hadr_backup.procs import free_port

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
}


@dataclass
class Rule:
    status: int
    code: str
    method: str | None = None  # None: any
    query: str | None = None  # a substring of the query string
    path: str | None = None  # a substring of the path
    times: int | None = None  # fault only the first N matching requests
    seconds: float | None = None  # fault matching requests for this long from the first one
    matched: int = 0
    first_at: float | None = None

    def applies(self, method: str, path: str, query: str) -> bool:
        """Whether this rule faults the request (and counts it when it does)."""
        if (
            (self.method and method != self.method)
            or (self.query and self.query not in query)
            or (self.path and self.path not in path)
        ):
            return False
        now = time.monotonic()
        self.first_at = self.first_at if self.first_at is not None else now
        if self.times is not None and self.matched >= self.times:
            return False
        if self.seconds is not None and now - self.first_at > self.seconds:
            return False
        self.matched += 1
        return True


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    status: int
    faulted: bool
    at: float = field(default_factory=time.monotonic)


class FaultProxy:
    def __init__(self, upstream: str, *, port: int | None = None, start_in: float = 0.0):
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.port = port or free_port()
        self.start_in = start_in
        self.rules: list[Rule] = []
        self.seen: list[Seen] = []
        self.started_at: float | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._starter: threading.Timer | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(
        self,
        *,
        status: int,
        code: str,
        method: str | None = None,
        query: str | None = None,
        path: str | None = None,
        times: int | None = None,
        seconds: float | None = None,
    ) -> Rule:
        rule = Rule(status, code, method, query, path, times, seconds)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def requests(
        self, method: str | None = None, *, faulted: bool | None = None, path: str | None = None
    ) -> list[Seen]:
        """The requests seen, by method, by whether they were faulted, by a substring of the path."""
        with self._lock:
            return [
                s
                for s in self.seen
                if (method is None or s.method == method)
                and (faulted is None or s.faulted == faulted)
                and (path is None or path in s.path)
            ]

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        if self.start_in > 0:
            self._starter = threading.Timer(self.start_in, self._listen)
            self._starter.start()
        else:
            self._listen()
        return self

    def __exit__(self, *exc) -> None:
        if self._starter is not None:
            self._starter.cancel()
            self._starter.join()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _listen(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.started_at = time.monotonic()
        self._server = server

    # -- one request -------------------------------------------------------------------------------

    def decide(self, method: str, path: str, query: str) -> Rule | None:
        with self._lock:
            return next((rule for rule in self.rules if rule.applies(method, path, query)), None)

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def forward(self, method: str, target: str, headers: dict[str, str], body: bytes):
        """Send the request on to the endpoint: (status, headers, body)."""
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            connection.request(
                method, target, body=body if body or method in ("PUT", "POST") else None, headers=headers
            )
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()


def error_body(code: str, path: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>injected by the '
        f"test proxy</Message><Resource>{path}</Resource><RequestId>fault</RequestId></Error>"
    ).encode()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    data += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return data
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            body = self._body()  # read whole, even when refused, so the connection stays usable
            path, _, query = self.path.partition("?")
            rule = proxy.decide(self.command, path, query)
            if rule is not None:
                self._answer(rule.status, [("Content-Type", "application/xml")], error_body(rule.code, path))
                proxy.record(Seen(self.command, path, query, rule.status, True))
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            try:
                status, answer_headers, answer = proxy.forward(self.command, self.path, headers, body)
            except OSError as error:
                status, answer_headers, answer = 502, [], f"upstream failed: {error}".encode()
            self._answer(status, answer_headers, answer)
            proxy.record(Seen(self.command, path, query, status, False))

        def _answer(self, status: int, headers, body: bytes) -> None:
            self.send_response(status)
            upstream_length = None
            for key, value in headers:
                if key.lower() == "content-length":
                    upstream_length = value
                elif key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            head = self.command == "HEAD"  # a HEAD answer carries the object's length and no body
            self.send_header("Content-Length", upstream_length if head and upstream_length else str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
