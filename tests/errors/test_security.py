"""Credentials stay off the command line, and amqps:// works against the local broker's TLS listener."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

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
    """A person types the password at the prompt in a real terminal (tmux); while the sender holds it, connected
    and waiting for more lines on an open pipe, neither ps, its /proc cmdline and environ, nor the screen show it."""
    env = {**space.env(), "TMUX_TMPDIR": str(tmp_path)}
    env.pop("TMUX", None)
    pid_file = tmp_path / "sender.pid"
    url_without_password = space.url.replace(f":{space.password}@", "@")
    # The pipe stays open after the first line: the sender keeps running, connected, with the password in hand.
    # (A window of 1 makes it publish that line before it waits for the next one.)
    sender = (f"AMQP_URL='{url_without_password}' exec {sys.executable} {ROOT / 'sender.py'} --ask-password "
              "--confirm-window 1")
    command = f"{{ echo 'typed in'; sleep 60; }} | sh -c 'echo $$ > {pid_file}; {sender}'; sleep 30"
    subprocess.run(["tmux", "new-session", "-d", "-s", "prompt", "-x", "150", "-y", "20", command], env=env,
                   check=True)
    screen = lambda: subprocess.run(["tmux", "capture-pane", "-p", "-t", "prompt"], env=env, capture_output=True,
                                    text=True).stdout  # noqa: E731
    pid = None
    try:
        wait_until(lambda: f"Password for {space.username}:" in screen(), 30, "the password prompt")
        pid = int(pid_file.read_text())
        subprocess.run(["tmux", "send-keys", "-t", "prompt", "-l", "--", space.password], env=env, check=True)
        subprocess.run(["tmux", "send-keys", "-t", "prompt", "Enter"], env=env, check=True)
        wait_until(lambda: space.ready_or_zero("hello") == 1, 30, "the typed-in message in the queue")
        assert Path(f"/proc/{pid}").exists(), "the sender should still be running, waiting for more input"
        assert "sender.py" in Path(f"/proc/{pid}/cmdline").read_text()
        processes = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
        assert "--ask-password" in processes  # ps does see the sender
        assert space.password not in processes
        assert space.password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert space.password.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        assert space.password not in screen()
    finally:
        if pid is not None and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGTERM)
        subprocess.run(["tmux", "kill-server"], env=env, capture_output=True)
    assert space.ready("hello") == 1
