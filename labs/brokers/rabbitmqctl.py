"""rabbitmqctl for one broker: for a local node by its name, or the command line LABKIT_RABBITMQCTL gives."""
from __future__ import annotations

import re
import secrets
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
    per step: each call starts an Erlang VM of its own, about half a CPU-second and most of a second of waiting.

    Should that call fail, or its printout not parse, after `then` may have changed settings, the node is given back
    what it had before raising: the caller never got the values to restore them with, and a classroom broker would
    otherwise keep a lab's shortened timeouts. The node keeps those values itself (a persistent term, marked with
    this call's own token so that an older call's are never put back), as its printout may be what failed."""
    reads = ", ".join(f"application:get_env(rabbit, {key})" for key in keys)
    if not then:
        output = ctl("eval", f"{{{reads}}}.")
        found = ENV_VALUE.findall(output)
        if len(found) != len(keys):
            raise RabbitmqctlFailed(f"rabbitmqctl eval printed {output.strip()!r}: not one setting per key of {keys}")
        return dict(zip(keys, found))
    token = secrets.token_hex(8)
    expression = f"Found = {{{reads}}}, persistent_term:put({SAVED}, {{\"{token}\", Found}}), {then}, Found."
    try:
        output = ctl("eval", expression)
    except RabbitmqctlFailed as exc:
        raise RabbitmqctlFailed(f"{exc}; {give_back_saved(ctl, keys, token)}") from None
    found = ENV_VALUE.findall(output)
    if len(found) != len(keys):
        raise RabbitmqctlFailed(f"rabbitmqctl eval printed {output.strip()!r}: not one setting per key of {keys}; "
                                f"{give_back_saved(ctl, keys, token)}")
    return dict(zip(keys, found))


# The persistent term where read_rabbit_env leaves what it read, on the node. It stays after a call that went well
# (erasing it would take one more call, another Erlang VM): a few words, replaced by the next call.
SAVED = "{labkit, rabbit_env}"


def give_back_saved(ctl: Callable[..., str], keys: Sequence[str], token: str) -> str:
    """Give the rabbit application back the settings read_rabbit_env's call `token` saved on the node (none saved:
    that call failed before `then` ran, so nothing changed); say what was done, for the error it is added to."""
    names = "[" + ", ".join(keys) + "]"
    expression = (f"case persistent_term:get({SAVED}, none) of "
                  f"{{\"{token}\", Found}} -> "
                  f"lists:foreach(fun({{Key, {{ok, Value}}}}) -> application:set_env(rabbit, Key, Value); "
                  f"({{Key, undefined}}) -> application:unset_env(rabbit, Key) end, "
                  f"lists:zip({names}, tuple_to_list(Found))), "
                  f"persistent_term:erase({SAVED}), given_back; "
                  f"_ -> unchanged end.")
    try:
        said = ctl("eval", expression)
    except RabbitmqctlFailed as exc:
        return f"and giving back the settings {names} failed too: {exc}"
    if "given_back" in said:
        return f"the settings {names} were given back what they had"
    return f"the settings {names} were not changed"


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



# What vm_memory_monitor:get_vm_memory_high_watermark() prints: a fraction of the machine's memory (0.4 on 3.10, 0.6
# on 4.3 by default), or a figure in bytes an instructor chose.
WATERMARK = re.compile(r"\d+(\.\d+)?|\{absolute,\s*\d+\}")


def memory_watermark(ctl: Callable[..., str], then: str = "") -> str:
    """The node's memory watermark as Erlang prints it (`0.4`, `{absolute,1000000000}`), read in one `rabbitmqctl
    eval` that afterwards sets the watermark `then` (an Erlang term, e.g. `0.0`), if given: what sets off the memory
    alarm (0.0) and what gives the node back what it had, each in one call (each starts an Erlang VM, about a
    second). Setting it is what `rabbitmqctl set_vm_memory_high_watermark` does."""
    setting = f", vm_memory_monitor:set_vm_memory_high_watermark({then})" if then else ""
    printed = ctl("eval", f"W = vm_memory_monitor:get_vm_memory_high_watermark(){setting}, W.").strip()
    if not WATERMARK.fullmatch(printed):
        raise RabbitmqctlFailed(f"rabbitmqctl eval printed {printed!r}: not a memory watermark")
    return printed
