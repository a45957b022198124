"""RabbitMQ's tutorials declare the work queue as a durable quorum queue; their programs and ours share it.

The two small programs here are written the way the tutorials' new_task.py and worker.py work (plain pika, the same
declaration), not copied from them.
"""
from __future__ import annotations

import subprocess
import sys

from tests.helpers import QPROCESSOR, SENDER

TUTORIAL_DECLARE = 'channel.queue_declare(queue="task_queue", durable=True, arguments={"x-queue-type": "quorum"})'

TUTORIAL_PRODUCER = f"""
import os, sys, pika
connection = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
channel = connection.channel()
{TUTORIAL_DECLARE}
for body in sys.argv[1:]:
    channel.basic_publish(exchange="", routing_key="task_queue", body=body.encode(),
                          properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
connection.close()
"""

TUTORIAL_WORKER = f"""
import os, sys, pika
connection = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
channel = connection.channel()
{TUTORIAL_DECLARE}
channel.basic_qos(prefetch_count=1)
wanted, received = int(sys.argv[1]), []
def on_message(ch, method, properties, body):
    received.append(body.decode())
    ch.basic_ack(delivery_tag=method.delivery_tag)
    if len(received) == wanted:
        ch.stop_consuming()
channel.basic_consume(queue="task_queue", on_message_callback=on_message)
connection.call_later(20, channel.stop_consuming)
channel.start_consuming()
print(" ".join(received))
connection.close()
"""


def python(space, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=space.env(), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_the_tutorials_producer_feeds_our_worker(space):
    assert python(space, TUTORIAL_PRODUCER, "one.", "two..", "three...").returncode == 0
    worker = subprocess.run([sys.executable, str(QPROCESSOR), "--queue", "task_queue", "--queue-type", "quorum",
                             "--acknowledge", "--seconds-per-char", "0", "--max-messages", "3"],
                            env=space.env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert worker.returncode == 0, worker.stderr
    assert [line.split(" done ")[1] for line in worker.stdout.splitlines() if " done " in line] == \
        ["'one.'", "'two..'", "'three...'"]


def test_our_sender_feeds_the_tutorials_worker(space):
    sent = subprocess.run([sys.executable, str(SENDER), "--queue", "task_queue", "--queue-type", "quorum",
                           "--persistent", "a", "b", "c"], env=space.env(), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert sent.returncode == 0, sent.stderr
    got = python(space, TUTORIAL_WORKER, "3")
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["a", "b", "c"]


def test_our_default_queue_against_the_tutorials_names_the_flag_that_matches(space):
    assert python(space, TUTORIAL_PRODUCER, "x").returncode == 0
    worker = subprocess.run([sys.executable, str(QPROCESSOR), "--queue", "task_queue", "--max-messages", "1"],
                            env=space.env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert worker.returncode == 6
    assert "exists as a quorum queue, but this run declares a classic queue: use --queue-type quorum" in worker.stderr
