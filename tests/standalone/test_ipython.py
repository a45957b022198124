"""The documented ipython functions' error paths, called as a student's ipython session calls them.

Each test runs a fresh python process that imports the scripts from the kit's folder, calls the functions, and
prints what they returned or raised as JSON.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest

from labs.amqp.connection import Event
from tests.helpers import ROOT

PRELUDE = """
import json, sys
sys.path.insert(0, {root!r})
import pika, sender, qprocessor

def outcome(call):
    try:
        return {{"returned": repr(call())}}
    except Exception as exc:
        return {{"raised": type(exc).__name__, "message": str(getattr(exc, "message", exc)),
                 "exit_code": getattr(exc, "exit_code", None)}}

url = {url!r}
def channel():
    return sender.connect(url=url, retry_for=0)
"""


def ipython(space, code: str) -> dict:
    """Run `code` after the prelude; it must print one JSON object as its last line."""
    program = PRELUDE.format(root=str(ROOT), url=space.url) + textwrap.dedent(code)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                            env=space.env(), stdin=subprocess.DEVNULL, cwd=str(space.folder))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("module", ["sender", "qprocessor"])
def test_connect_refusals_raise_the_scripts_one_line_errors(space, closed_port, module):
    host, port = space.broker.host, space.broker.port
    got = ipython(space, f"""
        kw = dict(host={host!r}, port={port}, vhost={space.vhost!r}, username={space.username!r}, retry_for=0)
        print(json.dumps({{
            "password": outcome(lambda: {module}.connect(**{{**kw, "password": "wrong"}})),
            "vhost": outcome(lambda: {module}.connect(**{{**kw, "password": {space.password!r},
                                                         "vhost": "no-such-vhost"}})),
            "port": outcome(lambda: {module}.connect(**{{**kw, "password": {space.password!r},
                                                        "port": {closed_port}}})),
            "right": outcome(lambda: {module}.connect(**{{**kw, "password": {space.password!r}}}).is_open),
        }}))
    """)
    assert got["password"] == {"raised": "BrokerError", "exit_code": 4, "message":
                               f"login refused for user {space.username!r} at {host}:{port}: wrong username or password"}
    assert got["vhost"] == {"raised": "BrokerError", "exit_code": 5,
                            "message": f"vhost 'no-such-vhost' does not exist at {host}:{port}"}
    assert got["port"]["raised"] == "BrokerError" and got["port"]["exit_code"] == 3
    assert got["port"]["message"].startswith(f"cannot reach a broker at {host}:{closed_port}")
    assert got["right"] == {"returned": "True"}


def test_declare_queue_with_other_durability_raises_the_mismatch_error(space):
    got = ipython(space, """
        ch = channel()
        first = outcome(lambda: sender.declare_queue(ch, "kept", durable=True))
        print(json.dumps({"first": first,
                          "again": outcome(lambda: sender.declare_queue(channel(), "kept", durable=False)),
                          "worker": outcome(lambda: qprocessor.declare_queue(channel(), "kept", durable=False))}))
    """)
    assert got["first"] == {"returned": "0"}
    for side in ("again", "worker"):
        assert got[side]["raised"] == "BrokerError" and got[side]["exit_code"] == 6
        message = got[side]["message"]  # its wording is the scripts' own; it names the queue and the fix
        assert "queue 'kept'" in message and "durable" in message and "--transient" in message, message
        assert "\n" not in message


def test_send_to_a_missing_queue_raises_unroutable_error(space):
    got = ipython(space, """
        ch = channel()
        print(json.dumps({"missing": outcome(lambda: sender.send(ch, "nobody-declared-this", "lost?")),
                          "declared": outcome(lambda: sender.declare_queue(ch, "here")),
                          "sent": outcome(lambda: bool(sender.send(ch, "here", "kept")))}))
    """)
    assert got["missing"]["raised"] == "UnroutableError"
    assert got["declared"] == {"returned": "0"}
    assert got["sent"] == {"returned": "True"}  # it returns the message_id
    assert space.ready("here") == 1


def test_purge_and_delete_of_a_missing_queue_say_it_does_not_exist(space):
    got = ipython(space, """
        print(json.dumps({"purge": outcome(lambda: sender.purge_queue(channel(), "ghost")),
                          "delete": outcome(lambda: sender.delete_queue(channel(), "ghost"))}))
    """)
    for operation in ("purge", "delete"):
        assert got[operation] == {"raised": "BrokerError", "exit_code": 6, "message": "queue 'ghost' does not exist"}


def test_delete_queue_refuses_while_a_consumer_is_attached_unless_forced(space):
    space.send("--queue", "busy", "one", "two")
    worker = space.start_worker("holder", "--queue", "busy", "--acknowledge", "--prefetch", "1",
                                "--seconds-per-char", "10")
    worker.wait_for_events(Event.RECEIVED, 1)
    got = ipython(space, """
        ch = channel()
        print(json.dumps({"refused": outcome(lambda: sender.delete_queue(ch, "busy")),
                          "forced": outcome(lambda: sender.delete_queue(ch, "busy", force=True))}))
    """)
    assert got["refused"] == {"raised": "BrokerError", "exit_code": 8,
                              "message": "queue 'busy' has 1 consumer(s): stop them first, or add --force"}
    assert got["forced"] == {"returned": "1"}  # the ready one; the one in the worker's hands went with the queue
    assert worker.wait(20) == 6


def test_receive_returns_the_body_then_none_when_empty(space):
    got = ipython(space, """
        ch = channel()
        sender.declare_queue(ch, "inbox")
        sender.send(ch, "inbox", "only one")
        inbox = qprocessor.connect(url=url, retry_for=0)
        first = outcome(lambda: qprocessor.receive(inbox, "inbox"))
        then = outcome(lambda: qprocessor.receive(inbox, "inbox"))
        inbox.connection.close()  # an unacknowledged message would be ready again now
        print(json.dumps({"first": first, "then": then, "ready": sender.declare_queue(ch, "inbox")}))
    """)
    assert got == {"first": {"returned": "b'only one'"}, "then": {"returned": "None"}, "ready": 0}
