"""A minimal Redis connection: RESP over TCP (TLS for ``rediss://``), AUTH from the URL, and the raw
socket the replication stream is read from (client libraries do not speak that part of the protocol).

``redis://[user:password@]host[:port][/db]``: a user and password -> ``AUTH user password`` (an ACL
user), a password alone (``redis://:pw@host``) -> ``AUTH pw``. ``rediss://`` verifies the server's
certificate against the system CAs, or ``?ssl_ca_certs=FILE``; ``?ssl_cert_reqs=none`` turns that off.
A source's ``tls_ca_file``, ``tls_cert_file`` and ``tls_key_file`` (the client certificate a server with
``tls-auth-clients yes`` asks for) come from the policy (``Address.of_source``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, unquote, urlsplit

from hadr_backup.errors import ServerError, UsageError

READ_SIZE = 1 << 20


class RedisError(ServerError):
    """Redis refused a command or could not be reached."""


class ReplyError(RedisError):
    """Redis answered a command with an error (the connection is still usable)."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    ca_file: str | None = None
    verify: bool = True
    cert_file: str | None = None  # a client certificate (PEM), with its key
    key_file: str | None = None

    @classmethod
    def parse(cls, url: str) -> Address:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise UsageError(f"not a Redis URL: {url!r}", hint="redis://[user:password@]host:port or rediss://…")
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "rediss",
            ca_file=(query.get("ssl_ca_certs") or [None])[0],
            verify=(query.get("ssl_cert_reqs") or ["required"])[0] != "none",
        )

    @classmethod
    def of_source(cls, source) -> Address:
        """A policy source's address: its url, and the TLS files its policy names (they win over the url's)."""
        address = cls.parse(source.url)
        return replace(
            address,
            ca_file=source.tls_ca_file or address.ca_file,
            cert_file=source.tls_cert_file,
            key_file=source.tls_key_file,
        )

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Connection:
    """One connection: ``call(*args)`` for commands, ``readline``/``read_some`` for the raw stream."""

    def __init__(self, address: Address, timeout: float = 30.0):
        self.address = address
        try:
            sock = socket.create_connection((address.host, address.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if address.tls:
                sock = _tls_context(address).wrap_socket(sock, server_hostname=address.host)
        except OSError as error:
            raise RedisError(f"cannot connect to Redis at {address}: {error}") from error
        self.sock = sock
        self.buffer = bytearray()
        if address.password is not None:
            auth = ("AUTH", address.username, address.password) if address.username else ("AUTH", address.password)
            try:
                self.call(*auth)
            except RedisError as error:
                self.close()
                raise RedisError(
                    f"Redis at {address} refused the credentials: {error.message}",
                    hint="check the user and password in the source's url",
                ) from None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- commands ----------------------------------------------------------------------------------

    def send(self, *args: str | bytes) -> None:
        data = encode_command(args)
        self._io(lambda: self.sock.sendall(data))

    def call(self, *args: str | bytes, raw: bool = False):
        """Send one command and return its reply (str, int, list, None; bulk strings as bytes when
        ``raw``); ReplyError on an error reply."""
        self.send(*args)
        return self.reply(str(args[0]).upper(), raw)

    def pipeline(self, commands: list[tuple], raw: bool = False) -> list:
        """Send every command at once, then read their replies in order; an error reply comes back as a
        ReplyError value in its place (a lost connection raises)."""
        self.send_many(commands)
        return [self.reply_or_error(str(args[0]).upper(), raw) for args in commands]

    def send_many(self, commands: list[tuple]) -> None:
        """Send commands without reading their replies (read them in order with ``reply``)."""
        data = b"".join(encode_command(args) for args in commands)
        self._io(lambda: self.sock.sendall(data))

    def reply_or_error(self, command: str = "", raw: bool = False):
        try:
            return self.reply(command, raw)
        except ReplyError as error:
            return error

    def reply(self, command: str = "", raw: bool = False):
        line = self.readline()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise ReplyError(f"{command}: {rest.decode(errors='replace')}" if command else rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.read_exact(size + 2)[:-2]
            return data if raw else data.decode(errors="replace")
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.reply(command, raw) for _ in range(size)]
        raise RedisError(f"unexpected reply from Redis at {self.address}: {bytes(line[:60])!r}")

    # -- the raw stream ----------------------------------------------------------------------------

    def readline(self) -> bytes:
        """One line without its CRLF (a bare LF also ends it: the replication keep-alives)."""
        while (end := self.buffer.find(b"\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end]).rstrip(b"\r")
        del self.buffer[: end + 1]
        return line

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_some(self, limit: int = READ_SIZE) -> bytes:
        """What is buffered, or else one read from the socket (at most ``limit`` bytes); b"" at the end."""
        if self.buffer:
            data = bytes(self.buffer[:limit])
            del self.buffer[:limit]
            return data
        return self._io(lambda: self.sock.recv(limit))

    def _fill(self) -> None:
        data = self._io(lambda: self.sock.recv(READ_SIZE))
        if not data:
            raise RedisError(f"Redis at {self.address} closed the connection")
        self.buffer += data

    def _io(self, operation):
        try:
            return operation()
        except OSError as error:
            raise RedisError(f"connection to Redis at {self.address} failed: {error}") from error


def encode_command(args) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _tls_context(address: Address):
    import ssl  # only for rediss:// (about 7 ms of every start-up otherwise)

    try:
        context = ssl.create_default_context(cafile=address.ca_file)
        if address.cert_file:
            context.load_cert_chain(address.cert_file, address.key_file)
    except (OSError, ssl.SSLError) as error:
        raise RedisError(
            f"cannot use the TLS files for Redis at {address}: {error}",
            hint="check tls_ca_file, tls_cert_file and tls_key_file of the source",
        ) from error
    if not address.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def parse_info(text: str) -> dict[str, str]:
    """INFO's ``key:value`` lines as a dict (section headers and blank lines dropped)."""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def keys_per_db(info: dict[str, str]) -> dict[str, int]:
    """``db0:keys=3,expires=0,avg_ttl=0`` -> {"db0": 3}."""
    return {
        name: int(dict(field.split("=", 1) for field in value.split(","))["keys"])
        for name, value in info.items()
        if name.startswith("db") and name[2:].isdigit()
    }
