"""rabbitmqctl for one broker: for a local node by its name, or the command line LABKIT_RABBITMQCTL gives."""
from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


class RabbitmqctlFailed(RuntimeError):
    """rabbitmqctl exited with an error; the message has its command and its last line of output."""


@dataclass(frozen=True)
class Rabbitmqctl:
    command: tuple[str, ...]  # e.g. ("sudo", "rabbitmqctl", "-n", "rabbit@classroom")
    env: Optional[dict] = None  # the environment to run it in; None: this process's own

    @classmethod
    def for_node(cls, rabbitmq_bin: Path, node_name: str, env: Optional[dict] = None) -> "Rabbitmqctl":
        return cls((str(rabbitmq_bin / "rabbitmqctl"), "-n", node_name), env)

    def command_line(self) -> str:
        """The command as one string, as LABKIT_RABBITMQCTL takes it."""
        return shlex.join(self.command)

    def __call__(self, *args: str) -> str:
        result = subprocess.run([*self.command, *args], capture_output=True, text=True, env=self.env, timeout=300)
        if result.returncode:
            last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
            raise RabbitmqctlFailed(f"{shlex.join([*self.command, *args])} failed ({result.returncode}): {last}")
        return result.stdout
