"""Lab 2, Work queues: several workers share one queue, round-robin, and a worker added later shares what follows."""
from __future__ import annotations

from labs.amqp.connection import Event
from labs.drive.processes import numbered
from labs.scenarios.helpers import IDLE_UNTIL_SENT, QUICK
from labs.scenarios.runner import Context


def work_queues(lab: Context) -> None:
    """Three workers split nine messages round-robin; a worker started mid-run shares what is sent after it joins."""
    run = lab.run("tasks")
    for n in (1, 2, 3):
        run.worker(f"w{n}", *QUICK, *IDLE_UNTIL_SENT)
    run.wait_for_consumers(3)
    run.send("--count", "9", bodies=numbered(9))
    run.finish()
    shares = sorted(sorted(int(b) for b in run.tally().bodies(Event.DONE, w)) for w in ("w1", "w2", "w3"))
    lab.claim("round-robin: 3 workers get 3 of 9 messages each, every third one",
              shares == [[1, 4, 7], [2, 5, 8], [3, 6, 9]], f"shares {shares}")

    later = lab.run("more-tasks")
    later.worker("w1", *QUICK, *IDLE_UNTIL_SENT)
    later.wait_for_consumers(1)
    later.send("--count", "6", "--length", "6", bodies=numbered(6, 6))
    later.worker("w2", *QUICK, *IDLE_UNTIL_SENT)
    later.wait_for_consumers(2)
    later.send("7", "8", "9", "10", "11", "12", bodies=[str(n) for n in range(7, 13)])
    later.finish()
    joined = later.tally().bodies(Event.DONE, "w2")
    lab.claim("a worker added while work is running shares the messages sent after it joined",
              len(joined) == 3 and all(int(b.rstrip(".")) > 6 for b in joined), f"w2 processed {joined}")
