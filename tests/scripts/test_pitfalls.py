"""The handouts' pitfalls, each observed on the broker as the handout tells students to observe it."""
from __future__ import annotations

import signal
import time

import pytest

from labs.amqp.connection import Event
from tests.helpers import wait_until


def unacked(space, queue: str, count: int, ready: int) -> dict:
    """Wait until the management API shows `count` unacknowledged and `ready` ready messages (lab 7's command)."""
    return wait_until(lambda: (s := space.queue_stats(queue)).get("messages_unacknowledged") == count
                      and s.get("messages_ready") == ready and s, 15, f"{count} unacked and {ready} ready in {queue}")


def test_purge_leaves_unacknowledged_messages_which_come_back_when_their_worker_goes(space):
    # Lab 7: messages a worker holds are not ready, so a purge does not touch them.
    space.send("--queue", "held", "--count", "10", "--length", "3")
    holder = space.start_worker("holder", "--queue", "held", "--acknowledge", "--prefetch", "3",
                                "--seconds-per-char", "10")
    holder.wait_for_events(Event.RECEIVED, 1)
    wait_until(lambda: space.ready("held") == 7, 10, "3 messages in the worker's hands")

    assert "purged 7 messages from queue 'held'" in space.send("--purge", "--queue", "held").stdout

    unacked(space, "held", 3, 0)
    holder.process.kill()  # the worker goes (a crash, here): what it held is back
    holder.wait()
    wait_until(lambda: space.ready("held") == 3, 10, "the 3 held messages back in the queue")
    steady = space.start_worker("steady", "--queue", "held", "--seconds-per-char", "0", "--max-messages", "3")
    assert steady.wait() == 0
    assert sorted(steady.bodies(Event.DONE)) == ["1..", "2..", "3.."]
    assert all(r["redelivered"] for r in steady.events(Event.RECEIVED))


def test_a_worker_that_never_acks_stops_receiving_at_its_prefetch_limit(space):
    # Lab 4: every delivery dropped without an ack; the broker stops at 3 unacknowledged.
    space.send("--queue", "stuck", "--count", "10")
    worker = space.start_worker("never-acks", "--queue", "stuck", "--acknowledge", "--lose-every", "1",
                                "--lose-mode", "drop", "--prefetch", "3", "--seconds-per-char", "0")
    worker.wait_for_events(Event.LOST, 3)
    unacked(space, "stuck", 3, 7)
    time.sleep(1)  # room for a 4th delivery, which must not come
    assert worker.bodies(Event.RECEIVED) == ["1", "2", "3"]
    assert space.ready("stuck") == 7

    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    wait_until(lambda: space.ready("stuck") == 10, 10, "the 3 unacknowledged messages back")


def test_auto_ack_ignores_prefetch(space):
    # Lab 5: with auto-ack nothing is ever unacknowledged, so --prefetch 1 limits nothing.
    space.send("--queue", "greedy", "--count", "6", "--length", "4")
    worker = space.start_worker("greedy", "--queue", "greedy", "--prefetch", "1", "--seconds-per-char", "2.5")
    worker.wait_for_events(Event.RECEIVED, 1)
    stats = wait_until(lambda: (s := space.queue_stats("greedy")).get("messages") == 0 and s, 10,
                       "the broker to hand over the whole queue")
    assert stats["messages_unacknowledged"] == 0
    assert len(worker.events(Event.RECEIVED)) == 1 and worker.events(Event.DONE) == []  # still on its first, 10 s long
    assert space.ready("greedy") == 0

    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert worker.bodies(Event.ABANDONED) == ["1..."]
    assert worker.bodies(Event.LOST) == ["2...", "3...", "4...", "5...", "6..."]  # pushed to it, and gone with it


@pytest.mark.parametrize("prefetch", ["0", "2"])
def test_a_worker_started_late_gets_nothing_already_dispatched(space, prefetch):
    # Lab 2: the broker pushes waiting messages to the workers present; a latecomer gets none of those.
    limit = ("--prefetch", prefetch) if prefetch != "0" else ()  # "0": no option at all, as lab 2 runs it
    work = ("--queue", "early", "--acknowledge", *limit, "--seconds-per-char", "0.2")
    early = space.start_worker("early", *work)
    space.wait_for_consumers("early", 1)
    space.send("--queue", "early", "--count", "6", "--length", "5")  # 1 s each
    early.wait_for_events(Event.RECEIVED, 1)
    late = space.start_worker("late", *work)
    space.wait_for_consumers("early", 2)
    assert len(early.events(Event.DONE)) < 6, "the late worker joined after the work: the test proves nothing"
    dispatched = ["1....", "2...."] if prefetch == "2" else [f"{n}...." for n in range(1, 7)]
    if prefetch == "0":
        assert space.ready("early") == 0  # lab 2's observation: nothing ready, all in the early worker's hands

    wait_until(lambda: len(early.events(Event.DONE)) + len(late.events(Event.DONE)) == 6, 30, "all 6 done")
    assert not set(late.bodies(Event.RECEIVED)) & set(dispatched), "the late worker got a dispatched message"
    assert set(dispatched) <= set(early.bodies(Event.DONE))
    if prefetch == "2":
        assert late.bodies(Event.DONE), "with a prefetch limit the late worker shares what was still waiting"
