"""Master keys, data keys and the wrapping between them.

A *master key* belongs to the user: 32 random bytes in a key file (mode 0600) or an environment variable,
never stored in the repository. A *data key* encrypts objects; the repository stores it only wrapped by
the master key (``keys/<data_key_id>.json``), so rotating the master key (``hadr key rotate``) re-wraps a
few small records and never rewrites data.

Key file format, one line: ``hadr-key-v1:<base64 of 32 bytes>``. The environment variable holds the same
text, or the bare base64.

Ids are derived from the secret (first 16 hex of a SHA-256 under a domain prefix): the repository can
record which key it needs without recording anything that helps to guess the key, and an unwrapped data
key can be checked against the id its record claims.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from hadr_backup.errors import IntegrityError, TamperedData, UsageError, WrongKey
from hadr_backup.fsutil import durable_write

KEY_FILE_PREFIX = "hadr-key-v1:"
WRAP_FORMAT = "hadr-wrapped-key-v1"
SECRET_SIZE = 32
_NONCE_SIZE = 12


def _key_id(domain: bytes, secret: bytes) -> str:
    return hashlib.sha256(domain + secret).hexdigest()[:16]


@dataclass(frozen=True)
class MasterKey:
    """The user's key; it only ever wraps data keys."""

    id: str
    secret: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> MasterKey:
        return cls(_key_id(b"hadr-key-id", secret), secret)


@dataclass(frozen=True)
class DataKey:
    """An AES-256 key that encrypts objects; ``id`` is recorded in each object's header."""

    id: str
    secret: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> DataKey:
        return cls(_key_id(b"hadr-data-key-id", secret), secret)


# -- master keys ----------------------------------------------------------------------------------


def create_key_file(path: Path | str) -> MasterKey:
    """Write a new random master key to ``path`` (mode 0600 from creation, fsynced); never overwrite a file."""
    path = Path(path)
    secret = os.urandom(SECRET_SIZE)
    text = f"{KEY_FILE_PREFIX}{base64.b64encode(secret).decode()}\n".encode()
    try:
        durable_write(path, text, mode=0o600, exclusive=True)
    except FileExistsError:
        raise UsageError(
            f"key file {path} already exists; refusing to overwrite it",
            hint="data encrypted under that key needs it: move it away first only if you really mean to replace it",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot create key file {path}: {exc.strerror}") from exc
    return MasterKey.from_secret(secret)


def load_master_key(*, key_file: str | Path | None = None, env_var: str | None = None) -> MasterKey:
    """Load the master key from ``key_file`` or, if none is given, from the environment variable ``env_var``."""
    if key_file:
        return MasterKey.from_secret(_read_key_file(Path(key_file)))
    if env_var:
        value = os.environ.get(env_var, "").strip()
        if not value:
            raise UsageError(
                f"environment variable {env_var} is not set or empty; it should hold the master key",
                hint=f"export {env_var}='{KEY_FILE_PREFIX}<base64 of 32 bytes>'",
            )
        return MasterKey.from_secret(_parse_key_text(value, f"environment variable {env_var}"))
    raise UsageError(
        "no master key given: name a key file or an environment variable",
        hint="set encryption.key_file or encryption.key_env in the policy",
    )


def _read_key_file(path: Path) -> bytes:
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise UsageError(
            f"key file {path} does not exist",
            hint="check encryption.key_file in the policy, or create one with `hadr init`",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not ASCII text"
        raise UsageError(f"cannot read key file {path}: {reason}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"key file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"run `chmod 600 {path}`",
        )
    return _parse_key_text(text.strip(), f"key file {path}")


def _parse_key_text(text: str, where: str) -> bytes:
    encoded = text[len(KEY_FILE_PREFIX) :] if text.startswith(KEY_FILE_PREFIX) else text
    try:
        secret = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) != SECRET_SIZE:
        raise UsageError(
            f"{where} does not hold a hadr key",
            hint=f"expected one line '{KEY_FILE_PREFIX}<base64 of {SECRET_SIZE} bytes>'",
        )
    return secret


# -- data keys ------------------------------------------------------------------------------------


def new_data_key() -> DataKey:
    return DataKey.from_secret(os.urandom(SECRET_SIZE))


def wrap_data_key(data_key: DataKey, master: MasterKey) -> dict:
    """A JSON-able record of ``data_key`` sealed by ``master`` (AES-256-GCM, AAD = the data key id)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(_NONCE_SIZE)
    wrapped = AESGCM(master.secret).encrypt(nonce, data_key.secret, data_key.id.encode())
    return {
        "format": WRAP_FORMAT,
        "data_key_id": data_key.id,
        "master_key_id": master.id,
        "nonce": base64.b64encode(nonce).decode(),
        "wrapped": base64.b64encode(wrapped).decode(),
    }


def unwrap_data_key(record: dict, master: MasterKey) -> DataKey:
    """Open a record made by :func:`wrap_data_key`; ``WrongKey`` when ``master`` is not the one that sealed it."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data_key_id, nonce, wrapped = _record_fields(record)
    sealed_by = record.get("master_key_id")
    if sealed_by != master.id:
        raise WrongKey(
            f"data key {data_key_id} is wrapped by master key {sealed_by}, but the master key given is {master.id}",
            hint="use the key file the repository was created with (or rotated to)",
        )
    try:
        secret = AESGCM(master.secret).decrypt(nonce, wrapped, data_key_id.encode())
    except InvalidTag:
        raise TamperedData(
            f"the record of data key {data_key_id} does not authenticate under master key {master.id}: it was modified",
            hint="restore keys/ from a copy of the repository",
        ) from None
    data_key = DataKey.from_secret(secret)
    if data_key.id != data_key_id:
        raise TamperedData(f"the record of data key {data_key_id} holds key {data_key.id}")
    return data_key


def rewrap(record: dict, old: MasterKey, new: MasterKey) -> dict:
    """The same data key wrapped by ``new`` instead of ``old``: what ``hadr key rotate`` stores."""
    return wrap_data_key(unwrap_data_key(record, old), new)


def _record_fields(record: dict) -> tuple[str, bytes, bytes]:
    if not isinstance(record, dict) or record.get("format") != WRAP_FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise IntegrityError(f"not a wrapped data key record (format {found!r}, expected {WRAP_FORMAT!r})")
    data_key_id = record.get("data_key_id")
    try:
        nonce = base64.b64decode(record["nonce"], validate=True)
        wrapped = base64.b64decode(record["wrapped"], validate=True)
    except (KeyError, TypeError, binascii.Error, ValueError):
        nonce = wrapped = b""
    if not isinstance(data_key_id, str) or len(nonce) != _NONCE_SIZE or len(wrapped) != SECRET_SIZE + 16:
        raise IntegrityError(
            f"the record of data key {data_key_id} is malformed", hint="restore keys/ from a copy of the repository"
        )
    return data_key_id, nonce, wrapped
