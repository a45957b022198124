"""Lab 8, Heartbeats: plain pika blocked past two heartbeats loses its connection; the worker does not."""
from __future__ import annotations

from labs.amqp.connection import Event
from labs.drive.processes import wait_all
from labs.scenarios.runner import Context


def heartbeats(lab: Context) -> None:
    """The handout's blocked ipython consumer (labs/handouts/snippets/08_blocked.py), then qprocessor.py."""
    result = lab.snippet("08_blocked.py")
    outcome = "survived" if result.returncode == 0 else raised(result.stderr)
    lab.claim("plain pika blocked for 8 s under a 2 s heartbeat loses its connection",
              outcome in ("StreamLostError", "ConnectionResetError", "ConnectionClosedByBroker",
                          "AMQPHeartbeatTimeout", "ChannelWrongStateError"), outcome or result.stderr[-200:])
    run = lab.run("heavy")
    worker = run.worker("patient", "--acknowledge", "--heartbeat", "2", "--seconds-per-char", "0.8",
                        "--max-messages", "1", "--idle-exit", "15")
    wait_all([worker], 60)
    tally = run.tally()
    lab.claim("qprocessor.py finishes the same 8 s of work under the same heartbeat",
              tally.bodies(Event.DONE) == ["slow work"] and tally.redelivered == 1,
              f"processed {tally.bodies('done')}, redelivered {tally.redelivered} time(s) after the plain consumer "
              f"lost it, lost {len(tally.bodies('lost'))}")


def raised(stderr: str) -> str:
    """The name of the exception a traceback ends with ("pika.exceptions.StreamLostError: ..." gives
    StreamLostError), or "" when stderr does not end with one."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    name = last.split(":", 1)[0].rsplit(".", 1)[-1]
    return name if name.isidentifier() and ":" in last else ""
