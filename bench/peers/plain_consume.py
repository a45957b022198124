"""The baseline consumer: basic_consume with a callback that acks, stopping after COUNT messages.

python bench/peers/plain_consume.py URL QUEUE COUNT PREFETCH [QUEUE_TYPE]: QUEUE_TYPE (quorum) declares the queue as
`--queue-type` makes the scripts: durable, x-queue-type set.
"""
import sys

import pika

url, queue, count, prefetch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
arguments = {"x-queue-type": sys.argv[5]} if len(sys.argv) > 5 else None  # as the scripts declare it
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.queue_declare(queue, durable=True, arguments=arguments)
channel.basic_qos(prefetch_count=prefetch)
received = 0


def on_message(ch, method, properties, body):
    global received
    ch.basic_ack(method.delivery_tag)
    received += 1
    if received == count:
        ch.stop_consuming()


channel.basic_consume(queue, on_message)
channel.start_consuming()
connection.close()
