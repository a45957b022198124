"""The last resort for the tests' broker: RabbitMQ in Docker through testcontainers, where an engine runs."""
from __future__ import annotations

import contextlib
from typing import Iterator

import tenacity
from testcontainers.community.rabbitmq import RabbitMqContainer

from labs.broker import Broker
from labs.management import ManagementAPI
from labs.rabbitmqctl import Rabbitmqctl

IMAGE = "rabbitmq:3.13-management"
MANAGEMENT_PORT = 15672


@contextlib.contextmanager
def container_broker() -> Iterator[Broker]:
    """A broker container with its management API; rabbitmqctl runs inside it through docker exec."""
    container = RabbitMqContainer(IMAGE).with_exposed_ports(MANAGEMENT_PORT)
    with container:
        host = container.get_container_host_ip()
        admin = ManagementAPI(f"http://{host}:{container.get_exposed_port(MANAGEMENT_PORT)}", "guest", "guest")
        # The management plugin starts a little after the AMQP listener the container waits for.
        tenacity.Retrying(retry=tenacity.retry_if_exception_type(OSError), stop=tenacity.stop_after_delay(60),
                          wait=tenacity.wait_fixed(0.5), reraise=True)(admin.request, "GET", "/api/overview")
        ctl = Rabbitmqctl(("docker", "exec", container.get_wrapped_container().id, "rabbitmqctl"))
        yield Broker(host, int(container.get_exposed_port(container.port)), "guest", "guest", "/", admin, control=ctl)
