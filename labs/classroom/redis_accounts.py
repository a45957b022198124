"""Each student's account on the class's Redis, lab 10's job store: `class provision --redis URL` makes them and
`class remove --redis URL` takes them away.

An account is a Redis ACL user named as the student, with the student's broker password, that may touch only keys
beginning with its name and a colon (where the Jobs API keeps its records: labs/jobs/jobs.py) and run no command
Redis calls dangerous (FLUSHALL, KEYS, CONFIG, ...). So students need not install Redis on the login server, and no
student reads or wipes a classmate's jobs. Redis has no memory limit per user: the server's maxmemory is the class's
(docs/classroom.md).
"""
from __future__ import annotations

import contextlib
import urllib.parse
from typing import TYPE_CHECKING, Iterator

from labs.classroom.provision import Student

if TYPE_CHECKING:
    import redis  # imported where used: 50 ms that every `python -m labs` would pay, for the one option that uses it


class RedisUnreachable(Exception):
    """Nothing answers at the class's Redis URL."""


class RedisRefused(Exception):
    """The class's Redis refuses the URL's account or its ACL commands (Redis 6 or newer, an administrator)."""


def student_rules(name: str, keep_password: bool = False) -> list[str]:
    """What a student may do, beside their password: their own keys, every command but the dangerous ones, no
    pub/sub channel. All an earlier run granted is cleared first (`reset`, or all but the password when it is kept),
    and the channels explicitly: `reset` grants every channel on a Redis whose acl-pubsub-default says so."""
    clear = ["resetkeys", "-@all"] if keep_password else ["reset"]
    return [*clear, "resetchannels", "on", f"~{name}:*", "+@all", "-@dangerous"]


def shown(url: str) -> str:
    """The URL without its password, for a line on the terminal."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{host}:{parts.port or 6379}"))


@contextlib.contextmanager
def reaching(url: str) -> Iterator["redis.Redis"]:
    """A client for the class's Redis, and its failures as RedisUnreachable or RedisRefused with one line each."""
    import redis
    try:
        client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10)
    except ValueError as exc:
        raise RedisUnreachable(f"not a Redis URL: {shown(url)} ({exc})") from None
    try:
        with contextlib.closing(client):
            client.ping()
            yield client
    except redis.AuthenticationError as exc:  # before ConnectionError, of which redis-py makes it a kind
        raise RedisRefused(f"Redis at {shown(url)} refuses the URL's account: {exc}") from None
    except redis.ConnectionError as exc:
        raise RedisUnreachable(f"cannot reach Redis at {shown(url)}: {exc}") from None
    except redis.ResponseError as exc:  # NOPERM for a user without ACL rights; an unknown command before Redis 6
        raise RedisRefused(f"Redis at {shown(url)} refuses to manage accounts ({exc}): the URL needs an "
                           "administrator of Redis 6 or newer, e.g. redis://default:PASSWORD@HOST:6379/0") from None


def reserved(url: str) -> set[str]:
    """Names no student account may take: Redis's own administrator and the account provisioning logs in as."""
    return {"default", urllib.parse.unquote(urllib.parse.urlsplit(url).username or "default")}


def provision_redis(url: str, students: list[Student], kept: frozenset[str]) -> list[str]:
    """Give each student their account, with their password; a student in `kept` (whose password this run does not
    know) keeps the password of the account they have. The lines to print: who has none, and whether the accounts
    outlive a restart of Redis."""
    import redis
    lines, given, taken = [], 0, reserved(url)
    with reaching(url) as client:
        existing = set(client.acl_users())
        batch = client.pipeline(transaction=False)  # one round trip for the class, not one a student
        for student in students:
            name = student.username
            if name in taken:
                lines.append(f"no Redis account for {name}: Redis's own administrator has that name")
            elif name not in kept:
                batch.execute_command("ACL", "SETUSER", name, *student_rules(name), f">{student.password}")
                given += 1
            elif name in existing:  # its rules as this run gives them, its password as it is
                batch.execute_command("ACL", "SETUSER", name, *student_rules(name, keep_password=True))
                given += 1
            else:
                lines.append(f"no Redis account for {name}: their password is not in the CSV (--reset-passwords "
                             "gives them a new one on both)")
        batch.execute()
        try:
            client.execute_command("ACL", "SAVE")
            lines.append(f"Redis accounts for {given} students at {shown(url)}, saved to its ACL file")
        except redis.ResponseError as exc:  # no aclfile configured (or users in redis.conf)
            lines.append(f"Redis accounts for {given} students at {shown(url)}, kept until Redis restarts ({exc}): "
                         "give it an aclfile, or provision again after a restart")
    return lines


def remove_redis(url: str, names: list[str], dry_run: bool) -> list[str]:
    """Remove each student's account and every key under their name; a line each."""
    import redis
    lines, taken = [], reserved(url)
    with reaching(url) as client:
        existing = set(client.acl_users())
        keys_of: dict[str, list[str]] = {name: [] for name in names if name not in taken}
        for key in client.scan_iter(count=1000):  # one pass over the keys for the class, not one a student
            owner, mine, _ = key.partition(":")
            if mine and owner in keys_of:
                keys_of[owner].append(key)
        for name in names:
            keys = keys_of.get(name)
            if keys is None:
                lines.append(f"kept Redis account {name}: Redis's own administrator")
                continue
            if name not in existing and not keys:
                lines.append(f"no Redis account {name}")
                continue
            if not dry_run:
                for start in range(0, len(keys), 500):
                    client.delete(*keys[start:start + 500])
                if name in existing:
                    client.execute_command("ACL", "DELUSER", name)
            verb = "would remove" if dry_run else "removed"
            lines.append(f"{verb} Redis account {name} and its {len(keys)} keys")
        if not dry_run:
            with contextlib.suppress(redis.ResponseError):  # no aclfile: the accounts lived in memory only
                client.execute_command("ACL", "SAVE")
    return lines
