"""What an ``archive_command`` runs, read back from the server: is it hadr's wal-push, with which policy
and source?

hadr writes two forms (``archive.archive_command_for``): ``<python> -m hadr_backup --policy P wal-push %p
--source S``, and in async mode a shell snippet (the spool's quick "already stored?" test and the lean
acknowledger) that ends in that same full command. An operator may also write ``hadr --policy P wal-push
--source S %p`` by hand (the README's form). All three end in one hadr wal-push, which is what is parsed:
the last hadr invocation in the command, up to the end or a shell separator.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

PATH_PLACEHOLDER = "%p"
_SEPARATORS = {"&&", "||", ";", "|", "&"}
_FLAGS = {"--json", "-v", "--verbose", "-q", "--quiet", "-vv", "-qq"}  # global options without a value


@dataclass(frozen=True)
class PushCommand:
    """The hadr wal-push an archive_command ends in."""

    program: str  # how hadr is started: "hadr", or "<python> -m hadr_backup"
    policy: str | None  # --policy (or HADR_POLICY=… before it); None: found from the server's environment
    source: str | None  # --source; None: the policy's only PostgreSQL source
    passes_path: bool  # the file argument is %p
    behind_acknowledger: bool  # the async form: hadr's spool test and lean acknowledger come first


def parse_push_command(command: str) -> PushCommand | None:
    """The hadr wal-push ``command`` runs; None when it runs none (``true``, ``cp %p …``, another tool)."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: not something hadr wrote
        return None
    for start in reversed(range(len(words))):
        program_words = _hadr_program(words, start)
        if program_words:
            parsed = _parse_invocation(words, start, program_words)
            if parsed is not None:
                return parsed
    return None


def _hadr_program(words: list[str], at: int) -> int:
    """How many words start hadr at ``at``: 1 for ``hadr``, 3 for ``<python> -m hadr_backup``, else 0."""
    word = words[at]
    if os.path.basename(word) == "hadr":
        return 1
    if os.path.basename(word).startswith("python") and words[at + 1 : at + 3] == ["-m", "hadr_backup"]:
        return 3
    return 0


def _parse_invocation(words: list[str], start: int, program_words: int) -> PushCommand | None:
    args = []
    for word in words[start + program_words :]:
        if word in _SEPARATORS:
            break
        args.append(word)
    if "wal-push" not in args:
        return None
    at = args.index("wal-push")
    policy, global_words = _take_option(args[:at], "--policy")
    if any(word not in _FLAGS for word in global_words):  # another sub-command, or options hadr has not
        return None
    source, rest = _take_option(args[at + 1 :], "--source")
    positional = [word for word in rest if not word.startswith("-")]
    return PushCommand(
        program=" ".join(words[start : start + program_words]),
        policy=policy or _policy_from_environment(words[:start]),
        source=source,
        passes_path=positional == [PATH_PLACEHOLDER],
        behind_acknowledger=any(word.endswith("walack.py") for word in words[:start]),
    )


def _take_option(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """(the value of ``name VALUE`` or ``name=VALUE``, the other words)."""
    value, rest = None, []
    words = iter(args)
    for word in words:
        if word == name:
            value = next(words, None)
        elif word.startswith(name + "="):
            value = word.split("=", 1)[1]
        else:
            rest.append(word)
    return value, rest


def _policy_from_environment(words: list[str]) -> str | None:
    """``HADR_POLICY=/etc/hadr/hadr.yaml hadr …``: the policy from an assignment right before hadr."""
    for word in reversed(words):
        if word.startswith("HADR_POLICY="):
            return word.split("=", 1)[1]
        if "=" not in word or word.startswith("-"):
            break
    return None
