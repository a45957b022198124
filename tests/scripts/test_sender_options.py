"""sender.py's publishing options: --no-confirm, --confirm-window, Ctrl-C mid-send, and --quiet."""
from __future__ import annotations

import re
import signal
from collections import Counter
import subprocess
import sys

import pytest

from tests.helpers import SENDER, wait_until
from tests.proxy import BASIC_PUBLISH, CuttableProxy


@pytest.fixture
def proxy(broker):
    started = CuttableProxy(broker.port, broker.host)
    yield started
    started.close()


def ctrl_c_as_in_a_terminal() -> None:
    """SIGINT's default action in the child, as a terminal gives it: a suite started in the background by a
    non-interactive shell (CI) inherits SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_sender(space, proxy, *args: str) -> subprocess.Popen:
    """sender.py connected through the proxy, its stdout and stderr captured."""
    env = space.env(AMQP_URL=space.url.replace(f":{space.broker.port}/", f":{proxy.port}/"))
    process = subprocess.Popen([sys.executable, str(SENDER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, env=env, preexec_fn=ctrl_c_as_in_a_terminal)
    space.children.adopt(process)
    return process


def test_no_confirm_publishes_without_waiting_and_says_so(space):
    sent = space.send("--no-confirm", "--queue", "fast", "one", "two", "three")
    assert re.search(r"^published \(unconfirmed\) 3 messages to queue 'fast'", sent.stdout, re.M), sent.stdout
    assert "sent 3 messages" not in sent.stdout
    wait_until(lambda: space.ready("fast") == 3, 10, "the three unconfirmed messages in the queue")


def test_confirm_window_bounds_the_messages_awaiting_a_confirm(space, proxy):
    # From the first publish on the broker's confirms are held back: the sender may publish only its window.
    proxy.hold_replies_after(BASIC_PUBLISH)
    sender = start_sender(space, proxy, "--count", "10", "--confirm-window", "3", "--queue", "windowed")
    wait_until(lambda: space.ready_or_zero("windowed") == 3, 20, "the first window of 3 in the queue")
    with pytest.raises(subprocess.TimeoutExpired):
        sender.wait(1.5)  # waiting for confirms, and publishing nothing more meanwhile
    assert space.ready("windowed") == 3

    proxy.release()

    out, err = sender.communicate(timeout=30)
    assert sender.returncode == 0, err
    assert "sent 10 messages to queue 'windowed'" in out
    assert space.ready("windowed") == 10


def test_ctrl_c_mid_send_exits_130_and_reports_what_was_confirmed(space, proxy):
    # A window of 1: publish 4 goes out only after confirm 3 came back; its own confirm is held back.
    proxy.hold_replies_after(BASIC_PUBLISH, times=4)
    sender = start_sender(space, proxy, "--count", "10", "--confirm-window", "1", "--queue", "interrupted")
    wait_until(lambda: space.ready_or_zero("interrupted") == 4, 20, "4 messages in the queue")

    sender.send_signal(signal.SIGINT)

    out, err = sender.communicate(timeout=20)
    assert sender.returncode == 130, err
    assert out.splitlines() == ["sent '1'", "sent '2'", "sent '3'"]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "Error: interrupted: 3 messages confirmed"
    assert "sent 3 messages to queue 'interrupted'" in err  # the summary of how far it got
    assert space.ready("interrupted") == 4  # the unconfirmed 4th did arrive: confirmed means at least


def test_a_message_resent_after_a_cut_keeps_its_message_id(space, proxy):
    """A consumer can only recognise a resent copy as a duplicate by its message_id: the copy must carry the id of
    the message it repeats. Matched by id, the queue shows every duplicate as a repeat of the same body."""
    # From the 6th publish on the confirms are held back: at least that one reached the queue unconfirmed.
    proxy.hold_replies_after(BASIC_PUBLISH, times=6)
    sender = start_sender(space, proxy, "--count", "12", "--confirm-window", "4", "--queue", "resent", "--persistent",
                          "--retry-for", "30")
    wait_until(lambda: space.ready_or_zero("resent") >= 6, 20, "6 messages in the queue, their confirms held back")

    proxy.cut()  # as a network failure: the sender reconnects and resends what was not confirmed
    proxy.release()

    out, err = sender.communicate(timeout=30)
    assert sender.returncode == 0, err
    assert "sent 12 messages to queue 'resent'" in out
    resent = int(re.search(r"(\d+) resent after a lost connection", out).group(1))
    assert resent > 0

    channel = space.channel()
    queued = []  # (message_id, body) of every message on the broker, duplicates included
    while (got := channel.basic_get("resent", auto_ack=True))[0] is not None:
        queued.append((got[1].message_id, got[2].decode()))
    bodies_by_id: dict[str, set[str]] = {}
    for message_id, body in queued:
        bodies_by_id.setdefault(message_id, set()).add(body)
    assert all(message_id for message_id, _ in queued)
    assert all(len(bodies) == 1 for bodies in bodies_by_id.values()), bodies_by_id  # one id never names two bodies
    distinct_bodies = {body for _, body in queued}
    assert distinct_bodies == {str(n) for n in range(1, 13)}  # nothing confirmed is missing
    # Each body under one id, whether it was sent once or resent: ids and bodies are as many.
    assert len(bodies_by_id) == len(distinct_bodies), sorted(queued)
    repeated = [message_id for message_id, times in Counter(m for m, _ in queued).items() if times > 1]
    assert 0 < len(repeated) <= resent, (queued, resent)  # the duplicates, found by id, are resent ones
    assert len(queued) - len(bodies_by_id) <= resent


def test_quiet_sender_prints_only_the_summary(space):
    sent = space.send("--quiet", "--queue", "hushed", "one", "two")
    assert re.fullmatch(r"sent 2 messages to queue 'hushed' on vhost '[^']+' in [\d.]+s \([\d,]+ msg/s\)\n",
                        sent.stdout), sent.stdout
    assert sent.stderr == ""
    bulk = space.send("--quiet", "--count", "300", "--queue", "hushed")  # no progress bar either
    assert bulk.stdout.startswith("sent 300 messages") and bulk.stdout.count("\n") == 1
    assert bulk.stderr == ""
    assert space.ready("hushed") == 302


def test_lines_from_an_open_pipe_go_out_as_they_arrive(space):
    """`tail -f log | sender.py`: each line is published while the pipe stays open, not when it closes."""
    sender = subprocess.Popen([sys.executable, str(SENDER), "--queue", "stream"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=space.env(), text=True)
    space.children.adopt(sender)
    for line in ("first\n", "\n", "second\n"):
        sender.stdin.write(line)
        sender.stdin.flush()
        if line.strip():
            wanted = 1 if line == "first\n" else 2
            wait_until(lambda: space.ready_or_zero("stream") == wanted, 15, f"{line!r} on the queue, the pipe open")
    assert sender.poll() is None  # still reading
    out, err = sender.communicate(timeout=30)  # closes the pipe: the sender ends
    assert sender.returncode == 0, err
    assert "sent 'first'" in out and "sent 'second'" in out and "sent 2 messages" in out
