"""Lab 1, Hello world: the same three messages from ipython-style pika and from the scripts."""
from __future__ import annotations

from labs.drive.processes import wait_all
from labs.scenarios.helpers import QUICK
from labs.scenarios.runner import Context


def hello_world(lab: Context) -> None:
    snippet = f"""
import pika
params = pika.URLParameters({lab.url!r})
params.heartbeat = 600
connection = pika.BlockingConnection(params)
channel = connection.channel()
channel.queue_declare(queue='hello', durable=True)
channel.queue_declare(queue='hello', durable=True)  # declaring again is harmless
for _ in range(3):
    channel.basic_publish(exchange='', routing_key='hello', body='Hello World!')
received = []
def callback(ch, method, properties, body):
    received.append(body)
    if len(received) == 3:
        ch.stop_consuming()
channel.basic_consume(queue='hello', auto_ack=True, on_message_callback=callback)
connection.call_later(10, channel.stop_consuming)
channel.start_consuming()
print(received)
"""
    result = lab.python(snippet)
    lab.claim("three messages published from ipython-style pika arrive at a pika consumer",
              result.stdout.strip() == str([b"Hello World!"] * 3), (result.stdout + result.stderr).strip()[-200:])
    run = lab.run("hello")
    run.send("Hello World!", bodies=["Hello World!"])
    worker = run.worker("w1", "--max-messages", "1", *QUICK)
    wait_all([worker], 30)
    lab.claim("qprocessor.py receives what sender.py sent", run.tally().bodies("done") == ["Hello World!"])
    lab.claim("the queue is empty afterwards", lab.ready("hello") == 0)
