"""rabbitqueue.py, the hotqueue-style task queue, against a real broker: what it keeps, what it gives back."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.parse

import pika
import port_for
import pytest

from rabbitqueue import QueueError, QueueUnavailable, RabbitQueue
from tests.helpers import ROOT, wait_until
from tests.proxy import CuttableProxy


@pytest.fixture
def q(space):
    queue = RabbitQueue("tasks", space.url)
    yield queue
    queue.close()


def test_put_is_confirmed_into_a_durable_quorum_queue_as_persistent_json(space, q):
    q.put("one", {"two": 2}, [3])
    assert len(q) == 3
    declared = space.queue_stats("tasks")
    assert declared["durable"] is True
    assert declared["arguments"]["x-queue-type"] == "quorum"
    assert declared["arguments"]["x-delivery-limit"] == 2  # attempts=3: delivered at most three times
    assert declared["arguments"]["x-dead-letter-routing-key"] == "tasks.dead"
    assert space.queue_stats("tasks.dead")["durable"] is True
    method, properties, body = space.channel().basic_get("tasks", auto_ack=True)
    assert properties.delivery_mode == 2
    assert json.loads(body) == "one"


def test_put_refuses_what_is_not_json(q):
    with pytest.raises(QueueError, match="items must be JSON"):
        q.put({"when": object()})
    assert len(q) == 0


def test_put_reports_an_item_the_broker_could_not_take(space, q):
    """Confirms and mandatory: with the queue deleted behind its back, put raises instead of losing the item."""
    q.put("first")
    space.channel().queue_delete("tasks")
    with pytest.raises(QueueUnavailable, match="did not take"):
        q.put("second")


def test_get_takes_items_in_order_and_gives_none_when_empty(q):
    q.put("a", "b")
    assert q.get() == "a"
    assert q.get(block=True, timeout=1) == "b"
    started = time.monotonic()
    assert q.get(block=True, timeout=0.5) is None
    assert time.monotonic() - started >= 0.5
    q.close()  # anything taken but not acknowledged would come back now
    assert q.get() is None


def test_clear_empties_the_queue(q):
    q.put(*range(5))
    q.clear()
    assert len(q) == 0


def test_consume_acknowledges_an_item_only_after_the_loop_body(space, q):
    q.put("a", "b")
    seen = []
    with pytest.raises(RuntimeError):
        for item in q.consume(timeout=1):
            seen.append(item)
            assert space.ready("tasks") == 1  # "a" is held, unacknowledged; "b" waits (prefetch 1)
            raise RuntimeError("the body failed")
    # "a" failed in the body: it is back, before "b" only on a classic queue, so compare as sets
    again = list(q.consume(timeout=1))
    assert seen == ["a"] and sorted(again) == ["a", "b"]
    assert len(q) == 0
    wait_until(lambda: space.queue_stats("tasks").get("messages_unacknowledged") == 0, 10,
               "nothing left unacknowledged")


def test_consume_ends_after_its_timeout_without_items(q):
    started = time.monotonic()
    assert list(q.consume(timeout=0.6)) == []
    assert 0.5 <= time.monotonic() - started < 5


def test_an_item_whose_loop_body_always_fails_is_dead_lettered_after_three_attempts(space, q):
    """The broker's delivery limit, not the client, bounds the retries of consume()."""
    q.put("poison")
    tries = 0
    for _ in range(5):
        try:
            for item in q.consume(timeout=0.5):
                tries += 1
                raise ValueError(item)
        except ValueError:
            pass
    assert tries == 3
    wait_until(lambda: space.ready("tasks.dead") == 1, 10, "the item in the dead-letter queue")
    assert space.ready("tasks") == 0
    method, properties, body = space.channel().basic_get("tasks.dead", auto_ack=True)
    assert json.loads(body) == "poison"
    assert properties.headers["x-death"][0]["queue"] == "tasks"


def test_the_worker_acknowledges_after_the_function_returns_and_requeues_when_it_raises(space, q):
    q.put("flaky", "fine")
    calls = []

    @q.worker(timeout=1)
    def work(item):
        calls.append(item)
        if item == "flaky" and calls.count("flaky") == 1:
            raise ConnectionError("a passing failure")

    work()
    assert sorted(calls) == ["fine", "flaky", "flaky"]
    assert space.ready("tasks") == 0 and space.ready("tasks.dead") == 0


def test_the_worker_gives_up_after_three_attempts_records_why_and_dead_letters(space, q):
    q.put({"n": 7})
    calls, given_up = [], []

    @q.worker(timeout=1, on_give_up=lambda item, error: given_up.append((item, str(error))))
    def work(item):
        calls.append(item)
        raise ZeroDivisionError(f"cannot do {item['n']}")

    work()
    assert len(calls) == 3
    assert given_up == [({"n": 7}, "cannot do 7")]
    wait_until(lambda: space.ready("tasks.dead") == 1, 10, "the item in the dead-letter queue")
    assert space.ready("tasks") == 0


def test_a_message_that_is_not_json_is_dead_lettered_not_retried(space, q):
    len(q)  # declares the queues
    space.channel().basic_publish("", "tasks", b"\x80 not json", pika.BasicProperties(delivery_mode=2))
    calls = []
    q.worker(timeout=0.6)(calls.append)()
    assert calls == []
    wait_until(lambda: space.ready("tasks.dead") == 1, 10, "the bad message in the dead-letter queue")


def test_an_unreachable_broker_is_one_clear_error(space):
    nobody = port_for.select_random()
    with pytest.raises(QueueUnavailable, match=f"cannot reach a broker at 127.0.0.1:{nobody}"):
        RabbitQueue("tasks", f"amqp://u:p@127.0.0.1:{nobody}/").put("x")
    parsed = urllib.parse.urlsplit(space.url)
    wrong = space.url.replace(f":{parsed.password}@", ":wrong@")
    with pytest.raises(QueueUnavailable, match="login refused"):
        RabbitQueue("tasks", wrong).put("x")


def test_a_connection_reset_during_login_is_not_called_a_wrong_password(space):
    """A broker restarting resets connections mid-handshake, which pika calls a probable authentication error."""
    proxy = CuttableProxy(space.broker.port, space.broker.host)
    try:
        proxied = RabbitQueue("tasks", space.url.replace(f":{space.broker.port}/", f":{proxy.port}/"))
        proxy.reset_logins(1)
        with pytest.raises(QueueUnavailable, match="the connection was lost during the handshake"):
            proxied.put("x")
        proxied.put("y")  # the broker itself was fine all along
    finally:
        proxy.close()
    assert space.ready("tasks") == 1


def test_put_reconnects_once_when_its_connection_was_lost(space):
    upstream = urllib.parse.urlsplit(space.url)
    proxy = CuttableProxy(upstream.port)
    try:
        q = RabbitQueue("tasks", space.url.replace(f":{upstream.port}/", f":{proxy.port}/"))
        q.put("before")
        assert proxy.cut() >= 1
        q.put("after")  # the old connection is dead; put opens a new one
        assert space.ready("tasks") == 2
        q.close()
    finally:
        proxy.close()


def test_the_notes_exercise_runs_with_the_module_uploaded_alone(space, tmp_path):
    """Exercise 3 of the notes, ported: only the import and the constructor line differ from hotqueue."""
    folder = tmp_path / "upload"
    folder.mkdir()
    shutil.copy2(ROOT / "rabbitqueue.py", folder)
    (folder / "echo.py").write_text(textwrap.dedent("""\
        import os
        from rabbitqueue import RabbitQueue
        q = RabbitQueue("queue", os.environ["AMQP_URL"])

        @q.worker
        def echo(item):
            print("got", item, flush=True)

        echo()
        """))
    output = tmp_path / "echo.out"
    with output.open("w") as sink:
        worker = subprocess.Popen([sys.executable, "echo.py"], cwd=folder, env=space.env(), stdout=sink,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    space.children.adopt(worker)
    space.wait_for_consumers("queue", 1)
    producer = RabbitQueue("queue", space.url)
    producer.put("hello", {"start": 1, "end": 2})
    wait_until(lambda: output.read_text().count("got") == 2, 20, "two echoed items")
    assert "got hello\ngot {'start': 1, 'end': 2}" in output.read_text()
    producer.close()


def test_the_worker_keeps_its_connection_through_work_longer_than_the_heartbeat_timeout(space):
    """With a 1 s heartbeat the broker drops a connection silent for about 2 s; the work here takes 5 s."""
    q = RabbitQueue("tasks", space.url, heartbeat=1)
    q.put("long")
    done = []

    @q.worker(timeout=1)
    def work(item):
        time.sleep(5)
        done.append(item)

    work()  # raises QueueUnavailable if the connection was lost before the ack
    assert done == ["long"]
    assert space.ready("tasks") == 0
    wait_until(lambda: space.queue_stats("tasks").get("messages_unacknowledged") == 0, 10, "the ack to count")
    q.close()


def test_run_as_a_script_it_counts_any_queue_without_declaring_it(space, q):
    """`python rabbitqueue.py QUEUE`, as lab 10 offers to look at a queue: its dead-letter queue and a classic queue
    that sender.py made are counted as they are (declaring them as a task queue would be refused: 406), and a queue
    that does not exist is one line, not created."""
    q.put("a")
    space.send("--queue", "plain", "--queue-type", "classic", "x", "y")

    def count(queue: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "rabbitqueue.py"), queue], env=space.env(), text=True,
                              capture_output=True, timeout=60, stdin=subprocess.DEVNULL)

    assert [count(queue).stdout.strip() for queue in ("tasks", "tasks.dead", "plain")] == ["1", "0", "2"]
    assert space.queue_stats("plain")["arguments"] == {"x-queue-type": "classic"}  # as sender.py declared it
    missing = count("nowhere")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr
    assert missing.stderr.strip() == f"rabbitqueue: no queue 'nowhere' at {q.settings.where()}"
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):  # still no such queue: looking did not make it
        space.channel().queue_declare("nowhere", passive=True)
