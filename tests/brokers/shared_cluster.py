"""The kit's three-node cluster (labs.brokers.cluster: local nodes on 3.10, containers on 4.3), started once per test
process for every test that needs one: lab 11 and the node kills (tests/brokers/test_cluster.py), the class on a
cluster (tests/classroom/test_class_on_cluster.py) and `./kit cluster` as an instructor types it
(tests/brokers/test_cluster_cli.py). A boot of three nodes costs some 20 s of CPU on 3.10 (about 9 s on 4.3) on a
2-core machine where the suite is short of CPU, so these tests share one xdist_group ("cluster"): one test process
runs them all, one after the other, on one cluster (tests/conftest.py keeps a group together and runs its
`last_in_group` tests last)."""
from __future__ import annotations

from typing import Iterator

import pytest

from labs.brokers.cluster import Cluster, free_base_port
from labs.brokers.container import docker_available
from labs.brokers.local_node import rabbitmq_installed
from tests.helpers import erlang_vm_of, require


@pytest.fixture(scope="session")
def started_cluster(pytestconfig, tmp_path_factory) -> Iterator[Cluster]:
    """The suite's cluster of the version --rabbitmq names, where ./kit keeps one (LABKIT_CACHE/cluster-VERSION, so
    that `labs run 11` and `./kit cluster` find it), at free ports; down at the end of the session."""
    version = pytestconfig.getoption("--rabbitmq")
    require(rabbitmq_installed() if version == "3.10" else docker_available(),
            f"a RabbitMQ {version} cluster needs " + ("rabbitmq-server" if version == "3.10" else "Docker"))
    started = Cluster(version, tmp_path_factory.mktemp("labkit-cache") / f"cluster-{version}", free_base_port())
    try:
        yield started
    finally:
        started.down()
    if version == "3.10":  # local nodes: none is left running
        assert [node.name for node in started.nodes if erlang_vm_of(node.name)] == []


@pytest.fixture
def cluster(started_cluster: Cluster) -> Cluster:
    """The suite's cluster with its three nodes up and formed, as `./kit cluster up` leaves it: started at the first
    test that asks, and brought back (only the nodes that are down) after a test that killed a node or took it down."""
    started_cluster.up()
    return started_cluster
