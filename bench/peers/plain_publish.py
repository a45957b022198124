"""The baseline a student would write with plain pika: a BlockingConnection publish loop."""
import sys

import pika

url, queue, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.queue_declare(queue, durable=True)
if mode in ("confirmed", "persistent"):
    channel.confirm_delivery()  # each basic_publish now waits for its own confirm
properties = pika.BasicProperties(delivery_mode=2 if mode == "persistent" else None)
for number in range(count):
    channel.basic_publish("", queue, str(number).encode(), properties)
connection.close()
