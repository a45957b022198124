#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["pika>=1.3,<2", "click>=8.1,<9", "tenacity>=8.2,<10"]
# ///
"""Work-queue worker for the RabbitMQ lab: takes messages from a queue and works on each.

A template: work() below is the work on one message, the one function to change for work of your own. The loop that
receives each message, works on it and acknowledges it comes next, then main(), and the connection code last.

Run it as a script (./qprocessor.py --help) or import it in ipython:

    >>> import qprocessor
    >>> channel = qprocessor.connect(host="localhost", vhost="alice", username="alice", password="...")
    >>> qprocessor.receive(channel, "hello")          # one message, or None when the queue is empty
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import random
import re
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from queue import SimpleQueue
from typing import IO, Callable, NamedTuple, Optional, TypeVar

import click
import pika
import tenacity
from pika import exceptions as amqp

# The fake work's pace, set by main() from --seconds-per-char: a module setting rather than a parameter, so that
# work() keeps the one argument a student's own work needs.
SECONDS_PER_CHAR = 1.0


def work(body: bytes) -> None:
    """The work on one message. This is where your own work goes: replace this function's body with it.

    It runs in a thread of its own while the connection keeps answering the broker, so it may take as long as it
    needs; the message is acknowledged once it returns (with --acknowledge). An exception here ends the worker, and
    its message, not acknowledged, goes back to the queue.
    """
    # Fake work, as in RabbitMQ's tutorial (a second per dot there): a second per character of the body.
    if SECONDS_PER_CHAR:  # even sleep(0) costs a system call, felt by a load test's thousands of messages a second
        time.sleep(len(body) * SECONDS_PER_CHAR)


class Delivery(NamedTuple):
    """One message as the broker delivered it."""

    tag: int
    redelivered: bool
    message_id: Optional[str]
    delivery_count: Optional[int]  # quorum queues count failed deliveries (RabbitMQ 4.x: rejects and lost channels)
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Lost(Exception):
    """--lose-every: this delivery is lost on purpose, and its work never runs."""


class WorkFailed(Exception):
    """--fail-on: the work on a poison message failed."""


class Abandoned(Exception):
    """The work was cut short: a stop signal, a channel the broker closed, or a consumer it cancelled."""


def with_lab_switches(work_step: Callable[[Delivery], None], settings: WorkerSettings) -> Callable[[Delivery], None]:
    """The work on a delivery wrapped in the lab's deliberate failures, as dramatiq's middleware wraps an actor:
    --lose-every decides before the work (the delivery is lost, and the work never runs), --fail-on after it (the
    work ran, and failed). The handler only sees what came of it; without switches the work runs as it is."""
    if not settings.lose_every and settings.fail_on is None:
        return work_step
    deliveries = itertools.count(1)
    poison = settings.fail_on.encode("utf-8") if settings.fail_on is not None else None

    def switched(delivery: Delivery) -> None:
        if settings.lose_every and next(deliveries) % settings.lose_every == 0:
            raise Lost
        work_step(delivery)
        if poison is not None and poison in delivery.body:
            raise WorkFailed

    return switched


LOSE_MODES = ("drop", "crash", "requeue")
FAIL_MODES = ("requeue", "reject", "crash")
DEFAULT_QUORUM_DELIVERY_LIMIT = 20  # what RabbitMQ 4.x applies to a quorum queue declared without a limit
QUICK_WORK = 0.01  # seconds: work done sooner is simply waited for, and the acks before it still go in one batch


def receive(channel, queue: str = "hello", acknowledge: bool = True) -> Optional[bytes]:
    """Take one message from the queue (basic.get), or return None when it is empty."""
    method, _properties, body = channel.basic_get(queue=queue, auto_ack=not acknowledge)
    if method is None:
        return None
    if acknowledge:
        channel.basic_ack(method.delivery_tag)
    return body


@dataclass
class Worker:
    """Consumes one queue: each delivery is received, worked on (work(), with the lab switches around it) and
    acknowledged; every event is logged, and a lost connection is opened again."""

    settings: WorkerSettings
    queue: QueueSettings
    brokers: Brokers
    retry_for: float = 30
    events: Optional[IO[str]] = None
    tally: Tally = field(default_factory=lambda: Tally())
    stopping: bool = False
    stopped_by: Optional[int] = None  # the signal that stopped it (SIGINT: Ctrl-C)
    cancelled: bool = False  # the broker sent basic.cancel for this worker's consumer
    after_cancel: bool = False  # consuming again after a cancel: the queue must exist already
    management_url: Optional[str] = None  # where to read the policies that may limit the queue
    limits: Optional[QueueLimits] = None  # learnt at the first rejection on a quorum queue (queue_limits())
    _last_message_at: float = field(default_factory=time.monotonic)
    _quick_losses: int = 0
    # Acks of finished work not yet sent: one basic.ack with multiple=True covers them, sent once no delivery is
    # waiting in pika's buffer, and always before anything that waits, rejects, holds, crashes or exits. Only
    # messages whose work is done are ever covered: the later ones' tags are higher, and a held (lost) message
    # turns batching off for the rest of its channel.
    _ack_upto: Optional[int] = None
    _acks_waiting: int = 0
    _holding: bool = False  # this channel holds a delivery neither acked nor rejected: no multiple acks
    _work_thread: Optional[WorkThread] = None
    connection: Optional[pika.BlockingConnection] = None  # the one being consumed from, and its channel
    channel: object = None

    def __post_init__(self) -> None:
        self.work_on = with_lab_switches(self.run_work, self.settings)

    def consume(self, connection: pika.BlockingConnection) -> None:
        s, queue = self.settings, self.queue.name
        try:
            channel = connection.channel()
            self.connection, self.channel = connection, channel  # what run_work() serves while work() runs
            self.cancelled = False
            self._ack_upto, self._acks_waiting, self._holding = None, 0, False  # delivery tags start again
            # BlockingChannel.add_on_cancel_callback only fires for basic_consume callbacks, not for the consume()
            # generator used here; the underlying channel's callback fires as the frame arrives, mid-work too.
            channel._impl.add_on_cancel_callback(self.on_broker_cancel)
            if self.after_cancel:  # a queue being deleted may still answer; declaring it would bring it back
                self.require_queue(channel)
            else:
                self.queue.declare(channel)
            if s.prefetch:
                channel.basic_qos(prefetch_count=s.prefetch)
            deliveries = channel.consume(queue, auto_ack=not s.acknowledge, inactivity_timeout=0.25)
            for method, properties, body in deliveries:
                if method is None:
                    sys.stdout.flush()
                    if self.events:
                        self.events.flush()
                else:
                    outcome = self.handle(connection, channel, method, properties, body)
                    self._last_message_at = time.monotonic()  # idle time counts from the end of the work
                    if outcome == "stop":
                        break
                    if not channel.get_waiting_message_count():  # the next delivery means waiting: ack first
                        self.flush_acks(channel)
                if self.finished():
                    break
            else:  # the generator ended by itself: the broker cancelled our consumer
                raise self.cancel_explained(connection)
            if channel.is_open:
                self.flush_acks(channel)
                if not s.acknowledge:
                    self.drop_undelivered(channel, deliveries)
                channel.cancel()  # with --acknowledge, prefetched messages we will not handle go back to the queue
                channel.close()
        except (amqp.ChannelClosedByBroker, amqp.ConsumerCancelled) as exc:
            if isinstance(exc, amqp.ChannelClosedByBroker) and exc.reply_code == 406 and "inequivalent" in exc.reply_text:
                raise queue_error(exc, queue) from None
            raise ConnectionLost(f"channel closed by the broker: {exc}") from None
        except amqp.ChannelWrongStateError as exc:
            raise ConnectionLost(str(exc)) from None
        except amqp.AMQPConnectionError as exc:
            if not is_transient(exc):
                raise explain(exc, self.brokers.current) from None
            raise ConnectionLost(str(exc) or type(exc).__name__) from None

    def handle(self, connection, channel, method, properties, body: bytes) -> Optional[str]:
        """One delivery, in the shape of the tutorial's callback: receive it, work on it, acknowledge it."""
        delivery = self.received(method, properties, body)
        started = time.monotonic()
        try:
            self.work_on(delivery)  # work() in the work thread (run_work), the lab switches around it
        except Lost:
            self.flush_acks(channel)
            return self.lose(channel, delivery)
        except WorkFailed:
            self.flush_acks(channel)
            return self.fail(channel, delivery)
        except Abandoned:
            return self.abandon(connection, channel, delivery)
        # Logged before the ack: a crash between the two shows up as a duplicate, never as a silent loss.
        if self.events is not None:
            self.log(Event.DONE, delivery.message_id, body, delivery.redelivered,
                     seconds=round(time.monotonic() - started, 3))
        if self.settings.acknowledge:
            self.ack(channel, delivery.tag)
        self.tally.processed += 1
        if not self.settings.quiet:
            self.say(f"done {delivery.text!r}")
        return None

    def received(self, method, properties, body: bytes) -> Delivery:
        # The hot path of load tests: strings are only built when they will be printed or logged.
        tally, redelivered = self.tally, method.redelivered
        tally.received += 1
        tally.redelivered += redelivered
        delivery = Delivery(method.delivery_tag, redelivered, properties.message_id,
                            properties.headers.get("x-delivery-count") if properties.headers else None, body)
        if self.events is not None:
            if delivery.delivery_count is None:
                self.log(Event.RECEIVED, delivery.message_id, body, redelivered)
            else:
                self.log(Event.RECEIVED, delivery.message_id, body, redelivered,
                         delivery_count=delivery.delivery_count)
        return delivery

    def run_work(self, delivery: Delivery) -> None:
        """work() on the delivery's body in the work thread, while this thread keeps serving the connection.

        Quick work (a load test's) ends within QUICK_WORK and is simply waited for. Longer work is waited for inside
        process_data_events, which answers the broker meanwhile; the work thread wakes it through
        add_callback_threadsafe, pika's one thread-safe call. Either way the ack then goes out from this, the
        connection's, thread (pika's channels are not thread-safe), and only on an open channel (abandon() below).
        A stop signal, a closed channel or a cancelled consumer cuts the wait short: Abandoned."""
        connection, channel = self.connection, self.channel
        if not self.settings.quiet:
            note = "" if not delivery.redelivered else " (redelivered)" if delivery.delivery_count is None else \
                f" (redelivered, delivery count {delivery.delivery_count})"
            self.say(f"received {delivery.text!r}{note}")
        if self._work_thread is None:
            self._work_thread = WorkThread()
        job = self._work_thread.start(work, delivery.body, connection)
        if not job.over.acquire(timeout=QUICK_WORK) and not job.watch():
            self.flush_acks(channel)  # the work takes a while: what is done is acked before waiting for it
            while not job.done and not self.cut_short(channel):
                connection.process_data_events(time_limit=0.2)  # returns at once when the work thread wakes it
        if self.cut_short(channel):
            if not job.done:  # it goes on in the background: the next message gets a thread of its own
                self._work_thread.retire()
                self._work_thread = None
            raise Abandoned
        if job.error is not None:
            raise job.error

    def cut_short(self, channel) -> bool:
        """A stop signal, a channel the broker closed or a consumer it cancelled: the message in hand is given up."""
        return self.stopping or not channel.is_open or self.cancelled

    def abandon(self, connection, channel, delivery: Delivery) -> str:
        """Give up the message in hand: a stop signal, a channel the broker closed, or a consumer it cancelled."""
        self.tally.abandoned += 1
        message_id, body, redelivered, text = delivery.message_id, delivery.body, delivery.redelivered, delivery.text
        if channel.is_open:  # the messages done before this one are acked, as each was before the batching
            self.flush_acks(channel)
        if self.cancelled and channel.is_open:  # never ack late: the broker may have given it to another worker
            self.log(Event.ABANDONED, message_id, body, redelivered, reason="consumer cancelled")
            self.say(f"the broker cancelled this worker's consumer while {text!r} was in progress; not acking it")
            raise self.cancel_explained(connection)
        if not channel.is_open:  # e.g. the broker's delivery acknowledgement timeout (consumer_timeout) ran out
            self.log(Event.ABANDONED, message_id, body, redelivered, reason="channel closed")
            self.say(f"the broker closed the channel while {text!r} was in progress; it will be redelivered")
            raise ConnectionLost("the broker closed the channel: was the delivery acknowledgement timeout reached?")
        self.log(Event.ABANDONED, message_id, body, redelivered, reason="stopping")
        fate = "it goes back to the queue" if self.settings.acknowledge else "it is lost: auto-ack already removed it"
        self.say(f"stopping: abandoned {text!r}; {fate}")
        if self.settings.acknowledge:
            channel.basic_reject(delivery.tag, requeue=True)
        return "stop"

    def lose(self, channel, delivery: Delivery) -> None:
        """--lose-every: requeue the delivery, or drop it (held unacked until the channel closes), or crash."""
        s, tally = self.settings, self.tally
        if s.lose_mode == "requeue":
            self.reject(channel, delivery, requeue=True)
            return None
        tally.lost += 1
        self._holding = s.acknowledge  # held unacked until the channel closes: a multiple ack would cover it
        self.log(Event.LOST, delivery.message_id, delivery.body, delivery.redelivered, mode=s.lose_mode)
        if s.lose_mode == "crash":
            self.crash(delivery.text)
        fate = "unacknowledged until this worker disconnects" if s.acknowledge else "gone for good (auto-ack)"
        self.say(f"lost {delivery.text!r}: {fate}")
        return None

    def fail(self, channel, delivery: Delivery) -> None:
        """The work on a poison message failed: requeue it, reject it for good, or die holding it."""
        self.tally.failed += 1
        self.log(Event.FAILED, delivery.message_id, delivery.body, delivery.redelivered, mode=self.settings.fail_mode)
        self.say(f"the work on {delivery.text!r} failed")
        if self.settings.fail_mode == "crash":
            self.crash(delivery.text)
        self.reject(channel, delivery, requeue=self.settings.fail_mode == "requeue")

    def reject(self, channel, delivery: Delivery, requeue: bool) -> None:
        """Reject a message and record its fate: back in the queue, or (past the delivery limit) gone from it."""
        channel.basic_reject(delivery.tag, requeue=requeue)
        text, message_id, body, redelivered = delivery.text, delivery.message_id, delivery.body, delivery.redelivered
        # A quorum queue drops or dead-letters a message rejected once more than its limit allows, silently.
        quorum = self.queue.queue_type == "quorum" or delivery.delivery_count is not None
        limits = self.queue_limits(channel.connection) if quorum else QueueLimits(None, self.queue.dead_letter_queue)
        past_limit = limits.delivery_limit is not None and (delivery.delivery_count or 0) >= limits.delivery_limit
        if requeue and not past_limit:
            self.tally.requeued += 1
            self.log(Event.REQUEUED, message_id, body, redelivered)
            self.say(f"rejected {text!r} back to the queue")
            return
        why = f"it reached the delivery limit of {limits.delivery_limit}" if requeue else "rejected without requeue"
        target = limits.dead_letter_queue
        if target:
            self.tally.dead_lettered += 1
            self.log(Event.DEAD_LETTERED, message_id, body, redelivered, reason=why, queue=target)
            self.say(f"rejected {text!r}: {why}, so the broker moved it to queue {target!r}")
        else:
            self.tally.lost += 1
            self.log(Event.LOST, message_id, body, redelivered, mode="delivery limit" if requeue else "reject")
            self.say(f"rejected {text!r}: {why}, and with no dead-letter queue the broker drops it")

    def ack(self, channel, delivery_tag: int) -> None:
        """Acknowledge a message whose work is done: now, or with the next flush_acks()."""
        if self._holding:
            channel.basic_ack(delivery_tag)
            return
        self._ack_upto = delivery_tag
        self._acks_waiting += 1

    def flush_acks(self, channel) -> None:
        """Send the acks of every message whose work is done (one frame, multiple=True for several)."""
        if self._acks_waiting:
            upto, several = self._ack_upto, self._acks_waiting > 1
            self._ack_upto, self._acks_waiting = None, 0
            channel.basic_ack(upto, multiple=several)

    def say(self, text: str) -> None:
        if not self.settings.quiet:  # a plain buffered write: print() costs more, twice per message
            sys.stdout.write(f"[{self.settings.name}] {text}\n")

    def log(self, event: Event, message_id: Optional[str], body: bytes, redelivered: bool, **extra) -> None:
        if self.events is not None:
            record = {"event": event, "message_id": message_id, "body": body.decode("utf-8", "replace"),
                      "redelivered": redelivered, "worker": self.settings.name, "time": time.time(), **extra}
            self.events.write(json.dumps(record) + "\n")

    def run(self) -> Tally:
        """Consume until stopped, --max-messages or --idle-exit; reconnect whenever the connection is lost."""
        first = True
        while not self.finished():
            connection = open_connection(self.brokers, self.retry_for, self.settings.quiet, reconnecting=not first)
            node = describe(self.brokers.current)
            self.log(Event.CONNECTED, None, b"", False, node=node)  # where, and when: a cluster's failovers in the log
            if first:
                self.say(f"waiting for messages on queue {self.queue.name!r} at {node} "
                         f"({'manual acks' if self.settings.acknowledge else 'auto-ack'}"
                         f"{f', prefetch {self.settings.prefetch}' if self.settings.prefetch else ''}); Ctrl-C to stop")
            else:
                self.say(f"reconnected to {node}")
            first, opened = False, time.monotonic()
            try:
                self.consume(connection)
            except ConnectionLost as exc:
                self.say(f"connection to {node} lost ({exc}); reconnecting")
                self.log(Event.DISCONNECTED, None, b"", False, node=node, reason=str(exc))
                self.back_off(time.monotonic() - opened)
                continue
            finally:
                close_quietly(connection)
        return self.tally

    def back_off(self, lasted: float) -> None:
        """Wait longer and longer while each new connection is lost at once, so a refusal never spins."""
        self._quick_losses = self._quick_losses + 1 if lasted < QUICK_LOSS else 0
        if self._quick_losses > 1:
            deadline = time.monotonic() + min(0.25 * 2 ** (self._quick_losses - 2), 5)
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.05)

    def finished(self) -> bool:
        s = self.settings
        if self.stopping or (s.max_messages and self.tally.received >= s.max_messages):
            return True
        return bool(s.idle_exit) and time.monotonic() - self._last_message_at >= s.idle_exit

    def queue_limits(self, connection: pika.BlockingConnection) -> QueueLimits:
        """The delivery limit and dead-letter queue the broker applies to our quorum queue, as far as this worker can
        know: its own settings, lowered by the policies the management API shows this user, else RabbitMQ 4.x's
        default limit. Learnt at the first rejection, so that a classic queue never costs a call to the API."""
        if self.limits is None:
            queue = self.queue
            found = [queue.delivery_limit] if queue.delivery_limit is not None else []
            target = queue.dead_letter_queue
            try:
                api = ManagementAPI(self.brokers.current, self.management_url)
                for kind in ("policies", "operator-policies"):  # of both, the lower limit wins
                    definition = (ruling_policy(api.policies(kind), queue.name) or {}).get("definition", {})
                    if isinstance(definition.get("delivery-limit"), int):
                        found.append(definition["delivery-limit"])
                    if target is None and definition.get("dead-letter-exchange") == "":  # arguments win over it
                        target = definition.get("dead-letter-routing-key")
            except ManagementError:
                pass  # a user without a management tag sees no policies: go by this worker's own settings
            version = connection._impl.server_properties.get("version", b"")  # pika keeps the handshake there
            major = (version.decode() if isinstance(version, bytes) else str(version)).split(".")[0]
            if not found and major.isdigit() and int(major) >= 4:
                found.append(DEFAULT_QUORUM_DELIVERY_LIMIT)
            self.limits = QueueLimits(min(found) if found else None, target)
        return self.limits

    def on_broker_cancel(self, _frame) -> None:
        self.cancelled = True

    def cancel_explained(self, connection: pika.BlockingConnection) -> Exception:
        """Why the broker cancelled our consumer: the queue is gone (exit 6), or else consume again."""
        queue = self.queue.name
        try:
            connection.channel().queue_declare(queue, passive=True)
        except amqp.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return home_node_down(exc, queue) or BrokerError(
                    f"queue {queue!r} was deleted while this worker consumed from it", EXIT_QUEUE_MISMATCH)
        except amqp.AMQPError:
            pass  # the connection went too: reconnecting finds out the rest
        self.log(Event.CANCELLED, None, b"", False, reason="consumer cancelled by the broker")
        self.after_cancel = True
        return ConnectionLost(f"the broker cancelled this worker's consumer on queue {queue!r} (a delivery held past "
                              "the consumer timeout, or the queue moved to another node); consuming again")

    def require_queue(self, channel) -> None:
        """The queue exists (a passive declare), or this worker's queue was deleted: exit 6."""
        try:
            channel.queue_declare(self.queue.name, passive=True)
        except amqp.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                raise home_node_down(exc, self.queue.name) or BrokerError(
                    f"queue {self.queue.name!r} was deleted while this worker consumed from it",
                    EXIT_QUEUE_MISMATCH) from None
            raise
        self.after_cancel = False

    def drop_undelivered(self, channel, deliveries) -> None:
        """With auto-ack, messages already pushed to this worker are off the queue: report them as lost."""
        waiting = channel.get_waiting_message_count()
        for method, properties, body in itertools.islice(deliveries, waiting):
            self.tally.lost += 1
            self.log(Event.LOST, properties.message_id, body, method.redelivered, mode="exit")
        if waiting:
            self.say(f"lost {waiting} messages already delivered to this worker: auto-ack took them off the queue")

    def crash(self, text: str) -> None:
        self.say(f"crashing while holding {text!r}")
        sys.stdout.flush()
        if self.events:
            self.events.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # die like a real crash: no cleanup, no close, no ack


def install_signal_handlers(worker: Worker) -> None:
    """First Ctrl-C or SIGTERM: stop taking work and close cleanly. Second: exit at once."""

    def on_signal(signum, _frame) -> None:
        if worker.stopping:
            os._exit(EXIT_INTERRUPTED)
        worker.stopping, worker.stopped_by = True, signum
        print(f"\n[{worker.settings.name}] stopping (signal again to quit at once)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


EPILOG = """\b
Examples:
  ./qprocessor.py --host localhost --vhost alice --username alice --queue hello
  ./qprocessor.py --acknowledge --prefetch 1 --name w1
  ./qprocessor.py --acknowledge --lose-every 3 --lose-mode crash
  AMQP_URL=amqp://alice:secret@localhost/alice ./qprocessor.py --seconds-per-char 0 --events events.jsonl
"""


def main(connection: ConnectionSettings, queue: QueueSettings, settings: WorkerSettings,
         end_as_interrupted: bool = False) -> Tally:
    """Consume the queue until stopped, then print the summary: the command line's work, once its options are
    parsed (see cli at the end of this file); from ipython, call it with settings objects of your own.

    `end_as_interrupted` (the command line): after a clean stop by Ctrl-C, the process ends by SIGINT itself, as a
    program that handles Ctrl-C should, so that a shell loop around it (`while true; do ./qprocessor.py; done`)
    stops too instead of starting the worker again."""
    global SECONDS_PER_CHAR
    SECONDS_PER_CHAR = settings.seconds_per_char
    brokers = connection.brokers()
    events = None
    if settings.events:
        events = sys.stdout if settings.events == "-" else open(settings.events, "a", encoding="utf-8", buffering=1)
    queue = settle_limits(queue, brokers.current, connection.management_url,
                          lambda line: click.echo(f"[{settings.name}] {line}", err=True))
    worker = Worker(settings, queue, brokers, connection.retry_for, events, management_url=connection.management_url)
    install_signal_handlers(worker)
    try:
        tally = worker.run()
    finally:
        if events:
            events.flush()
    click.echo(f"[{settings.name}] summary: {tally.summary()}")
    if end_as_interrupted and worker.stopped_by == signal.SIGINT:
        sys.stdout.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # the shell sees "killed by SIGINT" and leaves its loop
    return tally


# --- what the worker keeps: its tally, the work thread, the queue's limits ---

@dataclass
class Tally:
    received: int = 0
    processed: int = 0
    lost: int = 0
    requeued: int = 0
    redelivered: int = 0
    abandoned: int = 0
    failed: int = 0
    dead_lettered: int = 0

    def summary(self) -> str:
        line = (f"received {self.received}, processed {self.processed}, lost {self.lost}, "
                f"requeued {self.requeued}, redelivered {self.redelivered}, abandoned {self.abandoned}")
        if self.failed or self.dead_lettered:
            line += f", failed {self.failed}, dead-lettered {self.dead_lettered}"
        return line


class ConnectionLost(Exception):
    """The broker went away while the worker was connected, or cancelled its consumer; worth reconnecting."""


QUICK_LOSS = 1.0  # seconds: a connection lost sooner than this after opening counts towards the reconnect backoff


class QueueLimits(NamedTuple):
    delivery_limit: Optional[int]  # None: the broker redelivers a failing message forever
    dead_letter_queue: Optional[str]  # None: a message past the limit, or rejected without requeue, is dropped


class Job:
    """One run of work() in the work thread. Its end wakes the connection's thread: through `over`, a lock held
    until then, while that thread waits a moment for quick work; through add_callback_threadsafe, which wakes
    process_data_events, once that thread serves the broker meanwhile (`watch()`)."""

    __slots__ = ("function", "body", "connection", "error", "done", "over", "_watched", "_mutex")

    def __init__(self, function: Callable[[bytes], None], body: bytes, connection: pika.BlockingConnection) -> None:
        self.function, self.body, self.connection = function, body, connection
        self.error: Optional[BaseException] = None
        self.done, self._watched = False, False
        self.over, self._mutex = threading.Lock(), threading.Lock()
        self.over.acquire()

    def run(self) -> None:
        """In the work thread: run the work, then wake whoever waits for it."""
        try:
            self.function(self.body)
        except BaseException as exc:  # raised again on the connection's thread, which decides what it means
            self.error = exc
        with self._mutex:
            self.done, watched = True, self._watched
        self.over.release()
        if watched:
            try:  # pika's one thread-safe call: wakes process_data_events on the connection's thread
                self.connection.add_callback_threadsafe(self.woken)
            except amqp.AMQPError:
                pass  # the connection closed meanwhile: the message was abandoned, nobody waits for this outcome

    def watch(self) -> bool:
        """From now on the work's end wakes process_data_events; True when it is over already."""
        with self._mutex:
            self._watched = True
            return self.done

    @staticmethod
    def woken() -> None:
        """Nothing to do on the connection's thread: being called is what ends process_data_events' wait."""


class WorkThread:
    """The thread work() runs in, one message at a time, so that the connection's thread is free to answer the
    broker (heartbeats) however long the work takes (pika's examples/basic_consumer_threaded.py). One thread serves
    message after message: a thread per message would cost more than a load test's whole work (--seconds-per-char
    0). A daemon thread, so that a stop mid-work exits without waiting for the work to end."""

    def __init__(self) -> None:
        self._jobs: SimpleQueue = SimpleQueue()
        threading.Thread(target=self._serve, name="work", daemon=True).start()

    def start(self, function: Callable[[bytes], None], body: bytes, connection: pika.BlockingConnection) -> Job:
        job = Job(function, body, connection)
        self._jobs.put(job)
        return job

    def retire(self) -> None:
        """End the thread once its current work is over (its outcome goes to nobody)."""
        self._jobs.put(None)

    def _serve(self) -> None:
        for job in iter(self._jobs.get, None):
            job.run()


# --- connection code: generated from labs/amqp/ by `python -m labs.amqp.embed`; edit it there, not here ---
# (each script carries its own copy so that it runs when copied alone; tests/standalone/test_embed.py fails when this copy
# differs from what labs/amqp/ generates)

# -- from labs/amqp/errors.py --

EXIT_OK = 0
EXIT_USAGE = 2  # a bad option value (click's own code)
EXIT_UNREACHABLE = 3  # no broker answered within --retry-for seconds
EXIT_LOGIN_REFUSED = 4  # wrong username or password
EXIT_VHOST_REFUSED = 5  # the vhost does not exist, or this user has no permission on it
EXIT_QUEUE_MISMATCH = 6  # the queue exists with other properties (PRECONDITION_FAILED), or is missing
EXIT_NOT_AMQP = 9  # something answered on that port, but not an AMQP 0-9-1 broker
EXIT_QUEUE_REFUSED = 12  # the broker refused to declare the queue (e.g. transient queues not permitted, no permission)
EXIT_QUEUE_NODE_DOWN = 13  # the queue lives on a cluster node that is down (a classic queue; quorum ones fail over)
EXIT_POLICY_REFUSED = 14  # --limits-by policy, and the management API refused the policy or did not answer
EXIT_LIMIT_REACHED = 15  # a limit the instructor set is reached: connections (the vhost's or the user's), channels, queues
EXIT_INTERRUPTED = 130  # interrupted (the sender: Ctrl-C; the worker: a second signal)


QUEUE_TYPES = ("classic", "quorum")


class BrokerError(click.ClickException):
    """A broker problem explained in one line, with the exit code documented in the README."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe(params: pika.ConnectionParameters) -> str:
    return f"{params.host}:{params.port}"


def error_text(exc: BaseException) -> str:
    return " ".join(map(str, exc.args)) or repr(exc)  # pika nests the cause in args; its str() is often empty


def lost_mid_handshake(exc: BaseException) -> bool:
    """pika calls any connection that closes during the AMQP handshake a "probable" authentication or access error. It
    is the broker's refusal only when the broker's reply (403 or 530) is inside; a connection reset there is a broker
    starting or stopping (seen while restarting a node), worth another try and not a wrong password."""
    return isinstance(exc, (amqp.ProbableAuthenticationError, amqp.ProbableAccessDeniedError)) and \
        not re.search(r"\((403|530)\)", error_text(exc))


def explain(exc: BaseException, params: pika.ConnectionParameters) -> BrokerError:
    """Turn a pika or socket error met while connecting into one line a student can act on."""
    where, vhost = describe(params), params.virtual_host
    user = getattr(params.credentials, "username", "?")
    text = error_text(exc)
    if lost_mid_handshake(exc):
        return BrokerError(f"cannot reach a broker at {where}: the connection was lost during the handshake (is the "
                           "broker restarting?)", EXIT_UNREACHABLE)
    limit = limit_reached(text, vhost, user)
    if limit:
        return limit
    if isinstance(exc, (amqp.ProbableAuthenticationError, amqp.AuthenticationError)) or "ACCESS_REFUSED - Login" in text:
        return BrokerError(f"login refused for user {user!r} at {where}: wrong username or password", EXIT_LOGIN_REFUSED)
    if isinstance(exc, amqp.ProbableAccessDeniedError) or "NOT_ALLOWED" in text:
        if "not found" in text:
            return BrokerError(f"vhost {vhost!r} does not exist at {where}", EXIT_VHOST_REFUSED)
        return BrokerError(f"user {user!r} has no permission on vhost {vhost!r} at {where}", EXIT_VHOST_REFUSED)
    if isinstance(exc, amqp.IncompatibleProtocolError):
        # Nothing AMQP came back: a port that speaks something else, or (behind a proxy such as Docker's) a
        # broker that is starting or stopping. pika cannot tell them apart; the line names both.
        return BrokerError(f"{where} took the connection but ended it before the AMQP 0-9-1 handshake: is that "
                           "the right port, or a broker still starting or stopping?", EXIT_NOT_AMQP)
    if isinstance(exc, socket.gaierror):
        return BrokerError(f"cannot resolve host {params.host!r}", EXIT_UNREACHABLE)
    if "SSL" in text or "certificate" in text.lower():
        return BrokerError(f"TLS handshake with {where} failed: {text.strip('()')}", EXIT_NOT_AMQP)
    causes = re.findall(r"\w+Error\(\d+, '([^']+)'\)", text)  # e.g. ConnectionRefusedError(111, 'Connection refused')
    reason = causes[-1] if causes else re.sub(r"^\w+: ", "", text.strip("(),'\"")) or type(exc).__name__
    return BrokerError(f"cannot reach a broker at {where}: {reason}", EXIT_UNREACHABLE)


def limit_reached(text: str, vhost: str, user: str) -> Optional[BrokerError]:
    """A connection or channel refused at a limit the instructor set (NOT_ALLOWED, as a refused vhost is): say which
    limit, since "no permission" would send the student looking in the wrong place. The same words on 3.10 and 4."""
    found = re.search(r"(user )?connection limit \((\d+)\) is reached", text)
    if found:
        whose = f"user {user!r}" if found.group(1) else f"vhost {vhost!r}"
        return BrokerError(f"connection refused: {whose} already has {found.group(2)} connections open, the limit "
                           "your instructor set; close those you no longer need (a worker left running in another "
                           "window, a loop that connects again and again) and try again", EXIT_LIMIT_REACHED)
    found = re.search(r"channels opened for user .* user limit of \(?(\d+)\)?", text)
    if found:
        return BrokerError(f"channel refused: user {user!r} already has {found.group(1)} channels open, the limit "
                           "your instructor set; close connections you no longer need and try again",
                           EXIT_LIMIT_REACHED)
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth another try: the broker is down, restarting or the network dropped; not a refusal.

    A port that does not answer AMQP looks the same to pika as a broker starting or stopping (or a proxy in front of
    one, such as Docker's, that takes the connection and ends it), so it is retried too, on the first connection as
    on a reconnection: a wrong port still ends with exit 9, once --retry-for has run out.
    """
    if lost_mid_handshake(exc):
        return True
    if isinstance(exc, (amqp.AuthenticationError, amqp.ProbableAuthenticationError, amqp.ProbableAccessDeniedError)):
        return False
    if isinstance(exc, amqp.ConnectionClosedByBroker):
        return exc.reply_code not in (403, 530)
    if isinstance(exc, amqp.IncompatibleProtocolError):
        return True
    return isinstance(exc, amqp.AMQPConnectionError) and "SSL" not in error_text(exc)


def declare_refused(exc: amqp.ConnectionClosedByBroker, queue: str) -> BrokerError:
    """The broker closed the whole connection in answer to our declaration: a refusal, not a network problem."""
    if "transient_nonexcl_queues" in exc.reply_text:
        return BrokerError(f"the broker refused queue {queue!r}: it does not permit transient (non-durable) queues; "
                           "declare it durable (leave out --transient)", EXIT_QUEUE_REFUSED)
    first_line = exc.reply_text.splitlines()[0] if exc.reply_text else ""
    return BrokerError(f"the broker refused queue {queue!r}: {exc.reply_code} {first_line}", EXIT_QUEUE_REFUSED)


# RabbitMQ names a declared value in two ways: 'true' (or 'quorum'), or the value '5' of type 'signedint'; none
# means the property was not set. 3.x and 4.x use both, for different properties.
DECLARED_VALUE = r"(none|the value '[^']*' of type '\w+'|'[^']*')"
INEQUIVALENT = re.compile(rf"inequivalent arg '([\w-]+)' .*: received {DECLARED_VALUE} but current is {DECLARED_VALUE}")
NUMBER_TYPES = ("signedint", "long", "short", "byte", "unsignedbyte", "unsignedshort", "unsignedint")


def declared_value(text: str) -> Optional[str]:
    return None if text == "none" else text.split("'")[1]


def as_declared(text: str, asked=None):
    """The broker's value in the form queue_declare takes it (for probing with the existing queue's value).

    A quoted value has no type: it is a number when this run asked for a number in its place.
    """
    if text == "none":
        return None
    value = text.split("'")[1]
    kind = text.rsplit("'", 2)[-2] if text.startswith("the value") else "longstr"
    numeric = kind in NUMBER_TYPES or (isinstance(asked, int) and not isinstance(asked, bool))
    return int(value) if numeric and value.lstrip("-").isdigit() else value


@dataclass(frozen=True)
class Difference:
    """One property of a queue that differs between the broker and this run."""

    arg: str
    current: Optional[str]
    asked: Optional[str]


def queue_phrase(differences: list[Difference], side: str) -> str:
    """'a durable quorum queue with x-delivery-limit 3', built from the differing properties' values on one side."""
    adjectives, extras = [], []
    for each in differences:
        value = getattr(each, side)
        if each.arg == "durable":
            adjectives.append("durable" if value == "true" else "transient (non-durable)")
        elif each.arg == "x-queue-type":
            adjectives.append(value or "classic")
        elif each.arg == "x-dead-letter-exchange":
            extras.append("a dead-letter target" if value is not None else "no dead-letter target")
        else:
            extras.append(f"{each.arg} {value}" if value is not None else f"no {each.arg}")
    return " ".join(["a", *adjectives, "queue"]) + (" with " + " and ".join(extras) if extras else "")


# The queue arguments a script's option sets (as the option's value), for naming the option that matches a queue.
ARGUMENT_FLAGS = {"x-delivery-limit": "--delivery-limit", "x-dead-letter-routing-key": "--dead-letter-queue",
                  "x-max-length": "--max-length", "x-overflow": "--overflow"}


def matching_flags(differences: list[Difference]) -> str:
    """The command-line flags that declare the existing queue's values of these properties."""
    flags = []
    quorum = any(d.arg == "x-queue-type" and d.current == "quorum" for d in differences)
    for each in differences:
        arg, current = each.arg, each.current
        if arg == "durable" and not quorum:  # a quorum queue is durable by itself
            flags.append("leave out --transient" if current == "true" else "add --transient")
        elif arg == "x-queue-type":
            flags.append(f"use --queue-type {current or 'classic'}" if (current or "classic") in QUEUE_TYPES
                         else f"these scripts do not declare {current} queues")
        elif arg == "x-dead-letter-exchange":
            if current is None:
                flags.append("drop --dead-letter-queue")
            elif not any(d.arg == "x-dead-letter-routing-key" for d in differences):
                flags.append("add the --dead-letter-queue it was declared with")
        elif arg in ARGUMENT_FLAGS:
            flag = ARGUMENT_FLAGS[arg]
            flags.append(f"use {flag} {current}" if current is not None else f"drop {flag}")
        elif arg != "durable":
            flags.append(f"these scripts do not set {arg}: use the program that declared it")
    return ", ".join(dict.fromkeys(flags))  # once each: a dead-letter target differs in two arguments


def probe_differences(first: amqp.ChannelClosedByBroker, declaration: dict,
                      open_channel: Optional[Callable[[], object]]) -> list[Difference]:
    """Every property in which the existing queue differs from `declaration`.

    The broker names one difference per refusal, so each found value is adopted and the declaration tried again on a
    fresh channel (a declaration equal to the existing queue changes nothing) until the broker accepts it.
    """
    differences: list[Difference] = []
    probe = {**declaration, "arguments": dict(declaration.get("arguments") or {})}
    refusal = first
    for _ in range(8):
        found = INEQUIVALENT.search(refusal.reply_text)
        if not found:
            break
        arg, asked, current = found.groups()
        if any(seen.arg == arg for seen in differences):  # adopting its value did not settle it: stop probing
            break
        differences.append(Difference(arg, declared_value(current), declared_value(asked)))
        if open_channel is None:
            break
        if arg == "durable":
            probe["durable"] = declared_value(current) == "true"
        elif as_declared(current) is None:
            probe["arguments"].pop(arg, None)
        else:
            probe["arguments"][arg] = as_declared(current, probe["arguments"].get(arg))
        try:
            channel = open_channel()
            channel.queue_declare(**probe)
            channel.close()
            break
        except amqp.ChannelClosedByBroker as again:
            refusal = again
        except amqp.AMQPError:
            break
    return differences


def home_node_down(exc: amqp.ChannelClosedByBroker, queue: str) -> Optional[BrokerError]:
    """A classic queue whose cluster node is down answers NOT_FOUND, but it is not gone: say so, and where it is.

    RabbitMQ 3.x names the node ("home node 'N' of durable queue ... is down or inaccessible"); 4.x says only that
    the operation on the queue timed out."""
    text = exc.reply_text or ""
    found = re.search(r"home node '([^']+)' of durable queue", text)
    if found:
        where = f"lives on node {found.group(1)}, which is down or unreachable"
    elif re.search(r"failed to perform operation on queue .* due to timeout", text):
        where = "did not answer: the node it lives on is down or unreachable"
    else:
        return None
    return BrokerError(f"queue {queue!r} {where}; its messages come back with that node (a quorum queue, "
                       "--queue-type quorum, has copies on the other nodes)", EXIT_QUEUE_NODE_DOWN)


def queue_error(exc: amqp.ChannelClosedByBroker, queue: str, declaration: Optional[dict] = None,
                open_channel: Optional[Callable[[], object]] = None) -> BrokerError:
    """Explain why the broker refused the queue: missing (NOT_FOUND), declared with other properties, or forbidden.

    Given the refused declaration and a way to open channels, it names every property that differs, not only the
    first one the broker reports.
    """
    if exc.reply_code == 404:
        return home_node_down(exc, queue) or BrokerError(f"queue {queue!r} does not exist", EXIT_QUEUE_MISMATCH)
    if exc.reply_code == 403:  # ACCESS_REFUSED: no configure (or read/write) permission on this queue name
        return BrokerError(f"the broker refused queue {queue!r}: {exc.reply_text}", EXIT_QUEUE_REFUSED)
    full = re.search(r"queue limit in vhost '([^']*)' \((\d+)\) is reached", exc.reply_text or "")
    if full:  # PRECONDITION_FAILED, as a mismatch is: but nothing is wrong with the queue, the vhost is full
        return BrokerError(f"cannot declare queue {queue!r}: vhost {full.group(1)!r} already holds {full.group(2)} "
                           "queues, the limit your instructor set; delete those you no longer need (sender.py "
                           "--delete-queue --queue NAME) and try again", EXIT_LIMIT_REACHED)
    differences = probe_differences(exc, declaration or {"queue": queue}, open_channel if declaration else None)
    if not differences:
        return BrokerError(f"queue {queue!r}: {exc.reply_text}", EXIT_QUEUE_MISMATCH)
    flags, delete = matching_flags(differences), f"sender.py --delete-queue --queue {queue}"
    if re.search(r"\bdrop --", flags):
        # Matching the old queue would drop options this run asked for (a dead-letter queue, a delivery limit: what
        # the lab teaches): deleting it is the fix, so it comes first and the flags are the fallback.
        remedy = f"delete the queue first ({delete}) to keep this run's options, or use it as it is: {flags}"
    else:
        remedy = f"{flags}, or delete the queue first ({delete})"
    return BrokerError(f"queue {queue!r} exists as {queue_phrase(differences, 'current')}, but this run declares "
                       f"{queue_phrase(differences, 'asked')}: {remedy}", EXIT_QUEUE_MISMATCH)


# -- from labs/amqp/management.py --

POLICY_PREFIX = "labkit-"  # the policy settle_limits() sets for queue Q is named labkit-Q
CLASS_CAP = "class-cap"  # the instructor's operator policy (and policy) capping each queue: labs.classroom.provision
MANAGEMENT_TIMEOUT = 5  # seconds: the management API answers at once or not at all


class ManagementError(Exception):
    """The management API refused a call or did not answer; the message says which, in one line."""

    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused  # the API answered, and said no (not: nothing answered)


def api_headers(username: str, password: str) -> dict:
    """The headers of every management API request: HTTP basic authentication as this user, and JSON."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def api_request(url: str, headers: dict, method: str = "GET", body: Optional[dict] = None,
                timeout: float = MANAGEMENT_TIMEOUT):
    """One request to the management HTTP API: its decoded JSON answer, or None when it answers nothing.

    The one HTTP call of the scripts and of the kit (labs.brokers.management): urllib's own errors go up, since what
    a refusal or silence means differs between a student's script and the instructor's kit.
    """
    import urllib.request  # imported here: most runs never call the API, and urllib.request costs start-up time

    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=timeout) as answer:
        payload = answer.read()
    return json.loads(payload) if payload else None


class ManagementAPI:
    """The calls of RabbitMQ's management HTTP API that queue policies and sender.py --list-queues need, made as the
    connecting user."""

    def __init__(self, node: pika.ConnectionParameters, url: Optional[str] = None) -> None:
        self.vhost, self.username = node.virtual_host, node.credentials.username
        self.url = (url or f"http://{node.host}:15672").rstrip("/")
        self.headers = api_headers(self.username, node.credentials.password)

    def queue(self, name: str) -> Optional[dict]:
        return self.call("GET", "queues", name)

    def queues(self) -> list:
        """Every queue of the user's vhost, and only of it (a user with more vhosts sees the others elsewhere)."""
        return self.call("GET", "queues") or []

    def policies(self, kind: str = "policies") -> list:
        return self.call("GET", kind) or []

    def set_policy(self, name: str, policy: dict) -> None:
        self.call("PUT", "policies", name, policy)

    def call(self, method: str, kind: str, name: Optional[str] = None, body: Optional[dict] = None):
        """One request on the user's vhost: the decoded answer, or None for 404."""
        import urllib.error  # imported here: most runs never call the API, and urllib costs start-up time
        import urllib.parse

        path = "/".join(urllib.parse.quote(part, safe="") for part in (kind, self.vhost, name) if part is not None)
        try:
            return api_request(f"{self.url}/api/{path}", self.headers, method, body)
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and method == "GET":
                return None
            try:  # RabbitMQ says why: "Not management user", "Not administrator user", "Login failed", ...
                reason = json.loads(exc.read()).get("reason", "")
            except (ValueError, AttributeError, OSError):
                reason = ""
            reason = " ".join(str(reason).split()) or exc.reason
            if exc.code in (401, 403, 404):  # 404: some versions hide a vhost the user has no permissions on
                raise ManagementError(f"the management API refused user {self.username!r} on vhost {self.vhost!r} "
                                      f"({reason})", refused=True) from None
            raise ManagementError(f"the management API answered {exc.code} to {method} {kind} ({reason})",
                                  refused=True) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ManagementError(f"no management API answers at {self.url} ({getattr(exc, 'reason', exc)}); "
                                  "give --management-url", refused=False) from None


def policy_applies(policy: dict, queue: str) -> bool:
    """Whether a policy (as the management API lists it) matches a queue of this name, as RabbitMQ matches it."""
    try:
        matches = re.search(policy.get("pattern", ""), queue) is not None
    except re.error:  # Erlang's regular expressions are PCRE: the rare pattern Python cannot read is taken as no match
        return False
    return matches and policy.get("apply-to", "all") in ("all", "queues", "quorum_queues")


def ruling_policy(policies: list, queue: str, ignore: str = "") -> Optional[dict]:
    """The policy RabbitMQ applies to the queue: of those matching it, the one of highest priority."""
    matching = [each for each in policies if each.get("name") != ignore and policy_applies(each, queue)]
    return max(matching, key=lambda each: each.get("priority", 0), default=None)


def length_limit(queue: dict) -> Optional[tuple[str, bool]]:
    """The length limit of a queue as the management API shows it ('64 MiB', '10 messages'), and whether it is the
    class's cap (the instructor's operator policy) rather than the queue's own; None without one.

    Arguments and policies may both set a limit: the lower one applies, as RabbitMQ applies it."""
    arguments, policy = queue.get("arguments") or {}, queue.get("effective_policy_definition") or {}
    found = []
    for key, unit in (("max-length-bytes", "bytes"), ("max-length", "messages")):
        own, ruled = arguments.get("x-" + key), policy.get(key)
        values = [value for value in (own, ruled) if isinstance(value, int)]
        if values:
            limit = min(values)
            by_class = queue.get("operator_policy") == CLASS_CAP and limit == ruled and (own is None or ruled < own)
            shown = f"{limit // 1048576} MiB" if unit == "bytes" and limit % 1048576 == 0 else f"{limit:,} {unit}"
            found.append((shown, by_class))
    if not found:
        return None
    return " and ".join(shown for shown, _ in found), any(by_class for _, by_class in found)


def settle_limits(queue: "QueueSettings", node: pika.ConnectionParameters, management_url: Optional[str],
                  note: Callable[[str], None]) -> "QueueSettings":
    """Decide how the delivery limit and dead-letter target reach the queue, and set the policy if that is the way.

    RabbitMQ advises a policy: it can change without deleting the queue, where arguments are fixed for its life. A
    policy takes the policymaker tag, which the classroom's student accounts lack: then (--limits-by auto) they go
    into the queue's arguments and `note` says why. A queue that holds them as arguments already keeps them there,
    since the broker refuses a redeclaration without them. Only one policy applies to a queue: ours copies the
    definition of the one it outranks, so an instructor's other settings stay.
    """
    ours = queue.limit_arguments()
    if not ours or queue.limits_by == "argument":
        return replace(queue, limits_by="argument")
    api, name = ManagementAPI(node, management_url), POLICY_PREFIX + queue.name
    try:
        existing = api.queue(queue.name)
        if existing is not None and any(arg in ours for arg in existing.get("arguments") or {}):
            if queue.limits_by == "policy":
                raise BrokerError(f"queue {queue.name!r} holds its limits as queue arguments, which no policy can "
                                  "replace: give --limits-by argument, or delete the queue first", EXIT_QUEUE_MISMATCH)
            note(f"queue {queue.name!r} already holds its limits as arguments, so its {queue.limits_phrase()} "
                 "go there too")
            return replace(queue, limits_by="argument")
        outranked = ruling_policy(api.policies(), queue.name, ignore=name)
        definition = {**(outranked or {}).get("definition", {}), **{arg[2:]: value for arg, value in ours.items()}}
        api.set_policy(name, {"pattern": f"^{re.escape(queue.name)}$", "apply-to": "queues",
                              "priority": (outranked or {}).get("priority", 0) + 1, "definition": definition})
    except ManagementError as exc:
        why = f"{exc}: a policy needs the policymaker tag" if exc.refused else str(exc)
        if queue.limits_by == "policy":
            raise BrokerError(f"cannot set policy {name!r}: {why}", EXIT_POLICY_REFUSED) from None
        note(f"{why}; queue {queue.name!r} gets its {queue.limits_phrase()} as arguments instead")
        return replace(queue, limits_by="argument")
    note(f"policy {name!r} on vhost {api.vhost!r} gives queue {queue.name!r} {queue.limits_phrase()}")
    return replace(queue, limits_by="policy")


# -- from labs/amqp/connection.py --

class Event(str, Enum):
    """The kinds of event qprocessor.py writes to its --events log, one JSON line each ({"event": "done", ...}).

    Named once, here, as rq names its job statuses: the worker writes them and the kit reads them. A str Enum, so a
    member is the very string in the JSON and compares equal to it.
    """

    RECEIVED = "received"  # a delivery arrived (before any work)
    DONE = "done"  # its work finished (logged before the ack: a crash between the two shows up as a duplicate)
    LOST = "lost"  # dropped on purpose (--lose-every), taken by auto-ack at exit, or dropped by the broker
    REQUEUED = "requeued"  # rejected back to the queue
    ABANDONED = "abandoned"  # given up mid-work: a stop signal, a closed channel or a cancelled consumer
    FAILED = "failed"  # the work failed (--fail-on)
    DEAD_LETTERED = "dead-lettered"  # rejected, and the broker moved it to the dead-letter queue
    CANCELLED = "cancelled"  # the broker cancelled this worker's consumer
    CONNECTED = "connected"  # a connection opened, with the node
    DISCONNECTED = "disconnected"  # a connection was lost, with the node and why


LIMITS_BY = ("auto", "policy", "argument")
# What a queue at --max-length does with one more message: drop its oldest (dead-lettered when it has a dead-letter
# queue), or refuse the new one with a nack, the publisher's to handle (reject-publish-dlx dead-letters it as well).
OVERFLOWS = ("drop-head", "reject-publish", "reject-publish-dlx")


T = TypeVar("T")


def setting(value, *declarations: str, secret: bool = False, **attributes):
    """A settings field with default `value`, together with the click option that sets it.

    The option is declared once, here: command_options() adds it to the command and parse() reads it back, so an
    option can be neither missing from the command nor silently ignored by it. The option's default is `value`
    unless given (a callable, say); a secret is left out of repr().
    """
    attributes.setdefault("default", value)
    return field(default=value, repr=not secret, metadata={"option": (declarations, attributes)})


def option_name(settings_class: type, name: str) -> str:
    return f"{settings_class.__name__.lower()}_{name}"


def command_options(*settings_classes: type) -> Callable:
    """Add to a click command the option of every field of the given settings classes, in their order."""

    def decorate(command: Callable) -> Callable:
        for settings_class in reversed(settings_classes):
            for each in reversed(fields(settings_class)):
                declarations, attributes = each.metadata["option"]
                command = click.option(*declarations, option_name(settings_class, each.name), **attributes)(command)
        return command

    return decorate


def parse(settings_class: type[T], options: dict) -> T:
    """Take the settings class's own options out of click's parsed options and build it (once, at the start)."""
    return settings_class(**{each.name: options.pop(option_name(settings_class, each.name))
                             for each in fields(settings_class)})


@dataclass(frozen=True)
class ConnectionSettings:
    """Where the broker is and who we are on it; also what ipython's connect() takes."""

    url: tuple[str, ...] = setting(
        (), "--url", envvar="AMQP_URL", show_envvar=True, multiple=True,
        help="Broker URL, amqp://user:password@host:port/vhost (amqps:// for TLS); overrides the options below. "
             "Give it once per node of a cluster (AMQP_URL: separated by spaces): connections go to one of them "
             "and fail over to the others.")
    host: str = setting("localhost", "--host", envvar="RABBITMQ_HOST", show_envvar=True, show_default=True,
                        help="Broker host name or address.")
    port: int = setting(5672, "--port", envvar="RABBITMQ_PORT", show_envvar=True, show_default=True,
                        type=click.IntRange(1, 65535), help="Broker AMQP port.")
    vhost: str = setting("/", "--vhost", envvar="RABBITMQ_VHOST", show_envvar=True, show_default=True,
                         help="Virtual host: in the lab, your username.")
    username: str = setting("guest", "--username", envvar="RABBITMQ_USERNAME", show_envvar=True, show_default=True,
                            help="User name.")
    password: str = setting(
        "guest", "--password", secret=True, envvar="RABBITMQ_PASSWORD", show_envvar=True,
        help="Password; prefer the environment variable or --ask-password, which keep it out of the process list.")
    ask_password: bool = setting(False, "--ask-password", is_flag=True,
                                 help="Prompt for the password without echoing it.")
    ca_cert: Optional[str] = setting(
        None, "--ca-cert", envvar="RABBITMQ_CA_CERT", show_envvar=True, type=click.Path(exists=True, dir_okay=False),
        help="With an amqps:// URL: trust the broker's certificate if this CA (PEM file) signed it.")
    heartbeat: Optional[int] = setting(
        None, "--heartbeat", envvar="RABBITMQ_HEARTBEAT", show_envvar=True, type=click.IntRange(0),
        help="Heartbeat timeout in seconds proposed to the broker (0 turns heartbeats off).")
    management_url: Optional[str] = setting(
        None, "--management-url", envvar="RABBITMQ_MANAGEMENT_URL", show_envvar=True,
        help="RabbitMQ's management API, through which --delivery-limit and --dead-letter-queue become a policy "
             "[default: http://HOST:15672, HOST the broker's].")
    retry_for: float = setting(30.0, "--retry-for", envvar="RABBITMQ_RETRY_FOR", show_envvar=True, show_default=True,
                               type=click.FloatRange(0),
                               help="Seconds to keep retrying an unreachable broker before giving up.")

    def __post_init__(self) -> None:
        if isinstance(self.url, str):  # ipython's connect(url="amqp://... amqp://...")
            object.__setattr__(self, "url", tuple(self.url.split()))

    def brokers(self) -> "Brokers":
        """The nodes to connect to; prompts for the password once when --ask-password was given."""
        nodes = [self.parameters(url) for url in self.url] if self.url else [self.parameters(None)]
        if self.ask_password:  # for the user named by --username or in the (first) URL
            username = nodes[0].credentials.username
            password = click.prompt(f"Password for {username}", hide_input=True, err=True)
            for node in nodes:
                node.credentials = pika.PlainCredentials(node.credentials.username, password)
        return Brokers(nodes)

    def parameters(self, url: Optional[str]) -> pika.ConnectionParameters:
        """pika's parameters for one node: the URL, or else the host options.

        amqps:// verifies the broker's certificate against the system's CAs, or against `ca_cert` when given.
        """
        if url:
            if re.match(r"^amqps?://[^:@/]+@", url):  # a user but no password (to be prompted): pika needs the colon
                url = url.replace("@", ":@", 1)
            try:
                params = pika.URLParameters(url)
            except Exception as exc:  # pika raises several types for a malformed URL
                raise click.BadParameter(f"{url!r} is not an amqp:// or amqps:// URL ({exc})",
                                         param_hint="--url") from None
            if not url.startswith(("amqp://", "amqps://")):
                raise click.BadParameter(f"{url!r} must start with amqp:// or amqps://", param_hint="--url")
        else:
            params = pika.ConnectionParameters(host=self.host, port=self.port, virtual_host=self.vhost,
                                               credentials=pika.PlainCredentials(self.username, self.password))
        if self.ca_cert:
            if params.ssl_options is None:
                raise click.BadParameter("a CA certificate only applies to an amqps:// URL", param_hint="--ca-cert")
            params.ssl_options = pika.SSLOptions(ssl.create_default_context(cafile=self.ca_cert), params.host)
        if self.heartbeat is not None:
            params.heartbeat = self.heartbeat
        params.connection_attempts = 1  # tenacity does the retrying, with a bound and a message per wait
        return params


class Brokers:
    """Where to connect: one broker, or the nodes of a cluster. The order is shuffled, so that workers spread over
    the nodes; a connection that fails, or is lost, moves on to the next node."""

    def __init__(self, nodes: list[pika.ConnectionParameters]) -> None:
        self.nodes = random.sample(nodes, len(nodes))
        self._index = 0

    @property
    def current(self) -> pika.ConnectionParameters:
        return self.nodes[self._index]

    def move_on(self) -> pika.ConnectionParameters:
        self._index = (self._index + 1) % len(self.nodes)
        return self.current


@dataclass(frozen=True)
class QueueSettings:
    """The queue both scripts declare, and how; a new queue property is a field here and an argument in declare()."""

    name: str = setting("hello", "--queue", envvar="RABBITMQ_QUEUE", show_envvar=True, show_default=True,
                        help="Queue name.")
    durable: bool = setting(
        True, "--durable/--transient", show_default=True,
        help="A durable queue survives a broker restart (its persistent messages too). A transient one is forgotten; "
             "RabbitMQ 4 deprecates transient queues and a broker may refuse them.")
    queue_type: Optional[str] = setting(
        None, "--queue-type", envvar="RABBITMQ_QUEUE_TYPE", show_envvar=True, type=click.Choice(QUEUE_TYPES),
        help="classic: one node, for the first labs; quorum: replicated and always durable, the type RabbitMQ's "
             "tutorials use for work queues and the one a cluster needs. Unset: the vhost's default type (classic "
             "unless the instructor chose another).")

    delivery_limit: Optional[int] = setting(
        None, "--delivery-limit", envvar="RABBITMQ_DELIVERY_LIMIT", show_envvar=True, type=click.IntRange(1),
        help="Quorum queues: after this many failed deliveries a message is dead-lettered (or dropped when there is no "
             "--dead-letter-queue) instead of redelivered; RabbitMQ 4.x applies 20 when unset.")
    dead_letter_queue: Optional[str] = setting(
        None, "--dead-letter-queue", envvar="RABBITMQ_DEAD_LETTER_QUEUE", show_envvar=True,
        help="Where rejected messages, and those past --delivery-limit, go instead of being dropped (declared too).")

    max_length: Optional[int] = setting(
        None, "--max-length", envvar="RABBITMQ_MAX_LENGTH", show_envvar=True, type=click.IntRange(0),
        help="At most this many ready messages in the queue; what happens to one more is --overflow's choice.")
    overflow: Optional[str] = setting(
        None, "--overflow", envvar="RABBITMQ_OVERFLOW", show_envvar=True, type=click.Choice(OVERFLOWS),
        help="At --max-length: drop-head drops the oldest message (to the --dead-letter-queue if any; RabbitMQ's "
             "default), reject-publish refuses the new one (the sender is nacked), reject-publish-dlx refuses it and "
             "dead-letters it too (classic queues only: a quorum queue takes it as drop-head).")

    limits_by: str = setting(
        "auto", "--limits-by", envvar="RABBITMQ_LIMITS_BY", show_envvar=True, show_default=True,
        type=click.Choice(LIMITS_BY),
        help="How --delivery-limit, --dead-letter-queue, --max-length and --overflow reach the queue. policy: as RabbitMQ advises, changeable "
             "later without deleting the queue (the user needs the policymaker tag); argument: queue arguments, "
             "fixed for the queue's life; auto: a policy when this user may set one, else arguments, saying why.")

    def __post_init__(self) -> None:
        if self.delivery_limit is not None and self.queue_type != "quorum":
            raise click.BadParameter("a delivery limit needs --queue-type quorum", param_hint="--delivery-limit")
        if self.dead_letter_queue == self.name:
            raise click.BadParameter("a queue cannot dead-letter into itself", param_hint="--dead-letter-queue")
        if self.overflow and self.max_length is None:  # alone it would say nothing: the queue has no length to overflow
            raise click.BadParameter("--overflow needs --max-length", param_hint="--overflow")

    def declarations(self) -> list[dict]:
        """queue_declare's arguments, in order: the one place both scripts' declarations come from.

        Declared as RabbitMQ's tutorials do (durable, x-queue-type), so their programs and ours share a queue. The
        dead-letter queue comes first, so nothing is dead-lettered into a queue that does not exist yet.
        """
        quorum = self.queue_type == "quorum"
        # Without --queue-type no x-queue-type is sent, and the broker applies the vhost's default queue type.
        arguments: dict = {"x-queue-type": self.queue_type} if self.queue_type else {}
        if self.limits_by != "policy":  # once settle_limits() has set the policy, it carries them instead
            arguments.update(self.limit_arguments())
        declared = []
        if self.dead_letter_queue:
            declared.append({"queue": self.dead_letter_queue, "durable": True,
                             "arguments": {"x-queue-type": self.queue_type} if self.queue_type else {}})
        declared.append({"queue": self.name, "durable": self.durable or quorum, "arguments": arguments})
        return declared

    def limit_arguments(self) -> dict:
        """The delivery limit, dead-letter target, length limit and overflow as queue arguments (a policy names them
        without the "x-")."""
        arguments: dict = {}
        if self.delivery_limit is not None:
            arguments["x-delivery-limit"] = self.delivery_limit
        if self.dead_letter_queue:  # through the default exchange, which routes to the queue of that name
            arguments.update({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.dead_letter_queue})
        if self.max_length is not None:
            arguments["x-max-length"] = self.max_length
        if self.overflow:
            arguments["x-overflow"] = self.overflow
        return arguments

    def limits_phrase(self) -> str:
        """'delivery limit 3 and dead-letter queue 'failed'', for the lines that say where they were set."""
        parts = [f"delivery limit {self.delivery_limit}"] if self.delivery_limit is not None else []
        parts += [f"dead-letter queue {self.dead_letter_queue!r}"] if self.dead_letter_queue else []
        if self.max_length is not None:
            parts.append(f"max length {self.max_length}" + (f" ({self.overflow})" if self.overflow else ""))
        return " and ".join(parts)

    def declare(self, channel) -> int:
        """Declare the queue on a blocking channel (idempotent) and return how many messages are ready in it."""
        for declaration in self.declarations():
            name = declaration["queue"]
            try:
                ready = channel.queue_declare(**declaration).method.message_count
            except amqp.ChannelClosedByBroker as exc:
                raise queue_error(exc, name, declaration, channel.connection.channel) from None
            except amqp.ConnectionClosedByBroker as exc:  # e.g. 541: the broker forbids this kind of queue
                raise declare_refused(exc, name) from None
        return ready


def with_retry(action: Callable[[pika.ConnectionParameters], T], brokers: Brokers, retry_for: float,
               quiet: bool = False, reconnecting: bool = False) -> T:
    """Run `action` on a node, retrying transient connection errors with backoff for at most `retry_for` seconds.

    Each retry, and a reconnection after a loss, goes to the next node when there are several."""
    tries = itertools.count()

    def attempt() -> T:
        moving = (reconnecting or next(tries) > 0) and len(brokers.nodes) > 1
        return action(brokers.move_on() if moving else brokers.current)

    def say_waiting(state: tenacity.RetryCallState) -> None:
        if not quiet:
            reason = explain(state.outcome.exception(), brokers.current).message
            click.echo(f"{reason}; retrying in {state.next_action.sleep:.1f}s", err=True)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_delay(retry_for),
        wait=tenacity.wait_exponential(multiplier=0.25, max=5),
        before_sleep=say_waiting,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except (amqp.AMQPConnectionError, OSError) as exc:
        raise explain(exc, brokers.current) from None


def blocking_connection(params: pika.ConnectionParameters) -> pika.BlockingConnection:
    """pika's BlockingConnection, with one of pika's errors put right: a node that dies just as the TCP connection
    completes makes pika raise ValueError ("Expected connected socket"), which is a connection lost like any other."""
    try:
        return pika.BlockingConnection(params)
    except ValueError as exc:
        if "Expected connected socket" not in str(exc):
            raise
        raise amqp.AMQPConnectionError(f"the connection was lost as it opened ({exc})") from None


def open_connection(brokers: Brokers, retry_for: float = 30, quiet: bool = False,
                    reconnecting: bool = False) -> pika.BlockingConnection:
    return with_retry(blocking_connection, brokers, retry_for, quiet, reconnecting)


def connect(url: Optional[str] = None, host: str = "localhost", port: int = 5672, vhost: str = "/",
            username: str = "guest", password: str = "guest", heartbeat: Optional[int] = None,
            retry_for: float = 30):
    """Connect to the broker and return a channel (for ipython; the command line does the same)."""
    settings = ConnectionSettings(url=url, host=host, port=port, vhost=vhost, username=username, password=password,
                                  heartbeat=heartbeat, retry_for=retry_for)
    return open_connection(settings.brokers(), retry_for).channel()


def declare_queue(channel, queue: str = "hello", durable: bool = True, queue_type: Optional[str] = None) -> int:
    """Declare the queue (idempotent) and return how many messages are ready in it (for ipython)."""
    return QueueSettings(queue, durable, queue_type).declare(channel)


def close_quietly(connection: pika.BlockingConnection) -> None:
    try:
        if connection.is_open:
            connection.close()
    except amqp.AMQPError:
        pass

# --- end of the connection code ---


# --- the command line: after the connection code, whose setting() declares each option with its field ---

@dataclass(frozen=True)
class WorkerSettings:
    """How the worker behaves; one field per option of the worker's own."""

    acknowledge: bool = setting(False, "--acknowledge", is_flag=True,
                                help="Ack each message after its work is done (default: auto-ack on delivery).")
    prefetch: int = setting(0, "--prefetch", type=click.IntRange(0), show_default=True,
                            help="Most unacked messages at once (basic.qos); 0 is unlimited. Use 1 for fair dispatch.")
    seconds_per_char: float = setting(1.0, "--seconds-per-char", type=click.FloatRange(0), show_default=True,
                                      help="Fake work time per character of the body; 0 for load tests.")
    lose_every: int = setting(0, "--lose-every", type=click.IntRange(0), show_default=True,
                              help="Deliberately lose every Nth delivery; 0 loses none.")
    lose_mode: str = setting("drop", "--lose-mode", type=click.Choice(LOSE_MODES), show_default=True,
                             help="drop: neither work nor ack; crash: the process dies mid-message; "
                                  "requeue: reject it back.")
    name: str = setting("worker", "--name", default=lambda: f"worker-{os.getpid()}", show_default="worker-PID",
                        help="Label for each output line and event.")
    max_messages: int = setting(0, "--max-messages", type=click.IntRange(0), show_default=True,
                                help="Exit after this many deliveries; 0 runs until stopped.")
    idle_exit: float = setting(0.0, "--idle-exit", type=click.FloatRange(0), show_default=True,
                               help="Exit when no message has arrived for this many seconds; 0 waits forever.")
    fail_on: Optional[str] = setting(
        None, "--fail-on", metavar="TEXT",
        help="Poison messages: the work fails, every time, on each message whose body contains TEXT.")
    fail_mode: str = setting(
        "requeue", "--fail-mode", type=click.Choice(FAIL_MODES), show_default=True,
        help="What a failed message does: requeue: back to the queue, to fail again; reject: off the queue for good "
             "(into --dead-letter-queue if there is one, else dropped); crash: the process dies holding it.")
    events: Optional[str] = setting(None, "--events", type=click.Path(dir_okay=False, allow_dash=True),
                                    help="Append one JSON line per event (received, done, lost, requeued, abandoned, "
                                         "failed, dead-lettered, cancelled; connected and disconnected, with the "
                                         "node) to FILE, or - for stdout.")
    quiet: bool = setting(False, "--quiet", is_flag=True, help="Print only the final summary.")

    def __post_init__(self) -> None:
        if self.fail_on is not None and not self.acknowledge:
            raise click.BadParameter("failing work needs --acknowledge (with auto-ack the message is already gone)",
                                     param_hint="--fail-on")


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@command_options(ConnectionSettings, QueueSettings, WorkerSettings)
def cli(**options) -> None:
    """Take messages from a queue and fake work on each: one second per character by default.

    Every option can also come from the environment variable shown beside it.
    """
    main(parse(ConnectionSettings, options), parse(QueueSettings, options), parse(WorkerSettings, options),
         end_as_interrupted=True)


if __name__ == "__main__":
    cli()
