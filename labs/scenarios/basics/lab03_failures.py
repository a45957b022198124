"""Lab 3, Failures: a worker that loses messages with auto-ack loses them for good."""
from __future__ import annotations

from typing import Optional

from labs.amqp.connection import Event
from labs.drive.processes import numbered
from labs.drive.wait import wait_until
from labs.scenarios.helpers import IDLE, QUICK, settled
from labs.scenarios.runner import Context


def failures(lab: Context) -> None:
    """An auto-ack worker that drops every third message loses it for good: the queue keeps nothing."""
    run = lab.run("fragile")
    run.send("--count", "12", bodies=numbered(12))
    run.worker("w1", *QUICK, "--lose-every", "3", *IDLE)
    run.finish(until=settled)
    tally = run.tally()
    lab.claim("auto-ack with --lose-every 3 loses 4 of 12", tally.bodies(Event.LOST) == ["3", "6", "9", "12"],
              f"lost {tally.bodies('lost')}")
    # The management API samples its counts: wait for a sample taken after the worker finished.
    def emptied(stats: dict) -> Optional[dict]:
        return stats if (stats.get("messages_ready"), stats.get("messages_unacknowledged")) == (0, 0) else None

    stats = emptied(lab.stats("fragile")) or wait_until(
        lambda: emptied(lab.stats("fragile", settle=0)), 15, "queue fragile to be empty", interval=0.5,
        or_last=True) or lab.stats("fragile", settle=0)
    lab.claim("the lost messages are gone for good: nothing ready or unacknowledged remains",
              stats.get("messages_ready") == 0 and stats.get("messages_unacknowledged") == 0,
              f"ready {stats.get('messages_ready')}, unacknowledged {stats.get('messages_unacknowledged')}")
