"""`./kit cluster` (python -m labs cluster) as an instructor types it when a cluster of the other version is up: the
commands act on the cluster that is up, ask which one when both are, and `cluster up` on ports another RabbitMQ holds
says so at once (exit 20) instead of failing to "form" with the other broker's nodes.

Real clusters at free ports (never 5701-5703), in a LABKIT_CACHE of the suite's own: the suite's RabbitMQ 4.3 cluster
of containers (the kit's image; tests/brokers/shared_cluster.py) and a 3.10 cluster of local nodes that the real
command starts. In the 4.3 suite, for which ./kit test makes the image; on the test process that runs every cluster
test, the one that takes the 4.3 cluster down last."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labs.brokers.cluster import Cluster, free_base_port
from labs.brokers.local_node import rabbitmq_installed
from labs.exit_codes import EXIT_NO_BROKER, EXIT_OK, EXIT_USAGE
from labs.settings import child_environment
from tests.helpers import ROOT, assert_one_line_error, erlang_vm_of, require

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster"),
              pytest.mark.skipif("config.getoption('--rabbitmq') != '4.3'",
                                 reason="a RabbitMQ 4.3 cluster of the kit's image: the 4.3 suite's (./kit test "
                                        "makes the image for it)")]


def kit_cluster(cache: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = child_environment(LABKIT_CACHE=str(cache))
    env.pop("AMQP_URL", None)
    return subprocess.run([sys.executable, "-m", "labs", "cluster", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def containers_of(cluster: Cluster) -> list[str]:
    listed = subprocess.run(["docker", "ps", "-a", "--filter", f"name={cluster.container_prefix}-c", "--format",
                             "{{.Names}}"], capture_output=True, text=True, timeout=60)
    return listed.stdout.split()


@pytest.fixture
def cluster_43(cluster: Cluster) -> Cluster:
    """The suite's RabbitMQ 4.3 cluster (tests/brokers/shared_cluster.py), up and recorded in its LABKIT_CACHE as
    `cluster up --rabbitmq 4.3` leaves it; these tests start a 3.10 cluster of local nodes beside it."""
    require(rabbitmq_installed(), "a RabbitMQ 3.10 cluster needs rabbitmq-server")
    return cluster


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


@pytest.mark.last_in_group  # it takes the suite's cluster down: the other cluster tests before it
def test_cluster_commands_without_rabbitmq_act_on_the_cluster_that_is_up(cluster_43):
    """Without --rabbitmq (nor --base-port): status shows the 4.3 cluster that is up, not a 3.10 one "down"; with a
    3.10 cluster up too, a one-line refusal asking for --rabbitmq; `down --rabbitmq 3.10` finds its recorded ports;
    then `down` alone takes the 4.3 cluster down; with none up, the 3.10 cluster at 5701-5703, as ever."""
    cache = cluster_43.folder.parent
    status = kit_cluster(cache, "status")
    assert status.returncode == EXIT_OK, status.stderr
    assert status.stdout.startswith("RabbitMQ 4.3 cluster"), status.stdout
    for node in cluster_43.nodes:
        assert f"{node.name:<24} running  amqp://127.0.0.1:{node.port}" in status.stdout, status.stdout

    local = Cluster("3.10", cache / "cluster-3.10", free_base_port())
    try:
        up = kit_cluster(cache, "up", "--rabbitmq", "3.10", "--base-port", str(local.base_port))
        assert up.returncode == EXIT_OK, up.stdout + up.stderr
        for action in ("status", "down", "kill"):
            both = kit_cluster(cache, action, *(["2"] if action == "kill" else []))
            assert_one_line_error(both, EXIT_USAGE, "two clusters are up", f"RabbitMQ 3.10 on ports "
                                  f"{local.nodes[0].port}-{local.nodes[-1].port}", "RabbitMQ 4.3 on ports",
                                  "--rabbitmq")
        assert all(erlang_vm_of(node.name) for node in local.nodes)  # the refusals touched nothing
        assert len(containers_of(cluster_43)) == 3

        down = kit_cluster(cache, "down", "--rabbitmq", "3.10")  # at the ports it was started at, from its record
        assert down.returncode == EXIT_OK and "RabbitMQ 3.10 cluster is down" in down.stdout, down.stderr
        assert [node.name for node in local.nodes if erlang_vm_of(node.name)] == []
    finally:
        local.down()

    down = kit_cluster(cache, "down")
    assert down.returncode == EXIT_OK and "the RabbitMQ 4.3 cluster is down" in down.stdout, down.stderr
    assert containers_of(cluster_43) == [] and not cluster_43.folder.exists()

    none = kit_cluster(cache, "status")
    assert none.returncode == EXIT_OK and none.stdout.startswith("RabbitMQ 3.10 cluster"), none.stderr
    assert "amqp://127.0.0.1:5701" in none.stdout
