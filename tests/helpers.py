"""Small helpers shared by tests: policies for a repository in a temp dir."""

from __future__ import annotations

from pathlib import Path

import yaml

from hadr_backup.policy.load import parse_policy


def local_policy_data(repo_dir: Path, key_file: Path | None = None, **extra) -> dict:
    data = {"repository": {"path": str(repo_dir)}, **extra}
    if key_file is not None:
        data["encryption"] = {"key_file": str(key_file)}
    return data


def local_policy(repo_dir: Path, key_file: Path | None = None, **extra):
    return parse_policy(local_policy_data(repo_dir, key_file, **extra), "test-policy")


def write_policy(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path
