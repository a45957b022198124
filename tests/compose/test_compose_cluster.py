"""compose.yaml's `cluster` profile for real: three brokers form one cluster at boot, a quorum queue gets a member on
each, and workers connected through the other nodes drain what the sender published to one.

As tests/compose/test_compose_up.py: the kit's local images, a compose project of its own, free host ports on 127.0.0.1;
without Docker or the images it skips, and under CI=true it fails instead (tests.helpers.require).
"""
from __future__ import annotations

import re
import secrets
import subprocess
import sys
import urllib.error
from collections import Counter

import pika
import pika.exceptions
import port_for
import pytest

from labs.amqp.admin import AdminAPI
from tests.helpers import SENDER, wait_until
from tests.compose.test_compose_up import (IN_THE_43_SUITE, PASSWORD, Project, brought_down_afterwards, done_bodies,
                                  require_docker_compose_and_images, run)

NODES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")
MESSAGES = 30
WAITING = re.compile(r"^\[[^\]]*\] waiting for messages on queue 'hello' at (rabbitmq-\d):5672 ", re.MULTILINE)


class ClusterProject(Project):
    """The compose project with the cluster profile on, each node's AMQP and management ports free ones."""

    def __init__(self) -> None:
        super().__init__()
        taken = [self.amqp_port, self.management_port]
        self.amqp_ports, self.management_ports = {}, {}
        for number, node in enumerate(NODES, 1):
            for ports, variable in ((self.amqp_ports, "LABKIT_CLUSTER_AMQP_PORT"),
                                    (self.management_ports, "LABKIT_CLUSTER_MANAGEMENT_PORT")):
                ports[node] = port_for.select_random(exclude_ports=taken)
                taken.append(ports[node])
                self.env[f"{variable}_{number}"] = str(ports[node])
        self.env["COMPOSE_PROFILES"] = "cluster"
        # A cookie of this test's own: the local image ships a .erlang.cookie file, the same in every container, so
        # only a cookie that no file has shows that the nodes run with the one compose.yaml gives them.
        self.cookie = f"labkittest{secrets.token_hex(8)}"
        self.env["LABKIT_CLUSTER_COOKIE"] = self.cookie

    def node_url(self, node: str, user: str = "alice", vhost: str = "alice") -> str:
        return f"amqp://{user}:{PASSWORD}@127.0.0.1:{self.amqp_ports[node]}/{vhost}"

    def worker_nodes(self) -> dict[str, str]:
        """Each cluster worker's container name and the node it connected to, from its first line."""
        nodes = {}
        for container in self.compose("ps", "-q", "cluster-worker").stdout.split():
            name = run("docker", "inspect", "-f", "{{.Name}}", container, timeout=30).stdout.strip().lstrip("/")
            found = WAITING.search(run("docker", "logs", container, timeout=30).stdout)
            if found:
                nodes[name] = found.group(1)
        return nodes


@pytest.fixture
def cluster():
    require_docker_compose_and_images()
    with brought_down_afterwards(ClusterProject()) as started:
        yield started


@pytest.mark.slow(seconds=38)
@IN_THE_43_SUITE
def test_three_nodes_form_one_cluster_and_workers_on_the_others_drain_a_quorum_queue(cluster):
    # Healthy within 90 s (about 20 s on two busy cores), or the test fails. The CLI's cookie is proven below, by
    # rabbitmqctl inside node 1's container.
    cluster.compose("up", "-d", "--wait", "--wait-timeout", "90", "--pull", "never", *NODES)

    # The sample accounts have no management tag: an administrator (as compose.yaml tells a teacher to add; a
    # monitoring tag alone does not see alice's queues), added on node 1 with rabbitmqctl inside its container (the
    # shared cookie at work for the CLI too), and known to the whole cluster.
    password = secrets.token_hex(12)  # rabbitmqctl takes an argument that starts with '-' for an option
    for command in (("add_user", "labkit-teacher", password), ("set_user_tags", "labkit-teacher", "administrator")):
        cluster.compose("exec", "-T", "rabbitmq-1", "rabbitmqctl", *command, timeout=60)
    apis = {node: AdminAPI(f"http://127.0.0.1:{cluster.management_ports[node]}", "labkit-teacher", password)
            for node in NODES}

    # One cluster: node 1's management API lists all three nodes, running; the user added on node 1 is known to
    # nodes 2 and 3 too, whose APIs list the same.
    names = {f"rabbit@{node}" for node in NODES}

    def running_seen_by(node: str) -> set[str]:
        return {n["name"] for n in apis[node].request("GET", "/api/nodes") if n.get("running")}

    wait_until(lambda: running_seen_by("rabbitmq-1") == names, 30,
               f"node 1's /api/nodes to list {sorted(names)} running")
    assert running_seen_by("rabbitmq-2") == running_seen_by("rabbitmq-3") == names

    # Each node runs with LABKIT_CLUSTER_COOKIE (not the image's cookie file), asked from node 1 over the cluster.
    cookies = cluster.compose("exec", "-T", "rabbitmq-1", "rabbitmqctl", "-q", "eval",
                              "[erpc:call(N, erlang, get_cookie, []) || N <- lists:sort([node() | nodes()])].",
                              timeout=60).stdout
    assert re.findall(r"\w+", cookies) == [cluster.cookie] * 3, cookies

    # The sample definitions are loaded: alice works (here through node 2) in her vhost, and only there.
    pika.BlockingConnection(pika.URLParameters(cluster.node_url("rabbitmq-2") + "?connection_attempts=1")).close()
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        pika.BlockingConnection(pika.URLParameters(cluster.node_url("rabbitmq-2", "alice", "bob")
                                                   + "?connection_attempts=1"))

    cluster.compose("up", "-d", "--pull", "never", "--no-build", "--scale", "cluster-worker=3", "cluster-worker")
    assert len(cluster.compose("ps", "-q", "cluster-worker").stdout.split()) == 3

    def hello() -> dict:
        try:
            return apis["rabbitmq-1"].request("GET", "/api/queues/alice/hello")
        except urllib.error.HTTPError as exc:  # 404 until a worker declared it
            if exc.code == 404:
                return {}
            raise

    wait_until(lambda: hello().get("consumers") == 3 and len(cluster.worker_nodes()) == 3, 60,
               "3 cluster workers consuming 'hello'")
    queue = hello()
    assert queue["type"] == "quorum" and queue["durable"] is True
    assert sorted(queue["members"]) == sorted(names), queue["members"]  # a member on every node

    # The sender publishes to the node with the fewest workers, so most (and often all) of them take the messages
    # through another node, which the cluster forwards them to.
    workers = cluster.worker_nodes()
    per_node = Counter(workers.values())
    target = min(NODES, key=lambda node: per_node[node])
    elsewhere = {name for name, node in workers.items() if node != target}
    assert len(elsewhere) >= 2, workers
    sent = subprocess.run([sys.executable, str(SENDER), "--url", cluster.node_url(target), "--queue-type", "quorum",
                           "--count", str(MESSAGES)], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert sent.returncode == 0, sent.stderr
    assert f"sent {MESSAGES} messages" in sent.stdout, sent.stdout

    def all_done():
        return sum(len(done_bodies(output)) for output in cluster.worker_logs("cluster-worker").values()) >= MESSAGES

    wait_until(all_done, 60, f"the cluster workers to finish {MESSAGES} messages")
    per_worker = {name: done_bodies(output) for name, output in cluster.worker_logs("cluster-worker").items()}
    assert sorted(body for bodies in per_worker.values() for body in bodies) == \
        sorted(str(number) for number in range(1, MESSAGES + 1))
    assert all(per_worker[name] for name in elsewhere), \
        f"a worker on another node than {target} took no message: { {n: len(b) for n, b in per_worker.items()} }"
    wait_until(lambda: (q := hello()).get("messages") == 0 and q.get("consumers") == 3, 30,
               "'hello' to drain to 0 with its 3 workers still attached")
