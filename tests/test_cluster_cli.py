"""`./kit cluster` (python -m labs cluster) as an instructor types it when a cluster of the other version is up:
`cluster up` on ports another RabbitMQ holds says so at once (exit 20) instead of failing to "form" with the other
broker's nodes.

Real clusters from the real command, at free ports (never 5701-5703) and with a LABKIT_CACHE of the test's own: a
RabbitMQ 4.3 cluster of containers (the kit's image). In the 4.3 suite, for which ./kit test makes the image."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from labs.brokers.cluster import Cluster, free_base_port
from labs.brokers.container import docker_available
from labs.brokers.local_node import rabbitmq_installed
from labs.exit_codes import EXIT_NO_BROKER, EXIT_OK
from labs.settings import child_environment
from tests.helpers import ROOT, assert_one_line_error, erlang_vm_of, require

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster-cli"),
              pytest.mark.skipif("config.getoption('--rabbitmq') != '4.3'",
                                 reason="a RabbitMQ 4.3 cluster of the kit's image: the 4.3 suite's (./kit test "
                                        "makes the image for it)")]


def kit_cluster(cache: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = child_environment(LABKIT_CACHE=str(cache))
    env.pop("AMQP_URL", None)
    return subprocess.run([sys.executable, "-m", "labs", "cluster", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def cluster_43(tmp_path_factory) -> Iterator[Cluster]:
    """A RabbitMQ 4.3 cluster `cluster up --rabbitmq 4.3` started and recorded in a cache of the module's own."""
    require(docker_available(), "a RabbitMQ 4.3 cluster needs Docker")
    require(rabbitmq_installed(), "a RabbitMQ 3.10 cluster needs rabbitmq-server")
    cache = tmp_path_factory.mktemp("labkit-cache")
    started = Cluster("4.3", cache / "cluster-4.3", free_base_port())
    try:
        up = kit_cluster(cache, "up", "--rabbitmq", "4.3", "--base-port", str(started.base_port))
        require(up.returncode == 0 or "docker could not start" not in up.stderr,
                f"the kit's RabbitMQ 4.3 image is missing (images/build): {up.stderr.strip()[-300:]}")
        assert up.returncode == EXIT_OK, up.stdout + up.stderr
        yield started
    finally:
        started.down()


def test_cluster_up_on_ports_another_rabbitmq_holds_says_so_at_once(cluster_43, tmp_path):
    """A 3.10 cluster asked for at the 4.3 cluster's ports: exit 20 and one line naming the ports and what holds
    them (RabbitMQ 4.x in the kit's containers, with the command that frees them), no node launched, nothing
    recorded; not the minute-long "the nodes did not form one cluster" listing the 4.3 nodes."""
    base = str(cluster_43.base_port)
    mine = Cluster("3.10", tmp_path / "cluster-3.10", cluster_43.base_port)
    try:
        result = kit_cluster(tmp_path, "up", "--rabbitmq", "3.10", "--base-port", base, timeout=120)
        first, last = cluster_43.nodes[0], cluster_43.nodes[-1]
        assert_one_line_error(result, EXIT_NO_BROKER, "cannot start the RabbitMQ 3.10 cluster",
                              f"{first.port}-{last.port}, {first.management_port}-{last.management_port}",
                              "taken, by RabbitMQ 4.", f"{cluster_43.container_prefix}-c1",
                              "./kit cluster down --rabbitmq 4.3", "--base-port")
        assert "did not form" not in result.stderr
        assert [node.name for node in mine.nodes if erlang_vm_of(node.name)] == []  # no node was launched
        assert not (mine.folder / "cluster.json").exists()
    finally:
        mine.down()  # the nodes a broken check would have launched
