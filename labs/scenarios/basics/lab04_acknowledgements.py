"""Lab 4, Acknowledgements: lost messages come back; a crashing worker restarted loses nothing; a consumer that holds a
message too long loses it (how depends on the RabbitMQ version)."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import threading

from labs.amqp.connection import Event
from labs.brokers.rabbitmqctl import read_rabbit_env, restore_rabbit_env
from labs.drive.processes import numbered, wait_all
from labs.drive.wait import wait_until
from labs.scenarios.helpers import IDLE, IDLE_UNTIL_SENT, QUICK, settled
from labs.scenarios.runner import Context

# The handout's supervised worker: it kills itself on every third message it takes.
CRASHING = ("--acknowledge", "--prefetch", "1", *QUICK, "--lose-every", "3", "--lose-mode", "crash")


def acknowledgements(lab: Context) -> None:
    """With --acknowledge, what workers drop or crash with comes back; then the consumer timeout, by version."""
    run = lab.run("reliable")
    for n in (1, 2, 3):
        run.worker(f"w{n}", "--acknowledge", *QUICK, "--lose-every", "3", *IDLE_UNTIL_SENT)
    run.wait_for_consumers(3)
    run.send("--count", "12", bodies=numbered(12))
    run.finish(until=settled)  # what the losers dropped comes back as they stop
    run.worker("steady", "--acknowledge", *QUICK, *IDLE)
    run.finish()
    tally = run.tally()
    lost = tally.bodies(Event.LOST)
    lab.claim(f"with --acknowledge, {len(tally.missing)} of 12 lost, {tally.redelivered} redelivered",
              not tally.missing and lost and tally.redelivered >= len(lost), f"dropped {len(lost)} on purpose")
    # What the handout shows: round-robin deals each worker four, each drops its third; the steady one gets them back.
    back = [e["body"] for e in tally.events if e["event"] == Event.RECEIVED and e["redelivered"]
            and e["worker"] == "steady"]
    each = [len(tally.bodies(Event.LOST, worker=f"w{n}")) for n in (1, 2, 3)]
    lab.claim("the three losing workers drop 7, 8 and 9, each its third message (each one's summary: lost 1), and the "
              "steady worker receives those three back, redelivered", sorted(lost, key=int) == ["7", "8", "9"]
              and each == [1, 1, 1] and sorted(back, key=int) == ["7", "8", "9"],
              f"dropped {sorted(lost, key=int)}, by worker {each}; redelivered to steady {sorted(back, key=int)}")

    if lab.as_student:
        supervised_in_bash(lab)
    else:
        supervised(lab)

    if lab.broker.version() >= (4, 3):
        consumer_timeout_on_43(lab)
    else:
        consumer_timeout_before_43(lab)


def supervised(lab: Context) -> None:
    """A worker that crashes on every third message, started again after each crash (Run.supervise, which names
    each start in tmux): all 12 are processed."""
    crashing = lab.run("supervised")
    # Started before the send, like lab 2's workers: with IDLE, the first worker left before a sender slowed by a busy
    # machine had sent anything (exit 0, so no restart, and nothing processed).
    crashes: list[int] = []
    supervisor = threading.Thread(target=lambda: crashes.append(crashing.supervise("w1", *CRASHING, *IDLE_UNTIL_SENT)))
    supervisor.start()
    # The worker declares the queue first: on RabbitMQ 3.10 a quorum queue that two clients declare at the same
    # moment can nack a publish that races its start (all 12, seen once on a vhost whose default type is quorum).
    crashing.wait_for_consumers(1)
    crashing.send("--count", "12", bodies=numbered(12))
    supervisor.join(120)
    tally = crashing.tally()
    lab.claim("a worker restarted after each crash still processes all 12",
              not tally.missing and sum(crashes) >= 3, f"{sum(crashes)} crashes, {tally.redelivered} redelivered")


def supervised_in_bash(lab: Context) -> None:
    """The same as the student types it: the handout's `while true; do ./qprocessor.py ...; done` in bash, and once
    the 12 are processed, one Ctrl-C, which must end the worker and the loop with it."""
    crashing = lab.run("supervised")
    loop = crashing.shell_loop("w1", *CRASHING)
    crashing.wait_for_consumers(1)
    crashing.send("--count", "12", bodies=numbered(12))
    wait_until(lambda: not crashing.tally().missing, crashing.waited(120), "the 12 to be processed", or_last=True)
    crashing.children.interrupt(loop)
    with contextlib.suppress(subprocess.TimeoutExpired):
        loop.wait(20)
    tally = crashing.tally()
    redelivered = sum(1 for e in tally.events if e["event"] == Event.RECEIVED and e["redelivered"])  # one a crash
    lab.claim("a worker restarted after each crash still processes all 12",
              not tally.missing and redelivered >= 3, f"{redelivered} redelivered after a crash")
    printed = getattr(loop, "printed", None)  # in tmux the loop prints to its pane, and only bash's end is checked
    if printed is not None:  # its last line, once the relay has read it
        wait_until(lambda: printed and "summary:" in printed[-1], 5, "the worker's summary", or_last=True)
    lab.claim("one Ctrl-C leaves the loop: the worker stops cleanly, prints its summary and ends as interrupted, and "
              "bash ends the loop instead of starting the worker again",
              loop.returncode == -signal.SIGINT and (printed is None or bool(printed) and "summary:" in printed[-1]),
              f"bash {'still loops' if loop.returncode is None else f'ended with {loop.returncode}'}"
              + (f"; the last line: {printed[-1] if printed else 'none'!r}" if printed is not None else ""))


def consumer_timeout_on_43(lab: Context) -> None:
    """RabbitMQ 4.3: quorum queues cancel a consumer that holds a delivery too long; classic ones no longer check."""
    lab.broker.admin.set_policy(lab.vhost, "short-consumer-timeout", "^slow", {"consumer-timeout": 2000})
    try:
        # The two queues side by side: the same policy matches both, and neither worker waits for the other.
        slow, classic = lab.run("slow"), lab.run("slow-classic")
        slow.send("--queue-type", "quorum", "x" * 100, bodies=["x" * 100])
        classic.send("--queue-type", "classic", "xxxx", bodies=["xxxx"])
        holder = slow.worker("holder", "--queue-type", "quorum", "--acknowledge", "--seconds-per-char", "1",
                             "--max-messages", "2")
        finisher = classic.worker("finisher", "--queue-type", "classic", "--acknowledge", "--seconds-per-char", "1",
                                  "--max-messages", "1")
        wait_all([holder, finisher], 60)
    finally:  # as the handout's instructor does after the lab: a student's later queues named slow* keep no timeout
        lab.broker.admin.delete_policy(lab.vhost, "short-consumer-timeout")
    tally = slow.tally()
    cancelled = [e for e in tally.events if e["event"] == Event.ABANDONED and e.get("reason") == "consumer cancelled"]
    redelivered = [e for e in tally.events if e["event"] == Event.RECEIVED and e["redelivered"]]
    lab.claim("4.3, quorum queue: a worker holding a message past the consumer timeout has its consumer cancelled; "
              "it abandons the job without acking and the message is redelivered",
              bool(cancelled) and bool(redelivered) and not tally.bodies(Event.DONE),
              f"{len(cancelled)} cancelled, {len(redelivered)} redelivered")

    tally = classic.tally()
    lab.claim("4.3, classic queue: the same timeout is not enforced; the 4 s job finishes and is acked once",
              tally.bodies(Event.DONE) == ["xxxx"] and tally.redelivered == 0 and not tally.bodies(Event.ABANDONED))


def consumer_timeout_before_43(lab: Context) -> None:
    """RabbitMQ 3.x to 4.2: the broker closes the channel of a consumer that holds a delivery too long."""
    if not lab.broker.controllable:
        lab.skip("a worker holding a message past the delivery acknowledgement timeout loses its channel",
                 "needs a broker the runner started, or LABKIT_RABBITMQCTL, to shorten consumer_timeout")
        return
    node = lab.broker
    # What the broker has now, read before anything changes (in the same call), so it gets exactly that back.
    originals = read_rabbit_env(node.ctl, ("consumer_timeout", "channel_tick_interval"),
                                then="application:set_env(rabbit, consumer_timeout, 2000), "
                                     "application:set_env(rabbit, channel_tick_interval, 500)")
    try:
        slow = lab.run("slow")
        slow.send("x" * 100, bodies=["x" * 100])
        holder = slow.worker("holder", "--acknowledge", "--seconds-per-char", "1", "--max-messages", "2")
        wait_all([holder], 60)
    finally:
        node.ctl("eval", restore_rabbit_env(originals) + ".")
    redelivered = [e for e in slow.tally().events if e["event"] == Event.RECEIVED and e["redelivered"]]
    lab.claim("a worker holding a message past the delivery acknowledgement timeout loses its channel; "
              "the message is redelivered", bool(slow.tally().bodies(Event.ABANDONED)) and bool(redelivered))
