"""The last resort for the tests' broker: RabbitMQ in Docker through testcontainers, where an engine runs."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

from testcontainers.community.rabbitmq import RabbitMqContainer

from labs.broker import Admin, Broker

IMAGE = "rabbitmq:3.13-management"
MANAGEMENT_PORT = 15672


@contextlib.contextmanager
def container_broker() -> Iterator[Broker]:
    """A broker container with its management API; rabbitmqctl runs inside it through docker exec."""
    container = RabbitMqContainer(IMAGE).with_exposed_ports(MANAGEMENT_PORT)
    with container:
        host = container.get_container_host_ip()
        admin = Admin(f"http://{host}:{container.get_exposed_port(MANAGEMENT_PORT)}", "guest", "guest")
        deadline = time.monotonic() + 60
        while True:  # the management plugin starts a little after the AMQP listener the container waits for
            try:
                admin.request("GET", "/api/overview")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        ctl = ["docker", "exec", container.get_wrapped_container().id, "rabbitmqctl"]
        yield Broker(host, int(container.get_exposed_port(container.port)), admin, ctl_command=ctl)
