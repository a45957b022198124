"""rabbitmqctl for one broker: for a local node by its name, or the command line LABKIT_RABBITMQCTL gives."""
from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence


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

    def __call__(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run([*self.command, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if result.returncode:
            last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
            raise RabbitmqctlFailed(f"{shlex.join([*self.command, *args])} failed ({result.returncode}): {last}")
        return result.stdout


# What application:get_env prints for one setting: {ok,Value} (the settings read here are numbers) or undefined.
ENV_VALUE = re.compile(r"\{ok,[^{}]*\}|undefined")


def read_rabbit_env(ctl: Callable[..., str], keys: Sequence[str], then: str = "") -> dict[str, str]:
    """The rabbit application's settings `keys`, each as application:get_env prints it ({ok,Value} or undefined),
    read in one `rabbitmqctl eval` that afterwards runs the Erlang expression `then`, if given. One call, not one
    per step: each call starts an Erlang VM of its own, about half a CPU-second and most of a second of waiting."""
    reads = ", ".join(f"application:get_env(rabbit, {key})" for key in keys)
    expression = f"Found = {{{reads}}}, {then}, Found." if then else f"{{{reads}}}."
    output = ctl("eval", expression)
    found = ENV_VALUE.findall(output)
    if len(found) != len(keys):
        raise RabbitmqctlFailed(f"rabbitmqctl eval printed {output.strip()!r}: not one setting per key of {keys}")
    return dict(zip(keys, found))


def restore_rabbit_env(originals: dict[str, str]) -> str:
    """An Erlang expression giving the rabbit application's settings back the values read_rabbit_env read."""
    return ", ".join(restore_env(key, value) for key, value in originals.items())


def restore_env(key: str, original: str) -> str:
    """An Erlang expression giving the rabbit application's `key` back the value application:get_env read."""
    if original.startswith("{ok,") and original.endswith("}"):
        return f"application:set_env(rabbit, {key}, {original[len('{ok,'):-1]})"
    if original == "undefined":
        return f"application:unset_env(rabbit, {key})"
    raise ValueError(f"cannot restore {key} from {original!r}")
