"""--max-length and --overflow: what a full queue does with one more message, as lab 12 teaches it. reject-publish
refuses it (the sender is nacked and exits 7, having counted only what the broker took), drop-head drops the oldest,
a dead-letter queue keeps what either drops; set as a policy when the user may, as queue arguments otherwise, like
--delivery-limit. Run on each RabbitMQ version by the suite."""
from __future__ import annotations

import re

from labs.amqp.connection import Event

EXIT_NOT_CONFIRMED = 7
CAPPED = ("--queue", "capped", "--queue-type", "classic", "--max-length", "3")


def bodies_in(space, queue: str) -> list[str]:
    """What the queue holds, oldest first, taken off it (the broker's view, not a worker's)."""
    channel, found = space.channel(), []
    while True:
        method, _properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return found
        found.append(body.decode())


def counted_sent(result) -> int:
    """The count of the sender's summary line ("sent 3 messages to queue ...")."""
    found = re.search(r"\bsent (\d+) messages", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    return int(found.group(1))


def test_reject_publish_refuses_what_is_past_the_limit_and_the_sender_exits_7(space):
    result = space.send(*CAPPED, "--overflow", "reject-publish", "--count", "8", check=False)
    assert result.returncode == EXIT_NOT_CONFIRMED, result.stderr
    assert counted_sent(result) == 3  # the 5 refused were never counted sent
    assert bodies_in(space, "capped") == ["1", "2", "3"]  # the first three, nothing dropped
    assert space.queue_stats("capped")["arguments"] == {"x-queue-type": "classic", "x-max-length": 3,
                                                        "x-overflow": "reject-publish"}


def test_drop_head_takes_everything_and_keeps_only_the_newest(space):
    result = space.send(*CAPPED, "--overflow", "drop-head", "--count", "8")
    assert counted_sent(result) == 8  # the sender is never told
    assert bodies_in(space, "capped") == ["6", "7", "8"]


def test_without_overflow_the_broker_drops_the_head(space):
    space.send(*CAPPED, "--count", "5")
    assert space.queue_stats("capped")["arguments"] == {"x-queue-type": "classic", "x-max-length": 3}
    assert bodies_in(space, "capped") == ["3", "4", "5"]


def test_a_dead_letter_queue_keeps_what_drop_head_drops(space):
    space.send(*CAPPED, "--overflow", "drop-head", "--dead-letter-queue", "capped-dead", "--count", "8")
    assert bodies_in(space, "capped-dead") == ["1", "2", "3", "4", "5"]
    assert bodies_in(space, "capped") == ["6", "7", "8"]


def test_reject_publish_dlx_refuses_and_dead_letters_the_new_ones(space):
    result = space.send(*CAPPED, "--overflow", "reject-publish-dlx", "--dead-letter-queue", "capped-dead",
                        "--count", "8", check=False)
    assert result.returncode == EXIT_NOT_CONFIRMED and counted_sent(result) == 3, result.stderr
    assert bodies_in(space, "capped") == ["1", "2", "3"]
    assert bodies_in(space, "capped-dead") == ["4", "5", "6", "7", "8"]


def test_a_quorum_queue_takes_reject_publish_dlx_as_drop_head(space):
    """As the option's help says: no nack, the oldest dropped and dead-lettered (RabbitMQ 3.10 and 4.3 alike)."""
    quorum = ("--queue", "capped", "--queue-type", "quorum", "--max-length", "3", "--overflow", "reject-publish-dlx",
              "--dead-letter-queue", "capped-dead")
    result = space.send(*quorum, "--count", "8")
    assert counted_sent(result) == 8
    assert bodies_in(space, "capped") == ["6", "7", "8"]
    assert bodies_in(space, "capped-dead") == ["1", "2", "3", "4", "5"]


def test_a_worker_declares_the_same_limit_and_processes_what_was_kept(space):
    space.send(*CAPPED, "--overflow", "reject-publish", "--count", "8", check=False)
    worker = space.start_worker("w", *CAPPED, "--overflow", "reject-publish", "--seconds-per-char", "0",
                                "--idle-exit", "1")
    assert worker.wait(60) == 0, worker.output
    assert worker.bodies(Event.DONE) == ["1", "2", "3"]


def test_a_policymaker_gets_the_limit_as_a_policy_and_it_holds(space):
    space.broker.admin.add_user(space.username, space.password, tags="policymaker")
    result = space.send(*CAPPED, "--overflow", "reject-publish", "--count", "5", check=False)
    assert "gives queue 'capped' max length 3 (reject-publish)" in result.stderr
    policy = next(each for each in space.broker.admin.policies(space.vhost) if each["name"] == "labkit-capped")
    assert policy["definition"] == {"max-length": 3, "overflow": "reject-publish"}
    assert space.queue_stats("capped")["arguments"] == {"x-queue-type": "classic"}
    assert result.returncode == EXIT_NOT_CONFIRMED and counted_sent(result) == 3, result.stderr


def test_overflow_without_max_length_is_a_usage_error(space):
    result = space.send("--queue", "capped", "--overflow", "drop-head", "x", check=False)
    assert result.returncode == 2 and "--overflow needs --max-length" in result.stderr
