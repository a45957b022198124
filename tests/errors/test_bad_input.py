"""The rest of the bad-input table: odd bodies, oversized and unroutable messages, a broker that blocks publishers."""
from __future__ import annotations

import subprocess
import sys

import pytest

from labs.amqp.connection import Event
from labs.brokers.container import docker_available, running_container_node
from labs.settings import child_environment
from tests.helpers import SENDER, assert_one_line_error, require, wait_until


def test_a_non_utf8_body_is_processed_without_crashing_the_worker(space):
    sent = subprocess.run([sys.executable, str(SENDER)], input=b"caf\xe9 \xff\xfe\n", capture_output=True,
                          env=space.env(), timeout=60)
    assert sent.returncode == 0 and b"sent 1 messages" in sent.stdout
    worker = space.start_worker("tolerant", "--seconds-per-char", "0", "--max-messages", "1")
    assert worker.wait(30) == 0
    assert worker.bodies(Event.DONE) == ["caf\ufffd \ufffd\ufffd"]  # shown with replacement characters
    assert "Traceback" not in worker.output


def test_an_empty_body_is_sent_and_processed_with_no_work(space):
    assert "sent 1 messages" in space.send("").stdout
    worker = space.start_worker("empty", "--max-messages", "1")
    assert worker.wait(30) == 0
    assert worker.bodies(Event.DONE) == [""]


def test_an_unroutable_message_is_reported_not_counted_as_sent(space):
    result = space.send("--no-declare", "--queue", "nobody-declared-this", "lost?", check=False)
    assert result.returncode == 7
    assert "unroutable: no queue named 'nobody-declared-this'" in result.stderr
    assert "sent 0 messages" in result.stdout and "1 unroutable" in result.stdout


@pytest.fixture
def controllable(restartable):
    """A broker whose settings this suite may change."""
    return restartable


def test_a_body_over_the_broker_limit_is_a_clear_error(space, controllable, rabbitmq_version, tmp_path):
    message = ("small", "x" * 5000, "--queue", "sizes")
    if rabbitmq_version < (4, 0):
        # 3.x reads the limit as each channel opens, so the running node takes a new one.
        controllable.ctl("eval", "application:set_env(rabbit, max_message_size, 4096).")
        try:
            result = space.send(*message, check=False)
        finally:
            controllable.ctl("eval", "application:set_env(rabbit, max_message_size, 134217728).")
    else:
        # 4.x reads it at boot only (set_env is ignored): a node of its own, configured with the limit.
        require(docker_available(), "a second RabbitMQ 4 node runs in Docker")
        with running_container_node("4.3", tmp_path / "node", max_message_size=4096) as node:
            result = subprocess.run([sys.executable, str(SENDER), *message], capture_output=True, text=True,
                                    env=child_environment(AMQP_URL=f"amqp://guest:guest@127.0.0.1:{node.port}/"),
                                    timeout=60)
    assert_one_line_error(result, 11, "a message of 5,000 bytes is over the broker's limit of 4,096 bytes")


def test_sender_says_when_blocked_and_resumes_when_unblocked(space, controllable):
    controllable.ctl("set_vm_memory_high_watermark", "0")
    try:
        sender = space.start_process("sender.py", "--count", "50", "--queue", "blocked", "--quiet")
        wait_until(lambda: "the broker is blocking publishers" in sender.output, 30, "the blocked notice")
        assert sender.process.poll() is None  # waiting, not failing
    finally:
        controllable.ctl("set_vm_memory_high_watermark", "0.4")
    assert sender.wait(30) == 0
    assert "the broker unblocked; resuming" in sender.output and "sent 50 messages" in sender.output


def test_sender_gives_up_after_the_blocked_timeout(space, controllable):
    controllable.ctl("set_vm_memory_high_watermark", "0")
    try:
        result = space.send("--count", "5", "--blocked-timeout", "2", check=False)
    finally:
        controllable.ctl("set_vm_memory_high_watermark", "0.4")
    assert_one_line_error(result, 10, "blocked publishing for over 2s")


@pytest.mark.parametrize("args", [("--heartbeat", "-1"), ("--blocked-timeout", "0"), ("--blocked-timeout", "-5")])
def test_bad_intervals(space, args):
    assert_one_line_error(space.send("x", *args, check=False), 2, args[0])
