"""What goes wrong between a script and its broker, each in one line a student can act on, with its exit code.

Part of the scripts' connection code: embedded into sender.py and qprocessor.py from this file's embed line on by
`python -m labs.amqp.embed` (see labs/amqp/connection.py).
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Callable, Optional

import click
import pika
from pika import exceptions as amqp

# --- embedded from here on: the body of the scripts' connection code ---

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
