"""Lab 0, Setup: handout 0's settings block, typed into bash as a student types it with the values their instructor
hands out. What it sets is what every later lab reads: the scripts and lab 1's ipython code the RABBITMQ_* variables,
rabbitqueue.py and the Jobs API AMQP_URL, lab 10 REDIS_URL and PORT. `labs run --as-student` runs the labs with it."""
from __future__ import annotations

import re
import subprocess
from typing import Optional

from labs.paths import HANDOUTS

SETUP = HANDOUTS / "00-setup.md"
LAB0_SETTINGS = ("RABBITMQ_", "AMQP_URL", "REDIS_URL", "PORT")  # the variables handout 0 sets for the later labs


class SettingsBlockFailed(RuntimeError):
    """Handout 0's block does not run in bash as shown."""


def settings_block() -> str:
    """Handout 0's shell block that sets the environment every later lab reads."""
    found = re.search(r"^```sh\n(# shell 1\nexport RABBITMQ_HOST=.*?)^```$", SETUP.read_text(), re.M | re.S)
    if not found:
        raise SettingsBlockFailed("handout 0 shows no block setting RABBITMQ_HOST")
    return found.group(1)


def typed_settings(host: str, port: int, management_url: str, username: str, password: str,
                   redis_address: Optional[str] = None) -> dict[str, str]:
    """The variables handout 0's block sets, typed into bash with these values where the handout has its example
    ones (localhost, 5672, alice, the management API on localhost:15672, the class's Redis on localhost:6379) and the
    password read from the keyboard, as the block reads it. Only PATH comes from outside: what the student's login
    shell already has."""
    block = (settings_block().replace("http://localhost:15672", management_url)
             .replace("RABBITMQ_PORT=5672", f"RABBITMQ_PORT={port}").replace("alice", username)
             .replace("RABBITMQ_HOST=localhost", f"RABBITMQ_HOST={host}"))
    if redis_address:
        block = block.replace("@localhost:6379/", f"@{redis_address}/")
    typed = subprocess.run(["bash", "-c", block + "\nenv -0"], input=password + "\n", capture_output=True, text=True,
                           timeout=30, env={"PATH": "/usr/bin:/bin"})
    if typed.returncode:
        raise SettingsBlockFailed(f"handout 0's settings block failed in bash: {typed.stderr.strip()}")
    return {key: value for key, value in (line.split("=", 1) for line in typed.stdout.split("\0") if "=" in line)
            if key.startswith(LAB0_SETTINGS)}
