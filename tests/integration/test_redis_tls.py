"""Backup and restore over ``rediss://`` against a real redis-server listening with TLS (a CA, a server
certificate and a client certificate made by openssl here; the server asks for the client's, as
``tls-auth-clients yes`` does by default): the policy's tls_ca_file, tls_cert_file and tls_key_file are
what makes it work, and without them (or with another CA) the backup fails saying so, storing nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hadr_backup.procs import free_port
from tests.helpers import hadr_cli, write_policy
from tests.schema_check import assert_schema


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> dict[str, Path]:
    """ca.crt/ca.key; server.crt for 127.0.0.1 and client.crt, both signed by the CA; other-ca.crt."""
    folder.mkdir()
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=hadr test {ca}",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt", cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt", cwd=folder)  # fmt: skip
    return {p.name: p for p in folder.iterdir()}


def tls_policy(tmp_path: Path, name: str, port: int, **tls: Path) -> Path:
    entry = {"name": "secure", "url": f"rediss://127.0.0.1:{port}/0", **{k: str(v) for k, v in tls.items()}}
    data = {"repository": {"path": str(tmp_path / "repo")}, "sources": {"redis": [entry]}}
    return write_policy(tmp_path / f"{name}.yaml", data)


def test_backup_and_restore_over_tls_with_a_client_certificate(redis_factory, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    tls_port = free_port()
    server = redis_factory(
        extra={
            "tls-port": tls_port,
            "tls-cert-file": certs["server.crt"],
            "tls-key-file": certs["server.key"],
            "tls-ca-cert-file": certs["ca.crt"],
            "tls-auth-clients": "yes",
        }
    )
    client = server.client()
    client.mset({f"secret:{n}": f"value-{n}" for n in range(500)})
    good = tls_policy(
        tmp_path,
        "good",
        tls_port,
        tls_ca_file=certs["ca.crt"],
        tls_cert_file=certs["client.crt"],
        tls_key_file=certs["client.key"],
    )
    hadr_cli(good, "init", check=True)

    # without the client certificate, or trusting another CA: refused, nothing stored
    for name, tls in (
        ("no-client-cert", {"tls_ca_file": certs["ca.crt"]}),
        ("other-ca", {"tls_ca_file": certs["other-ca.crt"]}),
    ):
        done = hadr_cli(tls_policy(tmp_path, name, tls_port, **tls), "backup", "redis")
        assert done.returncode != 0 and done.stdout == ""
        assert f"127.0.0.1:{tls_port}" in done.stderr, done.stderr
    assert "certificate verify failed" in done.stderr
    listed = hadr_cli(good, "--json", "list", check=True)
    assert assert_schema("list", listed.stdout)["backups"] == []

    backup = hadr_cli(good, "--json", "backup", "redis")
    assert backup.returncode == 0, backup.stderr
    assert assert_schema("backup-redis", backup.stdout)["keys"] == {"db0": 500}
    restored = hadr_cli(good, "--json", "restore", "redis", "--latest", "--to", str(tmp_path / "restored"))
    assert restored.returncode == 0, restored.stderr
    assert assert_schema("restore-redis", restored.stdout)["keys"] == {"db0": 500}
    check = hadr_cli(good, "--json", "check")
    assert check.returncode == 0, check.stdout + check.stderr
