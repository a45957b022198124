"""Per-student vhosts: for each name on a roster, a user, a vhost of the same name, and permissions there only."""
from __future__ import annotations

import base64
import csv
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from labs.amqp.management import CLASS_CAP

VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


MIB = 1024 * 1024


@dataclass(frozen=True)
class ClassLimits:
    """What one student may take of the class's shared broker (the reasons for each default: docs/classroom.md).

    Vhosts separate names, not resources: without these, one student's flood sets off the node's memory alarm,
    which blocks every publisher of the class, and one runaway connection loop takes every socket the node has."""

    queue_mb: int = 64  # a queue refuses new messages past this size: lab 11's 1,500 jobs need under 1 MiB
    connections: int = 32  # per vhost (and per user): lab 10 at its busiest opens about ten
    queues: int = 64  # per vhost: all twelve labs in one vhost declare about twenty

    def vhost_limits(self) -> dict:
        return {"max-connections": self.connections, "max-queues": self.queues}

    def user_limits(self) -> dict:
        """The same connections for the user (a student with access to a second vhost stays within them), and
        channels enough for eight a connection: the scripts open one, a channel leak in a loop is stopped."""
        return {"max-connections": self.connections, "max-channels": 8 * self.connections}

    def operator_policy(self, refuses: bool) -> dict:
        """The cap no student can lift: a lower max-length-bytes of their own applies, a higher one does not.

        `refuses`: the broker takes `overflow` in an operator policy (RabbitMQ 4; 3.10 says it is "not a
        recognised policy setting"). Without it the refusal comes from the policy of the same name."""
        definition = {"max-length-bytes": self.queue_mb * MIB, **({"overflow": "reject-publish"} if refuses else {})}
        return {"pattern": ".*", "apply-to": "queues", "priority": 0, "definition": definition}

    @staticmethod
    def policy() -> dict:
        """reject-publish, so the capped queue refuses new messages (the sender is told) instead of dropping its
        oldest ones unseen, which is RabbitMQ's default at a length limit. The scripts' own labkit-QUEUE policies
        copy it (labs.amqp.management.settle_limits), so it holds on every queue.

        For RabbitMQ 3.10 only, whose operator policies refuse `overflow`. A queue takes one policy, the highest
        priority's (operator policies apply beside it): on RabbitMQ 4, where the operator policy says reject-publish
        itself, this one would only tie with an instructor's own policy at the same priority and at times win,
        as it did over lab 4's consumer timeout when the labs ran as one student."""
        return {"pattern": ".*", "apply-to": "queues", "priority": 0, "definition": {"overflow": "reject-publish"}}


@dataclass(frozen=True)
class Student:
    username: str
    password: str


def read_roster(path: Path) -> list[str]:
    """One username per line; blank lines and # comments are skipped; duplicates are refused."""
    names: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        name = raw.split("#", 1)[0].strip()
        if not name:
            continue
        if not VALID_NAME.match(name):
            raise ValueError(f"{path}:{number}: {name!r} is not a usable username (letters, digits, . _ -)")
        if name in names:
            raise ValueError(f"{path}:{number}: {name!r} is listed twice")
        names.append(name)
    if not names:
        raise ValueError(f"{path}: no usernames in the roster")
    return names


def assign_passwords(names: list[str], shared: str | None, known: dict[str, str]) -> list[Student]:
    """One shared initial password, or the one already handed out (re-runs keep them), or a new random one."""
    return [Student(name, shared or known.get(name) or new_password()) for name in names]


def new_password() -> str:
    """A random password that no command line mistakes for an option: one in 64 of token_urlsafe's starts with '-',
    which rabbitmqctl, for one, parses as a switch."""
    password = secrets.token_urlsafe(12)
    while password.startswith("-"):
        password = secrets.token_urlsafe(12)
    return password


def users_to_keep(names: list[str], on_broker: set[str], known: dict[str, str], shared: str | None,
                  reset: bool) -> frozenset[str]:
    """The students who already have an account whose password this run does not know (no CSV row, no shared
    password): a new random one would lock them out mid-course, so they keep theirs unless `reset` says otherwise."""
    if shared is not None or reset:
        return frozenset()
    return frozenset(name for name in names if name in on_broker and name not in known)


def read_passwords(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["username"]: row["password"] for row in csv.DictReader(handle)}


def write_passwords(path: Path, students: list[Student]) -> None:
    """The instructor's list to hand out; readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["username", "password", "vhost"])
        writer.writerows([s.username, s.password, s.username] for s in students)


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)), 4-byte salt."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode()


def definitions(students: list[Student], default_queue_type: str | None = None, tags: tuple[str, ...] = (),
                keep_users: frozenset[str] = frozenset(), limits: ClassLimits | None = None,
                operator_overflow: bool = False) -> dict:
    """A RabbitMQ definitions document: importable with rabbitmqctl import_definitions, or loaded at boot.

    With a default queue type, each student's vhost gives that type to queues declared without x-queue-type. The
    tags: management lets students read their own vhost in the management UI and HTTP API; policymaker lets them set
    policies there (the scripts' --delivery-limit becomes one). Users in `keep_users` are left out of "users" (their
    vhost and permissions stay): importing them would give them a password they were never handed. With limits,
    each vhost gets them as the runtime parameters both RabbitMQ 3.10 and 4 import (vhost-limits, operator_policy),
    its policy (both named CLASS_CAP: the scripts' nack line recognises the class's cap by it), and each user its
    user limits."""
    vhost_metadata = {"metadata": {"default_queue_type": default_queue_type}} if default_queue_type else {}
    user_limits = {"limits": limits.user_limits()} if limits else {}
    document = {
        "users": [{"name": s.username, "password_hash": password_hash(s.password),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": list(tags), **user_limits}
                  for s in students if s.username not in keep_users],
        "vhosts": [{"name": s.username, **vhost_metadata} for s in students],
        "permissions": [{"user": s.username, "vhost": s.username, "configure": ".*", "write": ".*", "read": ".*"}
                        for s in students],
    }
    if limits:
        document["parameters"] = [
            parameter for s in students for parameter in (
                {"vhost": s.username, "component": "vhost-limits", "name": "limits", "value": limits.vhost_limits()},
                {"vhost": s.username, "component": "operator_policy", "name": CLASS_CAP,
                 "value": limits.operator_policy(operator_overflow)})]
        if not operator_overflow:  # 3.10: the refusal needs a policy of its own (see ClassLimits.policy)
            document["policies"] = [{"vhost": s.username, "name": CLASS_CAP, **limits.policy()} for s in students]
    return document


def cap_queues(api, vhost: str, limits: ClassLimits, operator_overflow: bool) -> None:
    """The class's cap on the queues of one vhost, set through the management API (`api`: labs.amqp.admin.AdminAPI)
    as provisioning's import sets it: for a vhost made otherwise, such as a lab's own."""
    where = f"{api.quote(vhost)}/{api.quote(CLASS_CAP)}"
    api.request("PUT", f"/api/operator-policies/{where}", limits.operator_policy(operator_overflow))
    if not operator_overflow:
        api.request("PUT", f"/api/policies/{where}", limits.policy())


def limits_line(limits: ClassLimits | None) -> str:
    if limits is None:
        return ("no limits: one student's flood or connection loop can block the whole class (leave out --no-limits "
                "to cap each student)")
    return (f"limits for each student: queues refuse new messages past {limits.queue_mb} MiB, at most "
            f"{limits.connections} connections and {limits.queues} queues")


STUDENTS_PER_IMPORT = 10  # a new vhost costs the broker 0.15 s or more: 200 in one import outlast the client's 30 s


def in_parts(document: dict, per_part: int = STUDENTS_PER_IMPORT) -> list[dict]:
    """The definitions split into documents of at most `per_part` students each (their users, vhosts, permissions).

    One import of a whole class of 200 took 31 s on a 2-core machine: the client gave up at 30 s, the broker then
    dropped the request midway, and the class was left with vhosts but without permissions. Each part is quick."""
    vhosts = document["vhosts"]
    parts = []
    for start in range(0, len(vhosts), per_part):
        names = {vhost["name"] for vhost in vhosts[start:start + per_part]}
        part = {"users": [user for user in document["users"] if user["name"] in names],
                "vhosts": vhosts[start:start + per_part]}
        for key in ("permissions", "parameters", "policies"):  # each student's grants, limits and cap go with them
            if key in document:
                part[key] = [each for each in document[key] if each["vhost"] in names]
        parts.append(part)
    return parts
