"""Every mistake a student makes gives one clear line on stderr and a documented exit code, never a traceback."""
from __future__ import annotations

import socket

import pytest

from tests.helpers import assert_one_line_error
from tests.proxy import CuttableProxy

SCRIPTS = ("send", "run_worker")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens here once the probe closes


def run(space, script: str, *args: str, **env: str):
    return getattr(space, script)(*args, check=False, env=space.env(**env) if env else None)


@pytest.mark.parametrize("script", SCRIPTS)
def test_unreachable_broker_gives_up_after_retrying(space, script):
    url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/"
    result = run(space, script, "--retry-for", "1", "x" if script == "send" else "--max-messages=1", AMQP_URL=url)
    assert_one_line_error(result, 3, "cannot reach a broker at 127.0.0.1", "Connection refused")
    assert "retrying in" in result.stderr  # it did retry before giving up


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_connection_reset_during_login_is_retried_not_called_a_wrong_password(space, script):
    """A broker that is starting or stopping resets connections mid-handshake, and pika calls that a "probable
    authentication error": the scripts must retry it (a worker reconnecting across a restart gave up, saying the
    password was wrong), and say what it was."""
    if script == "run_worker":
        space.send("x")  # something for the worker to take
    proxy = CuttableProxy(space.broker.port, space.broker.host)
    try:
        proxy.reset_logins(2)
        url = space.url.replace(f":{space.broker.port}/", f":{proxy.port}/")
        result = run(space, script, "--retry-for", "30", "x" if script == "send" else "--max-messages=1",
                     AMQP_URL=url)
    finally:
        proxy.close()
    assert "login refused" not in result.stderr, result.stderr
    assert result.stderr.count("the connection was lost during the handshake") == 2, result.stderr
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_wrong_password(space, script):
    url = space.broker.url(space.vhost, space.username, "not-the-password")
    result = run(space, script, "x" if script == "send" else "--max-messages=1", AMQP_URL=url)
    assert_one_line_error(result, 4, f"login refused for user {space.username!r}", "wrong username or password")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_user(space):
    url = space.broker.url(space.vhost, "nobody-" + space.username, "whatever")
    assert_one_line_error(space.send("x", check=False, env=space.env(AMQP_URL=url)), 4, "login refused")


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_vhost(space, script):
    url = space.broker.url(space.vhost + "-typo", space.username, space.password)
    result = run(space, script, "x" if script == "send" else "--max-messages=1", AMQP_URL=url)
    assert_one_line_error(result, 5, f"vhost {space.vhost + '-typo'!r} does not exist")


def test_vhost_of_another_user_is_refused(space, broker):
    broker.admin.add_vhost(space.vhost + "-other")
    try:
        url = space.broker.url(space.vhost + "-other", space.username, space.password)
        result = space.send("x", check=False, env=space.env(AMQP_URL=url))
        assert_one_line_error(result, 5, f"user {space.username!r} has no permission on vhost")
    finally:
        broker.admin.delete_vhost(space.vhost + "-other")


@pytest.mark.parametrize("script", SCRIPTS)
def test_queue_redeclared_with_other_durability(space, script):
    space.send("--queue", "q", "first")  # durable, the default
    result = run(space, script, "--queue", "q", "--transient", "x" if script == "send" else "--max-messages=1")
    assert_one_line_error(result, 6, "queue 'q' exists as a durable queue, but this run declares a transient "
                                     "(non-durable) queue: leave out --transient")


# Each row: how the queue was declared first, how the run declares it, and the line that must name the difference
# with the flags that match the existing queue. RabbitMQ words these differently across versions and properties
# ('quorum' against "the value 'quorum' of type 'longstr'", none): every row runs on the suite's broker.
MISMATCHES = [
    (("--queue-type", "quorum"), (),
     "queue 'm' exists as a quorum queue, but this run declares a classic queue: use --queue-type quorum"),
    (("--queue-type", "quorum"), ("--durable",),
     "queue 'm' exists as a quorum queue, but this run declares a classic queue: use --queue-type quorum"),
    (("--queue-type", "quorum", "--delivery-limit", "3"), (),
     "queue 'm' exists as a quorum queue with x-delivery-limit 3, but this run declares a classic queue with no "
     "x-delivery-limit: use --queue-type quorum, use --delivery-limit 3"),
    (("--durable",), ("--queue-type", "quorum"),
     "queue 'm' exists as a classic queue, but this run declares a quorum queue: use --queue-type classic"),
    (("--queue-type", "quorum", "--delivery-limit", "3"), ("--queue-type", "quorum"),
     "queue 'm' exists as a queue with x-delivery-limit 3, but this run declares a queue with no x-delivery-limit: "
     "use --delivery-limit 3"),
    (("--queue-type", "quorum", "--delivery-limit", "3"), ("--queue-type", "quorum", "--delivery-limit", "5"),
     "queue 'm' exists as a queue with x-delivery-limit 3, but this run declares a queue with x-delivery-limit 5: "
     "use --delivery-limit 3"),
    (("--durable", "--dead-letter-queue", "m-dead"), ("--durable",),
     "queue 'm' exists as a queue with a dead-letter target and x-dead-letter-routing-key m-dead, but this run declares "
     "a queue with no dead-letter target and no x-dead-letter-routing-key: use --dead-letter-queue m-dead"),
    (("--durable", "--dead-letter-queue", "m-dead"), ("--durable", "--dead-letter-queue", "m-other"),
     "queue 'm' exists as a queue with x-dead-letter-routing-key m-dead, but this run declares a queue with "
     "x-dead-letter-routing-key m-other: use --dead-letter-queue m-dead"),
    # Lab 12's limits, named by the options that set them.
    (("--durable", "--max-length", "5", "--overflow", "reject-publish", "--limits-by", "argument"), ("--durable",),
     "queue 'm' exists as a queue with x-max-length 5 and x-overflow reject-publish, but this run declares a queue "
     "with no x-max-length and no x-overflow: use --max-length 5, use --overflow reject-publish"),
    # Lab 9 after lab 2 in one vhost: matching the old queue would drop what lab 9 teaches, so deleting it comes
    # first, and "drop --dead-letter-queue" is said once though two arguments differ.
    (("--durable",), ("--queue-type", "quorum", "--dead-letter-queue", "m-dead", "--limits-by", "argument"),
     "queue 'm' exists as a classic queue with no dead-letter target and no x-dead-letter-routing-key, but this run "
     "declares a quorum queue with a dead-letter target and x-dead-letter-routing-key m-dead: delete the queue first "
     "(sender.py --delete-queue --queue m) to keep this run's options, or use it as it is: drop --dead-letter-queue, "
     "use --queue-type classic"),
]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("first, then, line", MISMATCHES, ids=[" ".join(row[0]) + " then " + " ".join(row[1])
                                                               for row in MISMATCHES])
def test_a_queue_declared_otherwise_names_the_property_and_the_matching_flags(space, script, first, then, line):
    space.send("--queue", "m", *first, "first")
    result = run(space, script, "--queue", "m", *then, "x" if script == "send" else "--max-messages=1")
    assert_one_line_error(result, 6, line)


def test_a_port_that_is_not_amqp(space, broker):
    """It looks like a broker still starting, so it is retried (see the next test); once --retry-for has run out,
    exit 9 names both. (The management port answers pika's greeting only when its HTTP request timeout ends, some
    seconds: --retry-for 0 keeps this test to one attempt.)"""
    if broker.local is None:
        pytest.skip("needs the local node's management port as a known non-AMQP port")
    url = f"amqp://guest:guest@127.0.0.1:{broker.local.management_port}/"
    result = space.send("--retry-for", "0", "x", check=False, env=space.env(AMQP_URL=url))
    assert_one_line_error(result, 9, "ended it before the AMQP 0-9-1 handshake: is that the right port")


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_broker_that_ends_the_first_connections_before_the_handshake_is_retried(space, script):
    """A broker starting up (behind a proxy such as Docker's) takes connections and ends them before the AMQP
    handshake: the first connection must retry it within --retry-for, as it retries a refused one."""
    if script == "run_worker":
        space.send("x")
    proxy = CuttableProxy(space.broker.port, space.broker.host)
    try:
        proxy.end_before_handshake(2)
        url = space.url.replace(f":{space.broker.port}/", f":{proxy.port}/")
        result = run(space, script, "--retry-for", "30", "x" if script == "send" else "--max-messages=1",
                     AMQP_URL=url)
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ended it before the AMQP 0-9-1 handshake") == 2, result.stderr


@pytest.mark.parametrize("url", ["http://localhost/", "amqp://guest:guest@localhost:notaport/"])
def test_invalid_url(space, url):
    result = space.send("x", check=False, env=space.env(AMQP_URL=url))
    assert_one_line_error(result, 2, "--url")


@pytest.mark.parametrize("args", [("--count", "0"), ("--count", "-3"), ("--length", "-1"), ("--confirm-window", "0"),
                                  ("--retry-for", "-1"), ("--port", "0")])
def test_bad_sender_option_values(space, args):
    result = space.send(*args, check=False)
    assert_one_line_error(result, 2, args[0])


@pytest.mark.parametrize("args", [("--prefetch", "-1"), ("--lose-every", "-2"), ("--seconds-per-char", "-1"),
                                  ("--max-messages", "-5"), ("--idle-exit", "-1"), ("--lose-mode", "explode")])
def test_bad_worker_option_values(space, args):
    result = space.run_worker(*args, check=False)
    assert_one_line_error(result, 2, args[0])


def test_empty_standard_input_sends_nothing_and_says_so(space):
    result = space.send()  # a test's stdin is not a terminal, so the sender reads lines from it: none here
    assert "sent 0 messages to queue 'hello'" in result.stdout


def test_purging_a_missing_queue(space):
    assert_one_line_error(space.send("--purge", "--queue", "nope", check=False), 6, "queue 'nope' does not exist")


@pytest.mark.parametrize("script", SCRIPTS)
def test_quiet_keeps_the_first_connection_retries_silent(space, script):
    url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/"
    result = run(space, script, "--quiet", "--retry-for", "1", "x" if script == "send" else "--max-messages=1",
                 AMQP_URL=url)
    assert_one_line_error(result, 3, "cannot reach a broker at 127.0.0.1")
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]], result.stderr
