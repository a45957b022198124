"""Lab 8, Heartbeats: plain pika blocked past two heartbeats loses its connection; the worker does not."""
from __future__ import annotations

from labs.drive.processes import wait_all
from labs.scenarios.runner import Context


def heartbeats(lab: Context) -> None:
    snippet = f"""
import time, pika
params = pika.URLParameters({lab.url!r})
params.heartbeat = 2
connection = pika.BlockingConnection(params)
channel = connection.channel()
channel.queue_declare(queue='slow', durable=True)
channel.basic_publish(exchange='', routing_key='slow', body='slow work')
method, properties, body = next(channel.consume('slow'))
time.sleep(8)  # blocking work: pika cannot answer heartbeats meanwhile
try:
    channel.basic_ack(method.delivery_tag)
    connection.process_data_events(1)
    print('survived')
except Exception as exc:
    print(type(exc).__name__)
"""
    result = lab.python(snippet)
    outcome = result.stdout.strip()
    lab.claim("plain pika blocked for 8 s under a 2 s heartbeat loses its connection",
              outcome in ("StreamLostError", "ConnectionResetError", "ConnectionClosedByBroker",
                          "AMQPHeartbeatTimeout", "ChannelWrongStateError"), outcome or result.stderr[-200:])
    run = lab.run("slow")
    worker = run.worker("patient", "--acknowledge", "--heartbeat", "2", "--seconds-per-char", "0.8",
                        "--max-messages", "1", "--idle-exit", "15")
    wait_all([worker], 60)
    tally = run.tally()
    lab.claim("qprocessor.py finishes the same 8 s of work under the same heartbeat",
              tally.bodies("done") == ["slow work"] and tally.redelivered == 1,
              f"processed {tally.bodies('done')}, redelivered {tally.redelivered} time(s) after the plain consumer "
              f"lost it, lost {len(tally.bodies('lost'))}")
