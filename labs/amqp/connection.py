"""The connection code of sender.py and qprocessor.py: settings parsed once from the options, connecting with
retries across a cluster's nodes, the queue's declaration, and the worker's event kinds.

Each script must run when copied alone next to pika, click and tenacity, so each carries its own copy of this code
between its "connection code" marker lines, as SQLite ships one generated "amalgamation" of its many source files.
The copy is generated from three modules, in this order, each from its embed line on ("# --- embedded from here on ..."): labs/amqp/errors.py (exit
codes and one-line errors), labs/amqp/management.py (the management API, limits by policy) and this one. Edit them
here, never in the scripts, then regenerate the scripts' copies:

    .venv/bin/python -m labs.amqp.embed            # rewrite the block in sender.py and qprocessor.py
    .venv/bin/python -m labs.amqp.embed --check    # exit 1 with a diff when a copy differs (tests/standalone/test_embed.py)

What sits above each embed line (docstring, imports) is not embedded: each script makes the same imports at its top.
The kit imports the code as the modules it is:

    from labs.amqp.connection import Event, QueueSettings, open_connection
    from labs.amqp.errors import BrokerError, explain
    from labs.amqp.management import ManagementAPI
"""
from __future__ import annotations

import itertools
import random
import re
import ssl
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Callable, Optional, TypeVar

import click
import pika
import tenacity
from pika import exceptions as amqp

from labs.amqp.errors import QUEUE_TYPES, declare_refused, explain, is_transient, queue_error

# --- embedded from here on: the body of the scripts' connection code ---

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
