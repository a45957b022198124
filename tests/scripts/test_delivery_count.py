"""What a quorum queue counts towards its delivery limit, per RabbitMQ version: the worker's limit arithmetic and the
poison-message handout rely on it."""
from __future__ import annotations




def next_delivery(channel, queue: str):
    method, properties, body = None, None, None
    for method, properties, body in channel.consume(queue, inactivity_timeout=10):
        break
    channel.cancel()
    assert method is not None, "no redelivery within 10 s"
    return method, (properties.headers or {}).get("x-delivery-count", 0)


def test_reject_counts_on_every_version_and_nack_only_before_4(space, rabbitmq_version):
    channel = space.channel()
    channel.queue_declare("counted", durable=True, arguments={"x-queue-type": "quorum"})
    channel.basic_publish("", "counted", b"poison")

    method, count = next_delivery(channel, "counted")
    assert count == 0  # a first delivery
    channel.basic_reject(method.delivery_tag, requeue=True)
    method, count = next_delivery(channel, "counted")
    assert count == 1  # basic.reject with requeue: counted everywhere

    channel.basic_nack(method.delivery_tag, requeue=True)
    method, count = next_delivery(channel, "counted")
    # RabbitMQ 4 no longer counts a nack with requeue (a consumer giving a message back, not failing it).
    assert count == (1 if rabbitmq_version >= (4, 0) else 2)
    channel.basic_ack(method.delivery_tag)
