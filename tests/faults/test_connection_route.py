"""Lab 0's connection route: --host --port --vhost --username --password, their RABBITMQ_* variables, and --url.

Every connection stays on loopback: a wrong host is shown by the error message naming it (127.0.0.1 against the
default localhost, with a port where nothing listens), never by trying another machine.
"""
from __future__ import annotations

import socket

import pytest

from tests.helpers import assert_one_line_error


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(space, **variables: str) -> dict:
    """The space's environment without AMQP_URL (lab 0 sets none), plus the given variables."""
    env = space.env(RABBITMQ_RETRY_FOR="0")
    env.pop("AMQP_URL")
    return {**env, **variables}


def right(space) -> dict:
    return {"host": space.broker.host, "port": str(space.broker.port), "vhost": space.vhost,
            "username": space.username, "password": space.password}


def wrong(space, closed_port: int) -> dict:
    return {"port": str(closed_port), "vhost": space.vhost + "-typo", "username": space.username + "-typo",
            "password": "not-" + space.password}


def flags(values: dict) -> list[str]:
    return [item for name, value in values.items() for item in (f"--{name}", value)]


def variables(values: dict) -> dict:
    return {f"RABBITMQ_{name.upper()}": value for name, value in values.items()}


def round_trip(space, env: dict, *options: str) -> None:
    """sender.py sends and qprocessor.py receives one message with these settings."""
    sent = space.send(*options, "--queue", "route", "via the route", env=env)
    assert f"sent 1 messages to queue 'route' on vhost {space.vhost!r}" in sent.stdout
    got = space.run_worker(*options, "--queue", "route", "--max-messages", "1", "--seconds-per-char", "0", env=env)
    assert "received 'via the route'" in got.stdout
    assert space.ready("route") == 0


def both_fail(space, env: dict, exit_code: int, fragment: str, *options: str) -> None:
    assert_one_line_error(space.send(*options, "x", check=False, env=env), exit_code, fragment)
    assert_one_line_error(space.run_worker(*options, "--max-messages", "1", check=False, env=env), exit_code, fragment)


def test_the_five_flags_without_any_url(space):
    round_trip(space, environment(space), *flags(right(space)))


def test_the_five_environment_variables_as_lab_0_sets_them(space):
    round_trip(space, environment(space, **variables(right(space))))


def test_each_flag_overrides_its_environment_variable(space, closed_port):
    round_trip(space, environment(space, **variables(wrong(space, closed_port))), *flags(right(space)))


def test_the_host_flag_overrides_its_variable(space, closed_port):
    env = environment(space, RABBITMQ_HOST="localhost", RABBITMQ_PORT=str(closed_port))
    both_fail(space, env, 3, f"cannot reach a broker at 127.0.0.1:{closed_port}", "--host", "127.0.0.1")


@pytest.mark.parametrize("part, exit_code, message", [
    ("host", 3, "cannot reach a broker at 127.0.0.1:{closed_port}"),
    ("port", 3, "cannot reach a broker at {host}:{closed_port}"),
    ("vhost", 5, "vhost '{vhost}-typo' does not exist"),
    ("username", 4, "login refused for user '{username}-typo'"),
    ("password", 4, "login refused for user '{username}'"),
])
def test_each_variable_is_read(space, closed_port, part, exit_code, message):
    # Only this variable is wrong (the host: 127.0.0.1 where the default is localhost, on a closed port).
    values = {**right(space), **wrong(space, closed_port)} if part == "host" else right(space)
    values = {**values, "host": "127.0.0.1"} if part == "host" else {**values, part: wrong(space, closed_port)[part]}
    expected = message.format(closed_port=closed_port, host=space.broker.host, vhost=space.vhost,
                              username=space.username)
    both_fail(space, environment(space, **variables(values)), exit_code, expected)


def test_url_flag_overrides_host_port_vhost_and_user_variables(space, closed_port):
    env = environment(space, **variables({"host": "localhost", **wrong(space, closed_port)}))
    round_trip(space, env, "--url", space.url)


def test_amqp_url_variable_overrides_host_port_vhost_and_user_flags(space, closed_port):
    env = environment(space, AMQP_URL=space.url)
    round_trip(space, env, *flags({"host": "localhost", **wrong(space, closed_port)}))
