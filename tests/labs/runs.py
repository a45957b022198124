"""Running `python -m labs` as an instructor does, on the suite's broker handed over as a classroom broker."""
from __future__ import annotations

import re
import subprocess
import sys

from labs.brokers.broker import Broker
from labs.settings import child_environment
from tests.helpers import ROOT


def labs_command(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labs", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def given_broker_env(broker: Broker, **extra: str) -> dict:
    """The suite's broker handed over as a classroom broker would be: AMQP_URL, management URL, rabbitmqctl."""
    env = child_environment(AMQP_URL=broker.url(), RABBITMQ_MANAGEMENT_URL=broker.admin.base_url)
    if broker.control is not None:
        env["LABKIT_RABBITMQCTL"] = broker.control.command_line()
    env.update(extra)
    return env


def claims(stdout: str) -> list[str]:
    return re.findall(r"^  (PASS|FAIL|SKIP): ", stdout, re.M)
