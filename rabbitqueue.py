#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["pika>=1.3,<2"]
# ///
"""A task queue on RabbitMQ with the small surface of the hotqueue library, and acknowledgements underneath.

One file, like sender.py and qprocessor.py: upload it next to your code, or import it in ipython.

    >>> from rabbitqueue import RabbitQueue
    >>> q = RabbitQueue("queue", host="localhost", vhost="alice", username="alice", password="...")
    >>> q.put("one", {"two": 2})      # returns once the broker has confirmed both
    >>> len(q)
    2
    >>> for item in q.consume(timeout=1):
    ...     print(item)               # the item is acknowledged when the loop comes back for the next one

    >>> @q.worker
    ... def echo(item):
    ...     print(item)               # acknowledged when echo returns; requeued when it raises
    >>> echo()                        # consumes until interrupted

Where it departs from hotqueue, and why:

- hotqueue pops an item before the work on it is done, so a consumer that dies loses it. Here `consume()` and
  `worker` acknowledge an item only after the loop's body or the function has returned; a crash or an exception
  gives the item back to the queue.
- An item that keeps failing is not retried for ever: after `attempts` deliveries it is dead-lettered to the queue
  `<name>.dead` (a quorum queue's delivery limit, with the worker rejecting the last attempt itself), where a
  person can look at it.
- Items travel as JSON, not pickle: unpickling runs code chosen by whoever sent the item, which on a shared
  classroom broker is anyone.
- `get()` takes an item for good (acknowledged at once), as hotqueue's does: use it to look, not to work.

Connection settings come from the arguments, else from the environment: AMQP_URL (amqp://user:pass@host:port/vhost),
or RABBITMQ_HOST, RABBITMQ_PORT, RABBITMQ_VHOST, RABBITMQ_USERNAME, RABBITMQ_PASSWORD.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import pika
import pika.exceptions

__all__ = ["RabbitQueue", "QueueError", "QueueUnavailable"]

log = logging.getLogger("rabbitqueue")

DEFAULT_ATTEMPTS = 3  # deliveries of one item before it is dead-lettered
PUMP_SECONDS = 0.5  # while a worker function runs, the longest the connection waits between heartbeat checks
NO_ITEM = object()


class QueueError(Exception):
    """Something about the queue or an item is wrong: one line, meant for a person."""


class QueueUnavailable(QueueError):
    """The broker cannot be reached, refused the login, or did not confirm an item."""


def _from_env(name: str, default: Optional[str]) -> Optional[str]:
    value = os.environ.get(name)
    return value if value else default


@dataclass(frozen=True)
class ConnectionSettings:
    """Where the broker is and who we are there; the password stays out of repr()."""

    host: str = "localhost"
    port: int = 5672
    vhost: str = "/"
    username: str = "guest"
    password: str = field(default="guest", repr=False)
    url: Optional[str] = field(default=None, repr=False)  # wins over the fields above when given
    heartbeat: Optional[int] = None  # None: the broker's proposal (60 s by default)

    @classmethod
    def resolve(cls, url: Optional[str], host: Optional[str], port: Optional[int], vhost: Optional[str],
                username: Optional[str], password: Optional[str], heartbeat: Optional[int]) -> "ConnectionSettings":
        """Arguments first, then the environment, then the defaults; an explicit host ignores AMQP_URL."""
        if url is None and host is None:
            url = _from_env("AMQP_URL", None)
            if url:
                url = url.split()[0]  # the scripts accept several nodes separated by spaces; one is enough here
        return cls(host=host or _from_env("RABBITMQ_HOST", "localhost"),
                   port=int(port or _from_env("RABBITMQ_PORT", "5672")),
                   vhost=vhost or _from_env("RABBITMQ_VHOST", "/"),
                   username=username or _from_env("RABBITMQ_USERNAME", "guest"),
                   password=password or _from_env("RABBITMQ_PASSWORD", "guest"),
                   url=url, heartbeat=heartbeat)

    def parameters(self) -> pika.connection.Parameters:
        if self.url:
            params = pika.URLParameters(self.url)
        else:
            params = pika.ConnectionParameters(host=self.host, port=self.port, virtual_host=self.vhost,
                                               credentials=pika.PlainCredentials(self.username, self.password))
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = 30
        if self.heartbeat is not None:
            params.heartbeat = self.heartbeat
        return params

    def where(self) -> str:
        if self.url:
            parsed = urllib.parse.urlsplit(self.url)
            vhost = urllib.parse.unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
            return f"{parsed.hostname}:{parsed.port or 5672} vhost {vhost!r}"
        return f"{self.host}:{self.port} vhost {self.vhost!r}"


class RabbitQueue:
    """A durable queue of JSON items on RabbitMQ, used like hotqueue's HotQueue.

    Nothing connects until the first call that needs the broker, so a module can create its queue at import.
    The queue is a durable quorum queue whose delivery limit is `attempts - 1` (so an item is delivered at most
    `attempts` times) and whose dead-letter queue is `dead_letter_queue` (default `<name>.dead`, also durable).
    """

    def __init__(self, name: str, url: Optional[str] = None, *, host: Optional[str] = None,
                 port: Optional[int] = None, vhost: Optional[str] = None, username: Optional[str] = None,
                 password: Optional[str] = None, attempts: int = DEFAULT_ATTEMPTS,
                 dead_letter_queue: Optional[str] = None, heartbeat: Optional[int] = None) -> None:
        if not name:
            raise QueueError("the queue needs a name")
        if attempts < 1:
            raise QueueError(f"attempts must be 1 or more, not {attempts}")
        self.name = name
        self.attempts = attempts
        self.dead_letter_queue = dead_letter_queue or f"{name}.dead"
        self.settings = ConnectionSettings.resolve(url, host, port, vhost, username, password, heartbeat)
        self._connection: Optional[pika.BlockingConnection] = None
        self._channel = None
        self._lock = threading.RLock()  # one BlockingConnection, shared by the threads of a web server

    def __repr__(self) -> str:
        return f"RabbitQueue({self.name!r} at {self.settings.where()}, attempts={self.attempts})"

    # -- the connection, opened on first use -------------------------------------------------------------------

    def _open(self):
        if self._channel is not None and self._channel.is_open and self._connection.is_open:
            return self._channel
        self.close()
        try:
            self._connection = pika.BlockingConnection(self.settings.parameters())
            channel = self._connection.channel()
            channel.confirm_delivery()
            self._declare(channel)
            channel.basic_qos(prefetch_count=1)  # one item at a time per consumer: fair dispatch
        except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError) as exc:
            self.close()
            # pika's guess from the handshake step the connection closed at: a refusal only when the broker's reply
            # (403 or 530) is inside; a connection reset there is a broker starting or stopping.
            if not re.search(r"\((403|530)\)", " ".join(map(str, exc.args))):
                raise QueueUnavailable(f"cannot reach a broker at {self.settings.where()}: the connection was lost "
                                       "during the handshake (is the broker restarting?)") from None
            if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
                raise QueueUnavailable(f"login refused for user {self.settings.username!r} at "
                                       f"{self.settings.where()}") from None
            raise QueueUnavailable(f"no access to {self.settings.where()}: wrong vhost or no permission") from None
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.close()
            raise QueueError(f"the broker refused queue {self.name!r}: {exc.reply_code} {exc.reply_text}") from None
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise QueueUnavailable(f"cannot reach a broker at {self.settings.where()}: "
                                   f"{type(exc).__name__} {exc}".strip()) from None
        self._channel = channel
        return channel

    def _declare(self, channel) -> None:
        """Both queues durable (RabbitMQ 4 refuses transient ones) and quorum (the delivery limit)."""
        channel.queue_declare(self.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_declare(self.name, durable=True, arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": self.attempts - 1,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_letter_queue,
        })

    def close(self) -> None:
        """Close the connection; the next call opens a new one. Unacknowledged items go back to the queue."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                pass

    # -- producing ---------------------------------------------------------------------------------------------

    def put(self, *items: Any) -> None:
        """Put each item on the queue as persistent JSON; returns once the broker has confirmed every one.

        A connection found dead (an idle web server's, say) is opened again and the put tried once more, so an
        item may arrive twice but is never reported sent when it is not. Raises QueueUnavailable otherwise.
        """
        bodies = []
        for item in items:
            try:
                bodies.append(json.dumps(item).encode())
            except (TypeError, ValueError) as exc:
                raise QueueError(f"cannot put {item!r}: items must be JSON ({exc})") from None
        with self._lock:
            for attempt in (1, 2):
                try:
                    channel = self._open()
                    for body in bodies:
                        channel.basic_publish("", self.name, body, mandatory=True, properties=pika.BasicProperties(
                            delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json"))
                    return
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                    raise QueueUnavailable(f"the broker did not take an item for {self.name!r}: "
                                           f"{type(exc).__name__}") from None
                except (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosed, OSError) as exc:
                    self.close()
                    if attempt == 2:
                        raise QueueUnavailable(f"lost the broker at {self.settings.where()} while putting: "
                                               f"{type(exc).__name__}") from None

    # -- looking -----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Items waiting on the queue (not those a consumer holds unacknowledged)."""
        with self._lock:
            result = self._open().queue_declare(self.name, passive=True)
            return result.method.message_count

    def clear(self) -> None:
        """Remove every waiting item."""
        with self._lock:
            self._open().queue_purge(self.name)

    def get(self, block: bool = False, timeout: Optional[float] = None) -> Any:
        """Take one item off the queue for good (acknowledged at once, as hotqueue's get does), or None.

        With block=True wait for one, at most `timeout` seconds (None: as long as it takes).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                channel = self._open()
                method, _, body = channel.basic_get(self.name, auto_ack=False)
                if method is not None:
                    item = self._decode(body, channel, method.delivery_tag)
                    if item is not NO_ITEM:
                        channel.basic_ack(method.delivery_tag)
                        return item
                    continue
            if not block or (deadline is not None and time.monotonic() >= deadline):
                return None
            self._connection.sleep(0.05)

    # -- consuming ---------------------------------------------------------------------------------------------

    def _decode(self, body: bytes, channel, tag: int) -> Any:
        """The item, or NO_ITEM for a body that is not JSON (dead-lettered at once: retrying cannot fix it)."""
        try:
            return json.loads(body)
        except ValueError:
            log.error("dead-lettering a message on %r that is not JSON: %r", self.name, body[:80])
            channel.basic_reject(tag, requeue=False)
            return NO_ITEM

    def _deliveries(self, timeout: Optional[float]) -> Iterator[tuple[Any, Any, Any]]:
        """(channel, method, properties, item) for each delivery; ends after `timeout` seconds without one."""
        channel = self._open()
        waited_since = time.monotonic()
        try:
            for method, properties, body in channel.consume(self.name, inactivity_timeout=0.5):
                if method is None:
                    if timeout is not None and time.monotonic() - waited_since >= timeout:
                        break
                    continue
                item = self._decode(body, channel, method.delivery_tag)
                if item is not NO_ITEM:
                    yield channel, method, properties, item
                waited_since = time.monotonic()
        finally:
            if channel.is_open:
                channel.cancel()  # stop deliveries; anything unacknowledged goes back to the queue

    def consume(self, timeout: Optional[float] = None) -> Iterator[Any]:
        """Yield items as they arrive; with `timeout`, stop after that many seconds without one.

        An item is acknowledged when the loop comes back for the next one, that is after the loop's body has
        finished with it. When the loop is left while an item is in hand (an exception, a break) that item goes
        back to the queue, and counts as a failed attempt.
        """
        for channel, method, _, item in self._deliveries(timeout):
            try:
                yield item
            except GeneratorExit:
                if channel.is_open:
                    # Stop deliveries first: one that arrived meanwhile would be handed back by the cancel as
                    # a nack, which before RabbitMQ 4 counts as a failed attempt the loop never saw.
                    channel.cancel()
                    channel.basic_reject(method.delivery_tag, requeue=True)
                raise
            channel.basic_ack(method.delivery_tag)

    def attempt_of(self, properties) -> int:
        """Which delivery of its item this is, 1 for the first, from the quorum queue's x-delivery-count."""
        return int((properties.headers or {}).get("x-delivery-count", 0)) + 1

    def worker(self, func: Optional[Callable[[Any], Any]] = None, *, timeout: Optional[float] = None,
               on_give_up: Optional[Callable[[Any, BaseException], Any]] = None):
        """Decorator: calling the decorated function consumes the queue, calling `func(item)` for each item.

            @q.worker
            def work(item): ...
            work()              # runs until interrupted (or `timeout` seconds without an item)

        The item is acknowledged after `func` returns. When it raises, the item is requeued; on its last
        attempt `on_give_up(item, error)` is called (to record the failure) and it is dead-lettered instead.
        `func` runs in a thread while this one keeps the connection's heartbeats going, so long work is fine.
        """
        if func is None:
            return functools.partial(self.worker, timeout=timeout, on_give_up=on_give_up)

        @functools.wraps(func)
        def run() -> None:
            try:
                self._work_loop(func, timeout, on_give_up)
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosed) as exc:
                self.close()  # what this worker held unacknowledged is back on the queue
                raise QueueUnavailable(f"lost the broker at {self.settings.where()}: {type(exc).__name__}") from None

        return run

    def _work_loop(self, func: Callable[[Any], Any], timeout: Optional[float],
                   on_give_up: Optional[Callable[[Any, BaseException], Any]]) -> None:
        for channel, method, properties, item in self._deliveries(timeout):
            error = self._run_in_thread(func, item)
            if error is None:
                channel.basic_ack(method.delivery_tag)
                continue
            attempt = self.attempt_of(properties)
            if attempt < self.attempts:
                log.warning("%s(%r) raised %s: %s; requeued (attempt %d of %d)", func.__name__, item,
                            type(error).__name__, error, attempt, self.attempts)
                channel.basic_reject(method.delivery_tag, requeue=True)
                continue
            log.error("%s(%r) raised %s: %s; attempt %d of %d, dead-lettered to %r", func.__name__, item,
                      type(error).__name__, error, attempt, self.attempts, self.dead_letter_queue)
            if on_give_up is not None:
                on_give_up(item, error)
            channel.basic_reject(method.delivery_tag, requeue=False)

    def _run_in_thread(self, func: Callable[[Any], Any], item: Any) -> Optional[BaseException]:
        """Call func(item) in a thread, answering heartbeats meanwhile; the exception it raised, or None."""
        outcome: list[Optional[BaseException]] = []

        connection = self._connection

        def call() -> None:
            try:
                func(item)
                outcome.append(None)
            except Exception as exc:  # the item's failure, reported back; the worker goes on
                outcome.append(exc)
            finally:
                # Wake the waiting connection at once, so quick work is acknowledged without waiting out the pump.
                if connection.is_open:
                    connection.add_callback_threadsafe(lambda: None)

        thread = threading.Thread(target=call, name=f"work-{self.name}", daemon=True)
        thread.start()
        while not outcome:
            connection.process_data_events(time_limit=PUMP_SECONDS)
        thread.join()
        return outcome[0]


def waiting(name: str, url: Optional[str] = None) -> int:
    """How many messages wait on any queue, looked at without declaring it (a passive declare): a dead-letter queue,
    a queue sender.py made, one with other arguments. Raises QueueError when there is no such queue."""
    settings = ConnectionSettings.resolve(url, None, None, None, None, None, None)
    try:
        connection = pika.BlockingConnection(settings.parameters())
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise QueueUnavailable(f"cannot reach a broker at {settings.where()}: {type(exc).__name__}") from None
    try:
        return connection.channel().queue_declare(name, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise QueueError(f"no queue {name!r} at {settings.where()}" if exc.reply_code == 404 else
                         f"the broker refused queue {name!r}: {exc.reply_code} {exc.reply_text}") from None
    finally:
        if connection.is_open:
            connection.close()


if __name__ == "__main__":
    # Run as a script it tells how many items wait on a queue: python rabbitqueue.py QUEUE (settings from the
    # environment). It only looks: the queue is not declared, so any queue will do.
    if len(sys.argv) != 2:
        sys.exit("usage: rabbitqueue.py QUEUE   (AMQP_URL or RABBITMQ_* in the environment)")
    try:
        print(waiting(sys.argv[1]))
    except QueueError as exc:
        sys.exit(f"rabbitqueue: {exc}")
