"""The 4.3 suite's brokers are containers started side by side by parallel test processes: a host port found free
and then taken by another container before Docker binds it must not fail the start."""
from __future__ import annotations

import subprocess

import pika
import pytest

from labs.brokers.container import ContainerNode
from labs.brokers.container import docker_available
from tests.helpers import require, wait_until

PLACEHOLDER_IMAGE = "labkit/worker:latest"  # any local image will do: it only holds a published port


def test_a_port_taken_before_docker_binds_it_gives_the_node_other_ports(pytestconfig, tmp_path):
    if pytestconfig.getoption("--rabbitmq") != "4.3":
        pytest.skip("container nodes are the 4.3 suite's brokers; the 3.10 suite runs local nodes")
    require(docker_available(), "needs Docker")
    node = ContainerNode("4.3", tmp_path / "node")
    holder = subprocess.run(["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{node.port}:9", PLACEHOLDER_IMAGE,
                             "sleep", "120"], capture_output=True, text=True, check=True).stdout.strip()
    taken, created_before = node.port, never_started(node.image)
    try:
        node.start()
        assert node.port != taken
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port)).close()
        assert node.admin.overview()["rabbitmq_version"].startswith("4.3")
    finally:
        node.remove()
        subprocess.run(["docker", "rm", "-f", holder], capture_output=True)
    # Another test process's container is "created" for a moment while it starts; one left behind stays so.
    left = wait_until(lambda: not (never_started(node.image) - created_before), 15, "no container left created",
                      or_last=True)
    assert left, f"the container that could not start was left behind: {never_started(node.image) - created_before}"


def never_started(image: str) -> set[str]:
    return set(subprocess.run(["docker", "ps", "-aq", "--filter", "status=created", "--filter", f"ancestor={image}"],
                              capture_output=True, text=True).stdout.split())
