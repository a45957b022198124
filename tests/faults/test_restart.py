"""Durability and reconnection across a real broker restart."""
from __future__ import annotations

import re
import signal

import pika
import pytest

from labs.amqp.connection import Event
from tests.helpers import wait_until

pytestmark = pytest.mark.restart


def exists(space, queue: str) -> bool:
    try:
        space.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False


def test_durable_queue_with_persistent_messages_survives_a_restart(space, restartable, rabbitmq_version):
    space.send("--queue", "kept", "--persistent", "--count", "5")  # a durable queue, the default
    space.send("--queue", "kept-but-transient-messages", "--count", "5")
    space.send("--queue", "quorum-keeps-all", "--queue-type", "quorum", "--count", "5")
    transient_permitted = rabbitmq_version < (4, 0)  # the suite's 4.3 refuses them, as the coming releases will
    if transient_permitted:
        space.send("--queue", "forgotten", "--transient", "--persistent", "--count", "5")
    else:
        refused = space.send("--queue", "forgotten", "--transient", "--persistent", "--count", "5", check=False)
        assert refused.returncode == 12 and "does not permit transient (non-durable) queues" in refused.stderr

    restartable.restart()

    assert space.ready("kept") == 5  # durable queue, persistent messages: all there
    assert space.ready("kept-but-transient-messages") == 0  # the queue survives, non-persistent messages do not
    assert space.ready("quorum-keeps-all") == 5  # a quorum queue keeps every message, persistent or not
    assert not exists(space, "forgotten")  # a non-durable queue is gone, messages and all (or never made)


def test_worker_reconnects_after_a_broker_restart_and_finishes_the_queue(space, restartable):
    space.send("--queue", "jobs", "--durable", "--persistent", "--count", "8", "--length", "3")
    worker = space.start_worker("survivor", "--queue", "jobs", "--durable", "--acknowledge", "--prefetch", "1",
                                "--seconds-per-char", "0.1", "--idle-exit", "60", "--retry-for", "60")
    worker.wait_for_events(Event.DONE, 1)

    restartable.restart()

    # Not its idle exit: on a busy machine the queue can be done before the broker goes down, and an idle worker
    # must see the restart too. It has, once it reconnected and finished the queue; then it is stopped cleanly.
    wait_until(lambda: "reconnected to" in worker.output and len(set(worker.bodies(Event.DONE))) == 8, 120,
               "the worker to reconnect and finish the queue")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert re.search(r"connection to 127.0.0.1:\d+ lost", worker.output) and "reconnected to 127.0.0.1:" in worker.output
    done = set(worker.bodies(Event.DONE))
    assert done == {str(n).ljust(3, ".") for n in range(1, 9)}
    wait_until(lambda: space.ready("jobs") == 0, 10, "an empty queue")
