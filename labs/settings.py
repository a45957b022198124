"""The kit's own settings, read from the environment in this one place, and the environment its children get.

AMQP_URL                 the broker to use (amqp://user:pass@host:port/vhost); unset: a private local node
RABBITMQ_MANAGEMENT_URL  that broker's management API (default http://HOST:15672)
LABKIT_RABBITMQCTL       a rabbitmqctl command line for that broker, e.g. "sudo rabbitmqctl -n rabbit@host"
RABBITMQ_BIN             where rabbitmq-server and rabbitmqctl are installed (default /usr/lib/rabbitmq/bin)
"""
from __future__ import annotations

import functools
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

# Variables that carry a connection: a child process must get only the ones its parent hands it on purpose.
CONNECTION_PREFIXES = ("RABBITMQ_", "AMQP_")


@dataclass(frozen=True)
class Settings:
    amqp_url: Optional[str]
    management_url: Optional[str]
    rabbitmqctl: Optional[tuple[str, ...]]
    rabbitmq_bin: Path

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        ctl = environ.get("LABKIT_RABBITMQCTL")
        return cls(amqp_url=environ.get("AMQP_URL") or None,
                   management_url=environ.get("RABBITMQ_MANAGEMENT_URL") or None,
                   rabbitmqctl=tuple(shlex.split(ctl)) if ctl else None,
                   rabbitmq_bin=Path(environ.get("RABBITMQ_BIN") or "/usr/lib/rabbitmq/bin"))


@functools.lru_cache(maxsize=None)
def settings() -> Settings:
    """The settings of this process, read once."""
    return Settings.from_environment()


def child_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any RABBITMQ_* or AMQP_* variable, plus `extra`.

    Children (sender.py, qprocessor.py, the labs' snippets, python -m labs in the tests) read their connection from
    those variables, so each gets exactly the connection its parent gives it and nothing inherited by accident.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(CONNECTION_PREFIXES)}
    env.update(extra)
    return env
