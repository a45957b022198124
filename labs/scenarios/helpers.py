"""What the labs' scenarios share: the workers' pace and idle exits, and waiting for what a run should reach."""
from __future__ import annotations

from typing import Optional

from labs.amqp.connection import Event
from labs.drive.event_log import EventTally
from labs.drive.wait import wait_until
from labs.scenarios.runner import Context

QUICK = ("--seconds-per-char", "0.05")  # the handouts use the real 1 s per character
# The runner stops its workers with Ctrl-C once the event log shows their work done (Run.finish); an idle exit is
# the backstop, for a worker that gets nothing.
IDLE = ("--idle-exit", "1.5")
# Workers started before the messages: their idle clock runs while the other workers start and the sender connects,
# which took over 1.5 s on a busy 2-core machine (lab 2's first worker left before the send and got nothing).
IDLE_UNTIL_SENT = ("--idle-exit", "15")


def settled(tally: EventTally) -> bool:
    """Every message sent is processed or was lost by a worker (dropped on purpose: --lose-every)."""
    accounted = tally.processed | set(tally.bodies(Event.LOST))  # once, not once per body: labs poll this
    return all(body in accounted for body in tally.sent)


def wait_for_count(lab: Context, queue: str, count: int, timeout: float = 15) -> Optional[int]:
    """Ready messages in the queue once it holds `count`, or what it holds after `timeout` (None: no such queue)."""
    matched = wait_until(lambda: (found := lab.ready(queue)) == count and (found,), timeout,
                         f"{count} messages in {queue!r}", interval=0.2, or_last=True)
    return matched[0] if matched else lab.ready(queue)
