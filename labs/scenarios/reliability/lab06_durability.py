"""Lab 6, Durability: durable queues and persistent messages across a broker restart."""
from __future__ import annotations

from labs.scenarios.runner import Context


def durability(lab: Context) -> None:
    """Durable, transient, quorum queues with and without persistent messages, before and after a broker restart."""
    lab.run("kept").send("--queue-type", "classic", "--persistent", "--count", "5")  # durable: the default
    lab.run("kept-but-not-persistent").send("--queue-type", "classic", "--count", "5")
    lab.run("quorum").send("--queue-type", "quorum", "--count", "5")
    mismatch = lab.run("kept").send("--queue-type", "classic", "--transient", "--count", "1", check=False)
    lab.claim("redeclaring a durable queue as transient is refused with exit code 6 and a hint",
              mismatch.returncode == 6 and "leave out --transient" in mismatch.stderr, mismatch.stderr.strip())
    transient = lab.run("forgotten").send("--transient", "--persistent", "--count", "5", check=False)
    permitted = transient.returncode == 0
    if not permitted:
        lab.claim("this broker refuses transient queues: exit code 12 and the reason in one line",
                  transient.returncode == 12 and "does not permit transient (non-durable) queues" in transient.stderr,
                  transient.stderr.strip())
    if not lab.broker.controllable:
        lab.skip("a durable queue with persistent messages survives a broker restart",
                 "needs a broker the runner started, or LABKIT_RABBITMQCTL")
        return
    lab.broker.restart()
    # What the handout has the student look at after the restart, once the management API has counted the queues
    # again (a few seconds: a student who types the command right away sees the counts empty).
    for queue in ("kept", "kept-but-not-persistent", "quorum"):
        lab.stats(queue, settle=0)
    lab.run("kept").send("--list-queues")
    lab.claim("a durable queue with persistent messages survives a broker restart: 5 of 5 there",
              lab.ready("kept") == 5)
    lab.claim("a durable queue survives, but its non-persistent messages do not: 0 of 5",
              lab.ready("kept-but-not-persistent") == 0)
    lab.claim("a quorum queue keeps every message, persistent or not: 5 of 5", lab.ready("quorum") == 5)
    if permitted:
        lab.claim("a transient queue is gone after the restart, persistent messages and all",
                  lab.ready("forgotten") is None)
