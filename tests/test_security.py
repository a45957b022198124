"""Credentials stay off the command line, and amqps:// works against the local broker's TLS listener."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT, assert_one_line_error, wait_until
from tests.tls import make_ca


@pytest.fixture
def tls_url(broker, space) -> str:
    if broker.local is None or broker.local.tls_port is None:
        pytest.skip("needs the suite's own broker with its TLS listener (openssl makes the certificates)")
    return f"amqps://{space.username}:{space.password}@localhost:{broker.local.tls_port}/{space.vhost}"


def test_amqps_with_the_right_ca_sends_and_receives(space, broker, tls_url):
    env = space.env(AMQP_URL=tls_url, RABBITMQ_CA_CERT=str(broker.local.ca_cert))
    assert "sent 1 messages" in space.send("over TLS", env=env).stdout
    assert "received 'over TLS'" in space.run_worker("--max-messages", "1", "--seconds-per-char", "0", env=env).stdout


@pytest.mark.parametrize("script", ["send", "run_worker"])
def test_amqps_with_a_wrong_ca_is_a_clear_error(space, tls_url, tmp_path, script):
    _, stranger = make_ca(tmp_path, "some-other-ca")
    env = space.env(AMQP_URL=tls_url, RABBITMQ_CA_CERT=str(stranger))
    result = getattr(space, script)("x" if script == "send" else "--max-messages=1", check=False, env=env)
    assert_one_line_error(result, 9, "TLS handshake with localhost", "certificate verify failed")


def test_amqps_without_a_ca_uses_the_system_cas_and_refuses_an_unknown_one(space, tls_url):
    assert_one_line_error(space.send("x", check=False, env=space.env(AMQP_URL=tls_url)), 9, "certificate")


def test_ca_cert_needs_an_amqps_url(space, broker):
    result = space.send("x", "--ca-cert", str(ROOT / "README.md"), check=False)
    assert_one_line_error(result, 2, "amqps://")


def test_password_prompt_keeps_it_off_the_command_line_and_the_screen(space, tmp_path):
    """A person types the password at the prompt in a real terminal (tmux); ps never shows it."""
    env = {**space.env(), "TMUX_TMPDIR": str(tmp_path)}
    env.pop("TMUX", None)
    url_without_password = space.url.replace(f":{space.password}@", "@")
    command = (f"AMQP_URL='{url_without_password}' {sys.executable} {ROOT / 'sender.py'} --ask-password 'typed in'; "
               "sleep 30")
    subprocess.run(["tmux", "new-session", "-d", "-s", "prompt", "-x", "150", "-y", "20", command], env=env,
                   check=True)
    screen = lambda: subprocess.run(["tmux", "capture-pane", "-p", "-t", "prompt"], env=env, capture_output=True,
                                    text=True).stdout  # noqa: E731
    try:
        wait_until(lambda: f"Password for {space.username}:" in screen(), 30, "the password prompt")
        processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert space.password not in processes
        subprocess.run(["tmux", "send-keys", "-t", "prompt", "-l", "--", space.password], env=env, check=True)
        subprocess.run(["tmux", "send-keys", "-t", "prompt", "Enter"], env=env, check=True)
        wait_until(lambda: "sent 1 messages" in screen(), 30, "the message to be sent")
        assert space.password not in screen()
    finally:
        subprocess.run(["tmux", "kill-server"], env=env, capture_output=True)
    assert space.ready("hello") == 1
