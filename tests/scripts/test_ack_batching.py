"""The worker acks several finished deliveries in one basic.ack (multiple=True), never one whose work is not done.

Measurements live in the benchmark; these tests prove what the batching must keep: ack after work, per message.
"""
from __future__ import annotations

import signal

from labs.amqp.connection import Event
from tests.helpers import wait_until


def drain(space, queue: str) -> list[str]:
    """Take every ready message off the queue (basic.get with auto-ack) and return the bodies."""
    channel, bodies = space.channel(), []
    while True:
        method, _properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body.decode())


def test_a_worker_killed_mid_work_at_prefetch_100_acked_only_finished_messages(space):
    # 40 messages of 0.06 s each, all prefetched at once: killed mid-work, the worker holds one in progress and
    # about thirty not yet started. None of those may have been acked; every one comes back.
    space.send("--queue", "killed", "--count", "40", "--length", "3")
    worker = space.start_worker("killed", "--queue", "killed", "--acknowledge", "--prefetch", "100",
                                "--seconds-per-char", "0.02")
    worker.wait_for_events(Event.DONE, 5)
    worker.signal(signal.SIGKILL)
    worker.wait(10)
    done, received = set(worker.bodies(Event.DONE)), worker.bodies(Event.RECEIVED)
    sent = [str(n).ljust(3, ".") for n in range(1, 41)]
    not_done = [body for body in sent if body not in done]
    assert len(received) > len(done) and len(not_done) >= 20, (received, done)  # killed mid-work, early on

    wait_until(lambda: space.consumers("killed") == 0, 10, "the killed worker's consumer gone")
    # The broker requeues the unacked deliveries of a dead connection: at least every unfinished message.
    wait_until(lambda: space.ready("killed") >= len(not_done), 10, f"{len(not_done)} unfinished messages back")
    back = drain(space, "killed")
    assert set(not_done) <= set(back), sorted(set(not_done) - set(back))
    # Finished ones were acked as their work ended: at most the last, its ack possibly cut off, comes back too.
    assert len(set(back) & done) <= 1, sorted(set(back) & done)


def test_a_lost_delivery_stays_unacked_while_the_ones_after_it_are_acked_in_batches(space):
    # No work time and prefetch 100: deliveries wait in the buffer, so acks go out several at a time; a multiple
    # ack past a dropped (held) delivery would ack it too, and it would never come back.
    space.send("--queue", "held", "--count", "30")
    worker = space.start_worker("holder", "--queue", "held", "--acknowledge", "--prefetch", "100",
                                "--seconds-per-char", "0", "--lose-every", "3", "--lose-mode", "drop",
                                "--max-messages", "30")
    assert worker.wait(30) == 0
    assert worker.bodies(Event.LOST) == [str(n) for n in range(3, 31, 3)]
    assert "summary: received 30, processed 20, lost 10" in worker.output
    wait_until(lambda: space.ready("held") == 10, 10, "the 10 dropped messages back in the queue")
    assert sorted(drain(space, "held"), key=int) == [str(n) for n in range(3, 31, 3)]
