"""Master keys, data keys and wrapping: files, environment, wrong keys, rotation."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat

import pytest

from hadr_backup.errors import IntegrityError, TamperedData, UsageError, WrongKey
from hadr_backup.repo.keys import (
    DataKey,
    MasterKey,
    create_key_file,
    load_master_key,
    new_data_key,
    rewrap,
    unwrap_data_key,
    wrap_data_key,
)
from hadr_backup.repo.pipeline import Codec, decode, encode

ENV = "HADR_TEST_MASTER_KEY"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def key_text(secret: bytes) -> str:
    return "hadr-key-v1:" + base64.b64encode(secret).decode()


# -- key files ------------------------------------------------------------------------------------


def test_created_key_file_is_0600_and_loads_back(tmp_path):
    path = tmp_path / "master.key"
    created = create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("hadr-key-v1:") and path.read_text().endswith("\n")
    loaded = load_master_key(key_file=str(path))
    assert loaded == created
    assert loaded.id == hashlib.sha256(b"hadr-key-id" + loaded.secret).hexdigest()[:16]
    assert len(loaded.secret) == 32


def test_key_file_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        create_key_file(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_existing_key_file_is_never_overwritten(tmp_path):
    path = tmp_path / "master.key"
    first = create_key_file(path)
    before = path.read_bytes()
    with pytest.raises(UsageError, match="already exists; refusing to overwrite"):
        create_key_file(path)
    assert path.read_bytes() == before
    assert load_master_key(key_file=path) == first


def test_two_key_files_hold_different_keys(tmp_path):
    assert create_key_file(tmp_path / "a").id != create_key_file(tmp_path / "b").id


def test_missing_key_file(tmp_path):
    with pytest.raises(UsageError, match=f"key file {tmp_path / 'nope'} does not exist"):
        load_master_key(key_file=tmp_path / "nope")


@pytest.mark.parametrize(
    "text", ["", "hello\n", "hadr-key-v1:not base64!\n", key_text(b"short") + "\n", key_text(bytes(33))]
)
def test_key_file_in_a_bad_format(tmp_path, text):
    path = tmp_path / "bad.key"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(UsageError, match="does not hold a hadr key") as caught:
        load_master_key(key_file=path)
    assert "hadr-key-v1:<base64 of 32 bytes>" in str(caught.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused_with_the_chmod_to_run(tmp_path, mode):
    path = tmp_path / "loose.key"
    create_key_file(path)
    path.chmod(mode)
    with pytest.raises(UsageError, match=f"mode {mode:04o}") as caught:
        load_master_key(key_file=path)
    assert f"chmod 600 {path}" in str(caught.value)


def test_errors_never_show_the_key(tmp_path):
    path = tmp_path / "loose.key"
    key = create_key_file(path)
    path.chmod(0o644)
    with pytest.raises(UsageError) as caught:
        load_master_key(key_file=path)
    assert base64.b64encode(key.secret).decode() not in str(caught.value)
    assert key.secret.hex() not in repr(key) and "secret" not in repr(key)


# -- environment ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [key_text, lambda s: base64.b64encode(s).decode(), lambda s: key_text(s) + "\n"],
    ids=["prefixed", "bare", "newline"],
)
def test_key_from_environment(monkeypatch, form):
    secret = os.urandom(32)
    monkeypatch.setenv(ENV, form(secret))
    assert load_master_key(env_var=ENV) == MasterKey.from_secret(secret)


@pytest.mark.parametrize("value", [None, "", "  \n"], ids=["unset", "empty", "blank"])
def test_empty_environment_variable(monkeypatch, value):
    if value is not None:
        monkeypatch.setenv(ENV, value)
    with pytest.raises(UsageError, match=f"environment variable {ENV} is not set or empty"):
        load_master_key(env_var=ENV)


def test_bad_environment_value(monkeypatch):
    monkeypatch.setenv(ENV, "password123")
    with pytest.raises(UsageError, match=f"environment variable {ENV} does not hold a hadr key"):
        load_master_key(env_var=ENV)


def test_key_file_comes_before_the_environment(tmp_path, monkeypatch):
    from_file = create_key_file(tmp_path / "k")
    monkeypatch.setenv(ENV, key_text(os.urandom(32)))
    assert load_master_key(key_file=tmp_path / "k", env_var=ENV) == from_file


def test_no_key_source_given():
    with pytest.raises(UsageError, match="no master key given"):
        load_master_key()


# -- data keys and wrapping -----------------------------------------------------------------------


def test_new_data_keys_are_random_with_derived_ids():
    first, second = new_data_key(), new_data_key()
    assert first.secret != second.secret and len(first.secret) == 32
    assert first.id == DataKey.from_secret(first.secret).id and first.id != second.id
    assert re.fullmatch(r"[0-9a-f]{16}", first.id), first.id


def test_wrap_and_unwrap():
    master, data_key = MasterKey.from_secret(os.urandom(32)), new_data_key()
    record = wrap_data_key(data_key, master)
    record = json.loads(json.dumps(record))  # it is stored as JSON
    assert set(record) == {"format", "data_key_id", "master_key_id", "nonce", "wrapped"}
    assert record["data_key_id"] == data_key.id and record["master_key_id"] == master.id
    assert base64.b64encode(data_key.secret).decode() not in json.dumps(record)
    assert unwrap_data_key(record, master) == data_key
    assert wrap_data_key(data_key, master)["nonce"] != record["nonce"]


def test_wrong_master_key_names_both_ids():
    right, wrong = MasterKey.from_secret(os.urandom(32)), MasterKey.from_secret(os.urandom(32))
    data_key = new_data_key()
    record = wrap_data_key(data_key, right)
    with pytest.raises(WrongKey) as caught:
        unwrap_data_key(record, wrong)
    message = str(caught.value)
    assert data_key.id in message and right.id in message and wrong.id in message


@pytest.mark.parametrize("field", ["wrapped", "nonce", "data_key_id"])
def test_modified_record_does_not_open(field):
    master, data_key = MasterKey.from_secret(os.urandom(32)), new_data_key()
    record = wrap_data_key(data_key, master)
    if field == "data_key_id":
        record[field] = new_data_key().id
    else:
        raw = bytearray(base64.b64decode(record[field]))
        raw[0] ^= 1
        record[field] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(TamperedData, match="does not authenticate"):
        unwrap_data_key(record, master)


@pytest.mark.parametrize(
    "record", [{}, {"format": "other"}, {"format": "hadr-wrapped-key-v1", "data_key_id": "x"}, ["not", "a", "dict"]]
)
def test_malformed_record(record):
    with pytest.raises(IntegrityError, match="record|format"):
        unwrap_data_key(record, MasterKey.from_secret(os.urandom(32)))


def test_rewrap_keeps_data_readable_with_the_new_master_only():
    old, new = MasterKey.from_secret(os.urandom(32)), MasterKey.from_secret(os.urandom(32))
    data_key = new_data_key()
    record = wrap_data_key(data_key, old)
    stream, digest = encode([b"ledger rows " * 5000], Codec(data_key=data_key, chunk_size=8192))
    stored = b"".join(stream)

    rotated = rewrap(record, old, new)
    assert rotated["data_key_id"] == data_key.id and rotated["master_key_id"] == new.id
    with pytest.raises(WrongKey, match=old.id):
        unwrap_data_key(rotated, old)

    opened = unwrap_data_key(rotated, new)
    plain = b"".join(decode([stored], lambda key_id: opened, expected_sha256=digest.sha256))
    assert plain == b"ledger rows " * 5000


def test_rewrap_with_the_wrong_old_key_fails():
    old, new = MasterKey.from_secret(os.urandom(32)), MasterKey.from_secret(os.urandom(32))
    record = wrap_data_key(new_data_key(), old)
    with pytest.raises(WrongKey):
        rewrap(record, new, new)
