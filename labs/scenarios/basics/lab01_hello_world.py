"""Lab 1, Hello world: the same three messages from ipython-style pika and from the scripts."""
from __future__ import annotations

import ast

from labs.amqp.connection import Event
from labs.drive.processes import wait_all
from labs.scenarios.helpers import QUICK
from labs.scenarios.runner import Context


def hello_world(lab: Context) -> None:
    """The handout's two ipython sessions (labs/handouts/snippets/01_*.py), then the same with the two scripts."""
    sent = [lab.snippet("01_send.py") for _ in range(3)]  # "run it three times", as the handout says
    result = lab.snippet("01_receive.py", until_lines=3, timeout=10)
    received = shown_bodies(result.stdout)
    output = "".join(each.stdout + each.stderr for each in sent) + result.stdout + result.stderr
    lab.claim("three messages published from ipython-style pika arrive at a pika consumer",
              received == [b"Hello World!"] * 3, str(received) if received else output.strip()[-200:])
    run = lab.run("hello")
    run.send("Hello World!", bodies=["Hello World!"])
    worker = run.worker(None, "--max-messages", "1", *QUICK)  # no --name, as the handout types it: worker-PID
    wait_all([worker], 30)
    lab.claim("qprocessor.py receives what sender.py sent", run.tally().bodies(Event.DONE) == ["Hello World!"])
    lab.claim("the queue is empty afterwards", lab.ready("hello") == 0)


def shown_bodies(output: str) -> list[bytes]:
    """The bodies the handout's consumer printed, one `received b'...'` line each; none when a line is not one."""
    lines = output.splitlines()
    if not all(line.startswith("received b") for line in lines):
        return []
    return [ast.literal_eval(line.removeprefix("received ")) for line in lines]
