#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["pika>=1.3,<2", "click>=8.1,<9", "tenacity>=8.2,<10"]
# ///
"""Work-queue producer for the RabbitMQ lab: publishes messages with publisher confirms.

Run it as a script (./sender.py --help) or import it in ipython:

    >>> import sender
    >>> channel = sender.connect(host="localhost", vhost="alice", username="alice", password="...")
    >>> sender.send(channel, "hello", "Hello World!")     # returns once the broker has confirmed it
"""
from __future__ import annotations

import base64
import collections
import contextlib
import itertools
import json
import os
import random
import re
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from queue import Empty, SimpleQueue
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, TypeVar

import click
import pika
import tenacity
from pika import exceptions as amqp

# --- what is sent ---

class Message(NamedTuple):
    message_id: str
    body: bytes


# Unique across runs and cheap per message: one random prefix per process, then a counter.
MESSAGE_IDS = map(f"{uuid.uuid4().hex[:16]}-{{}}".format, itertools.count(1))


def new_message(body: "bytes | str") -> Message:
    return Message(next(MESSAGE_IDS), body.encode("utf-8") if isinstance(body, str) else body)


class MessageSource:
    """The messages still to publish. take() returns what is ready now, never waiting; `finished` once no more will
    come. Messages a lost connection left unconfirmed are put back in front."""

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        self._front: collections.deque[Message] = collections.deque()
        self._rest: Iterator[Message] = iter(messages)
        self._rest_done = False

    @property
    def finished(self) -> bool:
        return self._rest_done and not self._front

    def put_back(self, messages: list[Message]) -> None:
        self._front.extendleft(reversed(messages))

    def take(self, count: int) -> list[Message]:
        batch = [self._front.popleft() for _ in range(min(count, len(self._front)))]
        if len(batch) < count and not self._rest_done:
            batch += self._more(count - len(batch))
        return batch

    def _more(self, count: int) -> list[Message]:
        more = list(itertools.islice(self._rest, count))
        self._rest_done = len(more) < count
        return more

    def when_ready(self, wake: Callable[[], None]) -> None:
        """`wake` is called, from any thread, when messages arrive after take() found none: streams need it."""


class StreamSource(MessageSource):
    """One message per non-empty line of a stream (standard input), published as each line arrives.

    A thread reads the stream, so a slow pipe (tail -f) never stalls the connection: pika's loop keeps answering
    heartbeats and confirms, and each line goes out as soon as it is read.
    """

    def __init__(self, stream) -> None:
        super().__init__()
        self._lines: "SimpleQueue[Optional[bytes]]" = SimpleQueue()
        self._wake: Callable[[], None] = lambda: None
        self._waiting = threading.Event()  # take() came back short: wake the publisher at the next line
        threading.Thread(target=self._read, args=(stream,), name="line-reader", daemon=True).start()

    def when_ready(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def _read(self, stream) -> None:
        try:
            for line in stream:
                line = line.rstrip(b"\r\n")
                if line:
                    self._lines.put(line)
                    self._notify()
        finally:
            self._lines.put(None)  # the end of the stream
            self._notify()

    def _notify(self) -> None:
        if self._waiting.is_set():
            self._waiting.clear()
            self._wake()

    def _more(self, count: int) -> list[Message]:
        batch: list[Message] = []
        while len(batch) < count:
            try:
                line = self._lines.get_nowait()
            except Empty:
                self._waiting.set()
                if self._lines.empty():  # else a line came in before the flag was up: it would wake no one
                    break
                continue
            if line is None:
                self._rest_done = True
                break
            batch.append(new_message(line))
        return batch


def numbered_bodies(count: int, length: int = 0) -> Iterator[str]:
    """Bodies 1..count, each starting with its number and padded with dots to `length` characters."""
    for number in range(1, count + 1):
        yield str(number).ljust(length, ".")


def message_properties(message: Message, persistent: bool) -> pika.BasicProperties:
    return pika.BasicProperties(message_id=message.message_id,
                                delivery_mode=pika.DeliveryMode.Persistent if persistent else None)


# --- the publish loop ---

_confirming_channels: "weakref.WeakSet" = weakref.WeakSet()


def send(channel, queue: str, body: "bytes | str", persistent: bool = False) -> str:
    """Publish one message to `queue` and wait for the broker's confirm; return its message_id (for ipython).

    Raises pika's UnroutableError when no queue by that name exists, NackError when the broker refuses it.
    """
    if channel not in _confirming_channels:  # confirm mode is switched on once per channel
        channel.confirm_delivery()
        _confirming_channels.add(channel)
    message = new_message(body)
    channel.basic_publish("", queue, message.body, message_properties(message, persistent), mandatory=True)
    return message.message_id


class Publisher:
    """Publishes over pika's asynchronous SelectConnection, keeping up to `window` messages unconfirmed.

    Waiting for each confirm in turn costs a round trip per message; a window of unconfirmed messages
    (as RabbitMQ's PerfTest --confirm N) keeps the pipe full while still knowing exactly what is on the broker.
    """

    def __init__(self, brokers: Brokers, queue: QueueSettings, *, declare: bool = True,
                 persistent: bool = False, confirm: bool = True, window: int = 1024,
                 on_sent: Callable[[Message], None] = lambda message: None, say: Callable[[str], None] = print) -> None:
        self.brokers, self.queue, self.declare = brokers, queue, declare
        self.persistent, self.confirm, self.window = persistent, confirm, window
        self.on_sent, self.say = on_sent, say
        self.report = Report()
        self._source = MessageSource()
        self._unconfirmed: dict[int, Message] = {}
        self._returned: set[str] = set()
        self._framing: Optional[bool] = None  # this connection's fast path: None until its first message checks it
        self.plain_reason: Optional[str] = None  # why the plain path ran, once it has (said once a run)

    @property
    def publish_path(self) -> str:
        """Which way the messages went: the fast path's batches, or pika's basic_publish and why."""
        return f"basic_publish ({self.plain_reason})" if self.plain_reason else "hand-framed batches"

    def run(self, messages: "Iterable[Message] | MessageSource", retry_for: float = 30, quiet: bool = False) -> Report:
        """Publish every message; resume with the unconfirmed ones whenever the connection drops."""
        self._source = messages if isinstance(messages, MessageSource) else MessageSource(messages)
        self._source.when_ready(self._wake)
        self.report.started = time.monotonic()
        self._resuming = False  # a connection was lost: say so when the next one opens
        try:
            reconnecting = False
            while True:
                try:
                    with_retry(self._session, self.brokers, retry_for, quiet, reconnecting)
                    return self.report
                except ResumeAfterLoss as lost:
                    reconnecting = self._resuming = True
                    unconfirmed = list(self._unconfirmed.values())
                    self.report.resent += len(unconfirmed)
                    self.say(f"connection to {describe(self.brokers.current)} lost ({lost}) after "
                             f"{self.report.confirmed} confirmed; reconnecting to resend {len(unconfirmed)} unconfirmed")
                    self._source.put_back(unconfirmed)
        finally:
            self.report.finished = time.monotonic()

    def _session(self, params: pika.ConnectionParameters) -> None:
        """One connection's worth of publishing, to one node. Raises what ended it, unless it ended with all sent."""
        self._params = params
        self._unconfirmed, self._returned = {}, set()
        self._next_tag, self._error, self._done, self._published = 1, None, False, False
        self._publishing = False  # the queue is declared and confirms are on: messages may go
        self._declaring: Optional[dict] = None  # the declaration awaiting the broker's answer
        self._refused: Optional[tuple[amqp.ChannelClosedByBroker, dict]] = None
        connection = pika.SelectConnection(params, on_open_callback=self._on_open,
                                           on_open_error_callback=self._on_open_error,
                                           on_close_callback=self._on_closed)
        connection.add_on_connection_blocked_callback(
            lambda _conn, frame: self.say(f"the broker is blocking publishers ({frame.method.reason}); waiting"))
        connection.add_on_connection_unblocked_callback(lambda _conn, _frame: self.say("the broker unblocked; resuming"))
        self._connection = connection
        connection.ioloop.start()
        if self._done:
            return
        if self._refused is not None:
            raise self._explain_refused(*self._refused)
        error = self._error
        if isinstance(error, BrokerError):
            raise error
        if isinstance(error, amqp.ConnectionBlockedTimeout):
            raise BrokerError(f"the broker blocked publishing for over {params.blocked_connection_timeout:g}s "
                              f"(memory or disk alarm); {self.report.confirmed} messages were confirmed", EXIT_BLOCKED)
        if self._published and is_transient(error):
            raise ResumeAfterLoss(str(error) or type(error).__name__)
        raise error

    def _explain_refused(self, refusal: amqp.ChannelClosedByBroker, declaration: dict) -> BrokerError:
        """A declaration the broker refused, explained with every differing property (probed on a new connection)."""
        try:
            probe = pika.BlockingConnection(self._params)
        except amqp.AMQPError:
            return queue_error(refusal, declaration["queue"])
        try:
            return queue_error(refusal, declaration["queue"], declaration, probe.channel)
        finally:
            close_quietly(probe)

    def _on_open(self, connection) -> None:
        if self._resuming:  # after a loss: say where publishing resumes (another node, in a cluster)
            self.say(f"reconnected to {describe(self._params)}")
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, connection, error: BaseException) -> None:
        # pika hands some failures (a TLS handshake) over as its internal workflow error: treat them all alike.
        self._error = error if isinstance(error, amqp.AMQPConnectionError) else amqp.AMQPConnectionError(error)
        connection.ioloop.stop()

    def _on_closed(self, connection, reason: BaseException) -> None:
        if self._error is None and not self._done:
            declaring = self._declaring is not None and isinstance(reason, amqp.ConnectionClosedByBroker)
            self._error = declare_refused(reason, self._declaring["queue"]) if declaring else reason
        connection.ioloop.stop()

    def _on_channel_open(self, channel) -> None:
        self._channel = channel
        missing = missing_framing_internals(self._connection)
        self._framing = None  # a new connection: its first message checks the fast path again
        if missing:
            self._plain_publish(missing)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        if self.declare:
            self._declare_next(list(self.queue.declarations()))
        else:
            self._on_declared()

    def _declare_next(self, declarations: list[dict]) -> None:
        """Declare each queue in turn on the asynchronous channel, then start publishing."""
        if not declarations:
            self._on_declared()
            return
        declaration = declarations.pop(0)
        self._declaring = declaration  # a connection closed now is the broker's answer to this declaration
        self._channel.queue_declare(**declaration, callback=lambda _frame: self._declare_next(declarations))

    def _on_declared(self) -> None:
        self._declaring = None
        self._publishing = True
        if self.confirm:
            self._channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._publish_more())
        else:
            self._publish_more()

    def _on_channel_closed(self, channel, reason: BaseException) -> None:
        if isinstance(reason, amqp.ChannelClosedByBroker) and self._error is None:
            if self._declaring is not None:
                self._refused = (reason, self._declaring)
            else:
                self._error = channel_error(reason, self.queue.name)
        if self._connection.is_open:
            self._connection.close()

    def _on_return(self, _channel, _method, properties, _body) -> None:
        self._returned.add(properties.message_id)

    def _wake(self) -> None:
        """Called from the stream's reader thread: publish the new lines from pika's own loop."""
        self._connection.ioloop.add_callback_threadsafe(self._publish_more)

    def _publish_more(self) -> None:
        """Publish as many messages as the window allows: framed here in one write per batch when this connection's
        pika allows it (_publish_framed), else each through pika's basic_publish."""
        if not self._publishing or self._done or not self._channel.is_open:
            return  # a wake-up before the queue is declared, or after the end
        budget = self.window - len(self._unconfirmed) if self.confirm else self.window
        batch = self._source.take(max(budget, 0))
        plain = batch if self._framing is False else self._publish_framed(batch)
        if plain:  # the plain path: pika frames and writes each message itself
            publish, queue = self._channel.basic_publish, self.queue.name
            properties = message_properties(Message("", b""), self.persistent)
            for message in plain:
                properties.message_id = message.message_id
                publish("", queue, message.body, properties, mandatory=True)
        report = self.report
        if self.confirm:  # delivery tags count the channel's publishes from 1, in order
            tag = self._next_tag
            self._unconfirmed.update(zip(range(tag, tag + len(batch)), batch))
            self._next_tag = tag + len(batch)
        else:
            report.confirmed += len(batch)
            for message in batch:
                self.on_sent(message)
        report.published += len(batch)
        self._published = self._published or bool(batch)
        if self._source.finished and not self._unconfirmed:  # all sent, and the broker has confirmed everything
            self._done = True
            self._connection.close()
        elif not self.confirm and batch:
            self._connection.ioloop.call_later(0, self._publish_more)  # let the loop flush the socket first

    def _publish_framed(self, batch: list[Message]) -> list[Message]:
        """The fast path: frame the batch's messages here and hand them to the socket in one write.

        pika hands each frame (method, header, body: three a message) to the socket as its own write, a send()
        system call each; the batch's frames are gathered instead, by shadowing the connection's private
        _adapter_emit_data for the batch, and written at once in the same order. A body that fits one frame is
        framed here (the method frame is the same for every message); a larger one goes through basic_publish, which
        splits it. Private internals, so behind a guard (STYLE 24): _on_channel_open checked that they exist, and the
        first message of each connection goes through pika's own basic_publish while its frames are compared with
        ours. Returns the messages left to the plain path: after a failed comparison, the rest of the batch.
        """
        connection, channel_number, queue = self._connection, self._channel.channel_number, self.queue.name
        publish, largest = self._channel.basic_publish, connection._body_max_length
        properties = message_properties(Message("", b""), self.persistent)  # re-stamped per message
        method_frame = pika.frame.Method(channel_number, pika.spec.Basic.Publish(routing_key=queue,
                                                                                 mandatory=True)).marshal()
        header_start, body_start, frame_end = struct.Struct(">BHIHxxQ").pack, struct.Struct(">BHI").pack, b"\xce"

        def framed(body: bytes) -> tuple[bytes, bytes, bytes]:
            encoded = b"".join(properties.encode())
            return (method_frame, header_start(2, channel_number, len(encoded) + 12, 60, len(body)) + encoded + frame_end,
                    body_start(3, channel_number, len(body)) + body + frame_end)

        frames: list[bytes] = []
        add, verified, framed_here, framed_bytes = frames.extend, self._framing, 0, 0
        connection._adapter_emit_data = frames.append  # shadows the adapter's method for this batch only
        try:
            for index, message in enumerate(batch):
                properties.message_id = message.message_id
                body = message.body
                if not 0 < len(body) <= largest:
                    publish("", queue, body, properties, mandatory=True)
                elif verified:
                    three = framed(body)
                    add(three)
                    framed_here += 1
                    framed_bytes += len(three[0]) + len(three[1]) + len(three[2])
                else:  # the connection's first: pika's own frames for it must be exactly ours, counted as ours are
                    start, counted = len(frames), connection.frames_sent
                    publish("", queue, body, properties, mandatory=True)
                    verified = frames[start:] == list(framed(body)) and connection.frames_sent == counted + 3
                    if not verified:
                        self._plain_publish("pika's frames for a message differ from the fast path's, or do not "
                                            "pass through Connection._adapter_emit_data")
                        return batch[index + 1:]
                    self._framing = True
        finally:
            del connection._adapter_emit_data
            connection.bytes_sent += framed_bytes  # pika's statistics, kept as if pika had framed them
            connection.frames_sent += 3 * framed_here
            if frames:
                connection._adapter_emit_data(b"".join(frames))
        return []

    def _plain_publish(self, reason: str) -> None:
        """Fall back to basic_publish for the rest of this connection, saying why once a run."""
        self._framing = False
        if self.plain_reason is None:
            self.plain_reason = reason
            self.say(f"publishing through pika's basic_publish, one write a frame ({reason})")

    def _on_confirm(self, frame) -> None:
        tag, multiple = frame.method.delivery_tag, frame.method.multiple
        acked = isinstance(frame.method, pika.spec.Basic.Ack)
        tags = [t for t in itertools.takewhile(lambda t: t <= tag, self._unconfirmed)] if multiple else [tag]
        for confirmed_tag in tags:
            message = self._unconfirmed.pop(confirmed_tag)
            if not acked:
                self.report.nacked += 1
                if self.report.nacked == 1:  # a flood at a full queue is refused by the thousand: one line, then a count
                    self.say(f"the broker refused (nacked) message {message.message_id}: it is not on the queue "
                             "(further refusals are counted in the summary)")
            elif message.message_id in self._returned:
                self.report.unroutable += 1
                self.say(f"unroutable: no queue named {self.queue.name!r} took message {message.message_id}")
            else:
                self.report.confirmed += 1
                self.on_sent(message)
        self._publish_more()


EPILOG = """\b
Examples:
  ./sender.py --vhost alice --username alice "Hello World!" "a longer task....."
  ./sender.py --count 12 --length 3 --durable --persistent
  seq 1 100 | ./sender.py --queue numbers
  ./sender.py --purge            ./sender.py --delete-queue [--force]
  ./sender.py --list-queues      (your vhost's queues: ready, unacked, consumers)
  AMQP_URL=amqp://alice:secret@localhost/alice ./sender.py --count 100000 --quiet
  LABKIT_PLAIN_PUBLISH=1 ./sender.py --count 1000   (every message through pika's basic_publish: slower)
"""


def main(messages: tuple[str, ...], connection: ConnectionSettings, queue: QueueSettings,
         settings: SenderSettings) -> None:
    """Send the messages (or --count generated ones, or standard input's lines) as the settings say: the command
    line's work, once its options are parsed (see cli at the end of this file)."""
    count, quiet = settings.count, settings.quiet
    if settings.list_queues and (messages or count or settings.purge or settings.delete_queue):
        raise click.UsageError("--list-queues lists and exits: give it no messages, --count, --purge or --delete-queue")
    if settings.delete_queue and (messages or count or settings.purge):
        raise click.UsageError("--delete-queue deletes and exits: give it no messages, --count or --purge")
    if settings.force and not settings.delete_queue:
        raise click.UsageError("--force only applies to --delete-queue")
    if messages and count:
        raise click.UsageError("give messages as arguments or --count, not both")
    # Purge or delete alone never waits on standard input, which may be an open pipe (ssh, cron).
    reads_stdin = not (messages or count or settings.purge or settings.delete_queue or settings.list_queues) and \
        not sys.stdin.isatty()
    if not (messages or count or reads_stdin or settings.delete_queue or settings.purge or settings.list_queues):
        raise click.UsageError("nothing to send: give messages as arguments, --count N, or lines on standard input")

    brokers = connection.brokers()
    for node in brokers.nodes:
        node.blocked_connection_timeout = settings.blocked_timeout
    if settings.list_queues:
        admin = open_connection(brokers, connection.retry_for, quiet)
        try:
            click.echo(queue_table(list_queues(admin.channel, ManagementAPI(brokers.current, connection.management_url)),
                                   brokers.current.virtual_host))
        finally:
            close_quietly(admin)
        return
    if settings.delete_queue or settings.purge:
        admin = open_connection(brokers, connection.retry_for, quiet)
        try:
            if settings.delete_queue:
                held = delete_queue(admin.channel(), queue.name, settings.force)
                click.echo(f"deleted queue {queue.name!r} on vhost {brokers.current.virtual_host!r} ({held} messages "
                           "in it)")
                if delete_own_policy(queue.name, brokers.current, connection.management_url):
                    click.echo(f"deleted policy {POLICY_PREFIX + queue.name!r}, which set its limits")
                return
            click.echo(f"purged {purge_queue(admin.channel(), queue.name)} messages from queue {queue.name!r}")
        finally:
            close_quietly(admin)
        if not (messages or count):
            return

    if count or messages:
        source = MessageSource(new_message(body) for body in (numbered_bodies(count, settings.length) if count
                                                              else messages))
    else:
        source = StreamSource(sys.stdin.buffer)
    if settings.declare:
        queue = settle_limits(queue, brokers.current, connection.management_url,
                              lambda line: click.echo(line, err=True))
    publisher = Publisher(brokers, queue, declare=settings.declare, persistent=settings.persistent,
                          confirm=settings.confirm, window=settings.confirm_window,
                          say=lambda text: click.echo(text, err=True))
    show_bar = not quiet and count and count >= PROGRESS_BAR_FROM
    with (click.progressbar(length=count, label="sending", file=sys.stderr) if show_bar
          else contextlib.nullcontext()) as bar:
        if show_bar:
            publisher.on_sent = lambda _message: bar.update(1)
        elif not quiet:
            publisher.on_sent = lambda message: click.echo(f"sent {message.body.decode('utf-8', 'replace')!r}")
        try:
            report = publisher.run(source, connection.retry_for, quiet)
        except (BrokerError, KeyboardInterrupt) as exc:
            if publisher.report.published:  # say exactly how far it got before the failure
                click.echo(publisher.report.summary(queue.name, brokers.current.virtual_host, settings.confirm),
                           err=True)
            if isinstance(exc, KeyboardInterrupt):
                raise BrokerError(f"interrupted: {publisher.report.confirmed} messages confirmed",
                                  EXIT_INTERRUPTED) from None
            raise
    click.echo(report.summary(queue.name, brokers.current.virtual_host, settings.confirm))
    if report.nacked:
        click.echo(why_refused(queue.name, report.nacked, brokers.current, connection.management_url), err=True)
    if report.nacked or report.unroutable:
        sys.exit(EXIT_NOT_CONFIRMED)



# --- what the producer keeps: its report, its exit codes, the queue's administration ---

EXIT_NOT_CONFIRMED = 7  # some messages were nacked or unroutable: they are not on the queue
EXIT_QUEUE_IN_USE = 8  # --delete-queue refused: the queue has consumers (use --force)
EXIT_BLOCKED = 10  # the broker blocked publishing (memory or disk alarm) for longer than --blocked-timeout
EXIT_TOO_LARGE = 11  # a message is larger than the broker's max_message_size
EXIT_API_UNREACHABLE = 16  # --list-queues: no management API answers (at --management-url, or http://HOST:15672)
EXIT_API_REFUSED = 17  # --list-queues: the management API refuses this user (no management tag)

STATISTICS_WAIT = 6.0  # seconds to wait for a new queue's first statistics (collected every 5 s by default)
PROGRESS_BAR_FROM = 100  # from this many generated messages on, a progress bar replaces one line per message


@dataclass
class Report:
    """What became of the messages of one run."""

    published: int = 0
    confirmed: int = 0
    nacked: int = 0
    unroutable: int = 0
    resent: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def seconds(self) -> float:
        return max(self.finished - self.started, 1e-9)

    def summary(self, queue: str, vhost: str, confirm: bool) -> str:
        verb = "sent" if confirm else "published (unconfirmed)"
        rate = self.confirmed / self.seconds
        line = f"{verb} {self.confirmed} messages to queue {queue!r} on vhost {vhost!r} in {self.seconds:.2f}s ({rate:,.0f} msg/s)"
        problems = [f"{n} {what}" for n, what in ((self.nacked, "nacked by the broker"),
                                                   (self.unroutable, "unroutable (no such queue)"),
                                                   (self.resent, "resent after a lost connection")) if n]
        return line + ("; " + ", ".join(problems) if problems else "")


class ResumeAfterLoss(Exception):
    """The connection dropped mid-send; the unconfirmed messages will be published again."""


PLAIN_PUBLISH = "LABKIT_PLAIN_PUBLISH"  # set to 1: the fast path is off, every message goes through basic_publish


def missing_framing_internals(connection) -> Optional[str]:
    """What the fast path (Publisher._publish_framed) needs of pika's connection and does not find there, or that it
    is turned off; None when all is there. Checked once a connection; what the internals do is checked by its
    first message."""
    if os.environ.get(PLAIN_PUBLISH) == "1":
        return f"{PLAIN_PUBLISH}=1"
    pika_version = f"pika {getattr(pika, '__version__', '?')}"
    emit = getattr(type(connection), "_adapter_emit_data", None)
    if not callable(emit) or "_adapter_emit_data" in vars(connection):  # a method of the class, to shadow and restore
        return f"{pika_version} has no Connection._adapter_emit_data method"
    missing = [name for name in ("_body_max_length", "bytes_sent", "frames_sent")
               if not isinstance(getattr(connection, name, None), int)]
    if missing:
        return f"{pika_version} has no Connection.{', '.join(missing)} as the fast path knows it"
    return None


def channel_error(exc: amqp.ChannelClosedByBroker, queue: str) -> BrokerError:
    """Explain why the broker closed the publishing channel."""
    too_large = re.search(r"message size (\d+) is larger than configured max size (\d+)", exc.reply_text)
    if too_large:
        size, limit = too_large.groups()
        return BrokerError(f"a message of {int(size):,} bytes is over the broker's limit of {int(limit):,} bytes",
                           EXIT_TOO_LARGE)
    return queue_error(exc, queue)


def purge_queue(channel, queue: str) -> int:
    """Remove every ready message from the queue; return how many were removed."""
    try:
        return channel.queue_purge(queue).method.message_count
    except amqp.ChannelClosedByBroker as exc:
        raise queue_error(exc, queue) from None


def delete_queue(channel, queue: str, force: bool = False) -> int:
    """Delete the queue; refuse while consumers are attached unless `force`. Return how many messages it held."""
    try:
        consumers = channel.queue_declare(queue, passive=True).method.consumer_count
    except amqp.ChannelClosedByBroker as exc:
        raise queue_error(exc, queue) from None
    if consumers and not force:
        raise BrokerError(f"queue {queue!r} has {consumers} consumer(s): stop them first, or add --force",
                          EXIT_QUEUE_IN_USE)
    # The consumer check above is the guard: quorum queues refuse queue.delete with if-unused (540 NOT_IMPLEMENTED,
    # closing the connection), so the flag cannot close the small window between the check and the delete.
    try:
        return channel.queue_delete(queue).method.message_count
    except amqp.ChannelClosedByBroker as exc:
        raise queue_error(exc, queue) from None


class QueueRow(NamedTuple):
    """One queue as --list-queues shows it; None for a figure the broker did not give."""

    name: str
    type: str
    durable: bool
    ready: Optional[int]
    unacked: Optional[int]
    consumers: Optional[int]


def with_statistics(ask: Callable[[], T], counted: Callable[[T], bool]) -> T:
    """The management API's answer once the broker's statistics are in it. A queue declared a moment ago has none
    until the next collection (every 5 s by default): ask again, for up to STATISTICS_WAIT seconds."""
    answer = ask()
    deadline = time.monotonic() + STATISTICS_WAIT
    while not counted(answer) and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = ask()
    return answer


def list_queues(open_channel: Callable[[], object], api: ManagementAPI) -> list[QueueRow]:
    """Every queue of the user's vhost, by name, with its figures; made with the user's own credentials, so a
    student sees their own vhost (with the management tag, which provisioning gives every student).

    Only the management API lists queues, but its figures are statistics the broker refreshes every few seconds
    (collect_statistics_interval: 5 s by default), so just after a send or a worker's start they are those of a
    moment ago. A passive queue_declare answers with a queue's ready messages and consumers as they are now, exactly:
    those two come from it. Unacknowledged messages only the API counts: that column may lag by those seconds.
    """
    try:
        listed = with_statistics(api.queues, lambda queues: all("messages_unacknowledged" in each for each in queues))
    except ManagementError as exc:
        if not exc.refused:
            raise BrokerError(f"cannot list queues: {exc}", EXIT_API_UNREACHABLE) from None
        raise BrokerError(f"cannot list queues: {exc}; the management API shows a user their queues only with the "
                          "management tag, which your instructor gives", EXIT_API_REFUSED) from None
    rows, channel = [], None
    for queue in sorted(listed, key=lambda each: each["name"]):
        ready, consumers = queue.get("messages_ready"), queue.get("consumers")
        try:
            channel = channel if channel is not None and channel.is_open else open_channel()
            answer = channel.queue_declare(queue["name"], passive=True).method
            ready, consumers = answer.message_count, answer.consumer_count
        except amqp.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                continue  # deleted since the API listed it
            # 405 RESOURCE_LOCKED: another connection's exclusive queue (ipython's server-named ones): only the
            # API's figures, which any user of the vhost may read
        rows.append(QueueRow(queue["name"], queue.get("type", "classic"), bool(queue.get("durable")), ready,
                             queue.get("messages_unacknowledged"), consumers))
    return rows


def queue_table(rows: list[QueueRow], vhost: str) -> str:
    """The rows as aligned columns, numbers to the right; '-' for a figure the broker did not give."""
    if not rows:
        return f"no queues on vhost {vhost!r}"
    cells = [("queue", "type", "durable", "ready", "unacked", "consumers")]
    cells += [(row.name, row.type, "yes" if row.durable else "no",
               *("-" if figure is None else str(figure) for figure in (row.ready, row.unacked, row.consumers)))
              for row in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(6)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(line[:3], widths[:3])),
                                 *(cell.rjust(width) for cell, width in zip(line[3:], widths[3:]))]).rstrip()
                     for line in cells)


def why_refused(queue: str, refused: int, node: pika.ConnectionParameters, management_url: Optional[str]) -> str:
    """One line on the messages the broker refused. A queue full at a length limit that refuses new messages
    (overflow reject-publish, as the class's cap does) is the usual reason; the management API, when it answers this
    user, names the limit and whether the instructor set it."""
    kept = f"those {refused} were never sent, and nothing already on the queue was lost"
    remedy = "start a worker to drain the queue (or empty it with --purge), then send them again"
    try:
        api = ManagementAPI(node, management_url)
        # A queue's policy fields come with its statistics: a queue made by this very run may not have them yet.
        shown = with_statistics(lambda: api.queue(queue) or {}, lambda answer: "effective_policy_definition" in answer)
        limit = length_limit(shown)
    except ManagementError:
        limit = None
    if limit is None:
        return (f"the broker refused {refused} messages, most likely because queue {queue!r} is full at a length "
                f"limit that refuses new messages (overflow reject-publish): {kept}; {remedy}")
    size, by_class = limit
    whose = "the cap your instructor set on every queue of the class" if by_class else "its length limit"
    return f"queue {queue!r} is full at {size}, {whose}: the broker refused {refused} messages; {kept}; {remedy}"


def delete_own_policy(queue: str, node: pika.ConnectionParameters, management_url: Optional[str]) -> bool:
    """Delete the policy settle_limits() set for the queue, if there is one and the user may: a queue made again
    under the same name must not inherit a delivery limit nobody asked for this time."""
    api, name = ManagementAPI(node, management_url), POLICY_PREFIX + queue
    try:
        if not any(each.get("name") == name for each in api.policies()):
            return False
        api.call("DELETE", "policies", name)
    except ManagementError:
        return False  # a user who may not see or delete policies cannot have set this one
    return True


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
class SenderSettings:
    """What to send and how; one field per option of the producer's own."""

    count: Optional[int] = setting(None, "--count", type=click.IntRange(1),
                                   help="Generate this many numbered messages instead.")
    length: int = setting(0, "--length", type=click.IntRange(0), show_default=True,
                          help="Pad generated messages with dots to this many characters "
                               "(the worker works 1 s per character).")
    persistent: bool = setting(False, "--persistent", is_flag=True,
                               help="Mark messages persistent (stored on disk in a durable queue).")
    confirm: bool = setting(True, "--confirm/--no-confirm", show_default=True,
                            help="Wait for publisher confirms, so 'sent' means the broker has the message.")
    confirm_window: int = setting(1024, "--confirm-window", type=click.IntRange(1), show_default=True,
                                  help="Most messages in flight awaiting a confirm.")
    declare: bool = setting(True, "--declare/--no-declare", show_default=True,
                            help="Declare the queue before publishing.")
    blocked_timeout: float = setting(60.0, "--blocked-timeout", type=click.FloatRange(0, min_open=True),
                                     show_default=True, help="Give up when the broker blocks publishing "
                                                             "(memory or disk alarm) for this many seconds.")
    purge: bool = setting(False, "--purge", is_flag=True, help="Remove all ready messages from the queue first.")
    delete_queue: bool = setting(False, "--delete-queue", is_flag=True,
                                 help="Delete the queue and exit; refused while it has consumers.")
    force: bool = setting(False, "--force", is_flag=True,
                          help="With --delete-queue: delete even while consumers are attached.")
    list_queues: bool = setting(
        False, "--list-queues", is_flag=True,
        help="List your vhost's queues and exit: type, durability, ready and unacknowledged messages, consumers. "
             "Needs the management API (--management-url) and the management tag on your user. Ready and consumers "
             "are exact; unacked is the API's statistics, refreshed every few seconds (5 s by default).")
    quiet: bool = setting(False, "--quiet", is_flag=True, help="Print only the summary line.")


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@command_options(ConnectionSettings, QueueSettings, SenderSettings)
@click.argument("messages", nargs=-1)
def cli(messages: tuple[str, ...], **options) -> None:
    """Send MESSAGES to a queue: the arguments, --count generated ones, or one per line of standard input.

    Every option can also come from the environment variable shown beside it.
    """
    main(messages, parse(ConnectionSettings, options), parse(QueueSettings, options), parse(SenderSettings, options))


if __name__ == "__main__":
    cli()
