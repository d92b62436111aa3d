"""Key management commands: create a master key file; rotate the master key.

Rotation re-wraps each data key (keys/<id>.json) with the new master key; data is never rewritten,
so backups made before a rotation stay readable. Each record is replaced atomically and a record
already wrapped by the new key is skipped, so an interrupted rotation is finished by running it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadr_backup.errors import UsageError
from hadr_backup.policy.model import Policy
from hadr_backup.repo import layout
from hadr_backup.repo.repository import META_KEY, master_key_for, open_repo
from hadr_backup.repo.storage import read_all
from hadr_backup.ui import plural


@dataclass
class KeyCreateResult:
    path: str
    key_id: str

    def to_json(self) -> dict[str, Any]:
        return {"key_file": self.path, "key_id": self.key_id}

    def render(self, out) -> None:
        out.line(f"created key {self.key_id} in {self.path} (mode 0600)")
        out.line("keep a copy somewhere safe and outside the repository: without it no backup can be read")


def run_key_create(policy: Policy, path: str | None) -> KeyCreateResult:
    from hadr_backup.repo.keys import create_key_file

    target = path or policy.encryption.key_file
    if not target:
        raise UsageError("no key file given", hint="pass --file PATH or set encryption.key_file in the policy")
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    master = create_key_file(Path(target))
    return KeyCreateResult(target, master.id)


@dataclass
class KeyRotateResult:
    old_key_id: str
    new_key_id: str
    rewrapped: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "old_master_key_id": self.old_key_id,
            "new_master_key_id": self.new_key_id,
            "rewrapped": self.rewrapped,
            "already_rewrapped": self.already,
        }

    def render(self, out) -> None:
        out.line(
            f"master key {self.old_key_id} -> {self.new_key_id}: re-wrapped "
            f"{plural(len(self.rewrapped), 'data key')}"
            + (f", {len(self.already)} already done" if self.already else "")
        )
        out.line("now point encryption.key_file (or key_env) of the policy at the new key")


def run_key_rotate(policy: Policy, new_key_file: str) -> KeyRotateResult:
    from hadr_backup.repo.keys import load_master_key, rewrap

    old = master_key_for(policy)
    if old is None:
        raise UsageError("the policy names no current key", hint="set encryption.key_file or key_env")
    new = load_master_key(key_file=new_key_file)
    if new.id == old.id:
        raise UsageError("the new key is the current key", hint="create one with `hadr key create --file NEW`")
    result = KeyRotateResult(old.id, new.id)
    with open_repo(policy, write=True, catalog=False) as repo:
        for info in repo.store.list(layout.KEYS):
            record = json.loads(read_all(repo.store, info.key))
            if record.get("master_key_id") == new.id:
                result.already.append(record["data_key_id"])
                continue
            repo.store.put(info.key, [json.dumps(rewrap(record, old, new)).encode()])
            result.rewrapped.append(record["data_key_id"])
        meta = dict(repo.meta)
        meta["encryption"] = {**meta.get("encryption", {}), "master_key_id": new.id}
        repo.store.put(META_KEY, [json.dumps(meta, indent=1).encode()])
    return result
