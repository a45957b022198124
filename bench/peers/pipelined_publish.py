"""The fastest confirmed publisher a pika program is: a SelectConnection keeping WINDOW messages unconfirmed.

python bench/peers/pipelined_publish.py URL QUEUE COUNT [WINDOW [QUEUE_TYPE]]: persistent messages to a durable queue,
publisher confirms on, at most WINDOW (1000) unconfirmed at any time; exits once every message is confirmed (any
nack: exit 1). QUEUE_TYPE (quorum) declares the queue as `--queue-type` makes the scripts: x-queue-type set.
"""
import collections
import sys

import pika

url, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
window = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
# The scripts send x-queue-type only with --queue-type; an existing queue must be declared with the same arguments.
arguments = {"x-queue-type": sys.argv[5]} if len(sys.argv) > 5 else None
properties = pika.BasicProperties(delivery_mode=2)
state = {"published": 0, "confirmed": 0, "nacked": 0, "unconfirmed": collections.deque()}  # tags, in order


def publish_more(channel):
    unconfirmed = state["unconfirmed"]
    while state["published"] < count and len(unconfirmed) < window:
        state["published"] += 1
        channel.basic_publish("", queue, str(state["published"]).encode(), properties)
        unconfirmed.append(state["published"])  # delivery tags count from 1, like our publish counter


def on_confirm(frame, channel):
    tag, unconfirmed = frame.method.delivery_tag, state["unconfirmed"]
    done = 0
    if frame.method.multiple:
        while unconfirmed and unconfirmed[0] <= tag:
            unconfirmed.popleft()
            done += 1
    else:
        unconfirmed.remove(tag)  # almost always the oldest, at the left
        done = 1
    if isinstance(frame.method, pika.spec.Basic.Nack):
        state["nacked"] += done
    state["confirmed"] += done
    if state["confirmed"] == count:
        channel.connection.close()
    else:
        publish_more(channel)


def on_channel(channel):
    channel.queue_declare(queue, durable=True, arguments=arguments, callback=lambda _frame: channel.confirm_delivery(
        lambda frame: on_confirm(frame, channel), callback=lambda _frame: publish_more(channel)))


def on_open(connection):
    connection.channel(on_open_callback=on_channel)


connection = pika.SelectConnection(pika.URLParameters(url), on_open_callback=on_open,
                                   on_open_error_callback=lambda _c, error: sys.exit(f"cannot connect: {error}"),
                                   on_close_callback=lambda c, _reason: c.ioloop.stop())
connection.ioloop.start()
sys.exit(1 if state["nacked"] or state["confirmed"] != count else 0)
