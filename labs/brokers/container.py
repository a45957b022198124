"""RabbitMQ in Docker through testcontainers: the kit's broker for a version the system package does not have.

The image is RABBITMQ_IMAGE, by default the one images/build makes from Debian's rabbitmq-server (the official
rabbitmq:4.3-management works the same where a registry is reachable). Every port is published on 127.0.0.1 only,
at a port chosen here, so a restarted container comes back where the clients expect it.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import pika
import port_for

from labs.drive.wait import wait_until
from labs.brokers.errors import BrokerUnavailable
from labs.amqp.admin import AdminAPI, ManagementUnreachable
from labs.brokers.rabbitmqctl import Rabbitmqctl

IMAGES = {"4.3": "labkit/rabbitmq:4.3-management"}
AMQP_PORT, AMQPS_PORT, MANAGEMENT_PORT = 5672, 5671, 15672
BOOT_TIMEOUT = 90  # seconds
STOP_TIMEOUT = 120  # seconds for a clean stop: a node with much to write out takes a while
PORT_ATTEMPTS = 3  # host ports chosen again when Docker finds one taken meanwhile


class ImageMissing(BrokerUnavailable):
    """The broker image is not there and cannot be pulled: images/build (./kit does it) makes it."""


def docker_available() -> bool:
    """Whether a Docker engine answers here."""
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


def image_for(version: str) -> str:
    return os.environ.get("RABBITMQ_IMAGE") or IMAGES[version]


class ContainerNode:
    """A RabbitMQ container with its management API (and an amqps:// listener when given certificates).

    It offers what the kit uses of a local node: ports, the management client, rabbitmqctl (through docker exec),
    restart, stop and start.
    """

    def __init__(self, version: str, workdir: Path, tls: Optional[dict[str, Path]] = None,
                 max_message_size: Optional[int] = None) -> None:
        self.version, self.image, self.workdir = version, image_for(version), workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.tls_port: Optional[int] = None
        self._choose_ports(tls=bool(tls))
        self.ca_cert = tls["cacertfile"] if tls else None
        self.max_message_size = max_message_size
        settings = []
        if max_message_size:
            settings.append(f"max_message_size = {max_message_size}")
        mounts = {}
        if tls:
            certs = workdir / "certs"
            certs.mkdir(exist_ok=True)
            for key, path in tls.items():  # readable by the container's rabbitmq user: throwaway test certificates
                shutil.copy(path, certs / f"{key}.pem")
                (certs / f"{key}.pem").chmod(0o644)
                settings.append(f"ssl_options.{key} = /etc/rabbitmq/labkit-certs/{key}.pem")
            settings += [f"listeners.ssl.default = {AMQPS_PORT}", "ssl_options.verify = verify_none",
                         "ssl_options.fail_if_no_peer_cert = false"]
            certs.chmod(0o755)
            mounts[str(certs)] = "/etc/rabbitmq/labkit-certs"
        config = workdir / "20-node.conf"
        config.write_text("\n".join(settings) + "\n")
        config.chmod(0o644)
        mounts[str(config)] = "/etc/rabbitmq/conf.d/20-node.conf"
        self._mounts = mounts
        self._container = None
        self.rabbitmqctl: Optional[Rabbitmqctl] = None  # known once the container exists

    def _choose_ports(self, tls: bool) -> None:
        """Free host ports for AMQP, the management API and (with TLS) AMQPS, and the API client on the second."""
        self.port = port_for.select_random()
        self.management_port = port_for.select_random(exclude_ports=[self.port])
        if tls:
            self.tls_port = port_for.select_random(exclude_ports=[self.port, self.management_port])
        self.admin = AdminAPI(f"http://127.0.0.1:{self.management_port}", "guest", "guest")

    @property
    def node_name(self) -> str:
        return "rabbit@" + self.container_id[:12]

    @property
    def container_id(self) -> str:
        return self._container.get_wrapped_container().id

    def ctl_command(self) -> list[str]:
        """rabbitmqctl for this node, as a command line another process can run."""
        return ["docker", "exec", self.container_id, "rabbitmqctl"]

    def running_version(self) -> str:
        """The RabbitMQ version the node reports, e.g. 4.3.6."""
        return self.admin.overview()["rabbitmq_version"]

    def start(self) -> "ContainerNode":
        if self._container is not None:
            self._container.get_wrapped_container().start()
            self.wait_until_ready()
            return self
        # testcontainers reads these when imported. Its reaper image cannot be pulled here, so it is off and the
        # kit removes its containers itself (stop()).
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        os.environ.setdefault("TC_HOST", "127.0.0.1")
        import docker.errors
        from testcontainers.core.container import DockerContainer

        for attempt in range(1, PORT_ATTEMPTS + 1):
            container = DockerContainer(self.image)
            for inside, outside in ((AMQP_PORT, self.port), (MANAGEMENT_PORT, self.management_port),
                                    (AMQPS_PORT, self.tls_port)):
                if outside is not None:
                    container.ports[f"{inside}/tcp"] = ("127.0.0.1", outside)
            for host, inside in self._mounts.items():
                container.with_volume_mapping(host, inside, "ro")
            try:
                container.start()
                break
            except docker.errors.ImageNotFound:
                raise ImageMissing(f"the image {self.image} is missing: build it with images/build "
                                   "(./kit does), or set RABBITMQ_IMAGE") from None
            except docker.errors.APIError as exc:
                # A port found free here was taken before Docker bound it (parallel test processes each start
                # containers): remove the container that was created but could not start, and take other ports.
                if "port is already allocated" not in str(exc) or attempt == PORT_ATTEMPTS:
                    raise
                created = re.search(r"/containers/([0-9a-f]{12,64})/start", str(exc.response.url if exc.response
                                                                                 is not None else ""))
                if created:
                    with contextlib.suppress(docker.errors.APIError):
                        docker.from_env().containers.get(created.group(1)).remove(force=True)
                self._choose_ports(tls=self.tls_port is not None)
        self._container = container
        self.rabbitmqctl = Rabbitmqctl(tuple(self.ctl_command()))
        try:
            self.wait_until_ready()
        except Exception:
            self.remove()
            raise
        return self

    def wait_until_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Ready means an AMQP handshake and a management API call both succeed, not just an open port."""
        try:
            wait_until(self.answers, timeout, f"RabbitMQ in {self.image} to come up", interval=0.2,
                       ignoring=(pika.exceptions.AMQPError, ManagementUnreachable, OSError))
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {self.logs()[-2000:]}") from None

    def answers(self) -> bool:
        """An AMQP handshake and a management API call both succeed (raises while the node is not there yet)."""
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port)).close()
        self.admin.overview()
        return True

    def readable_path(self, path: Path) -> str:
        """Where rabbitmqctl inside the container reads a copy of this host file (e.g. for import_definitions)."""
        inside = f"/tmp/{path.name}"
        subprocess.run(["docker", "cp", str(path), f"{self.container_id}:{inside}"], check=True, capture_output=True)
        return inside

    def ctl(self, *args: str) -> str:
        assert self.rabbitmqctl is not None, "start() the node first"
        return self.rabbitmqctl(*args)

    def logs(self) -> str:
        if self._container is None:
            return ""
        out, err = self._container.get_logs()
        return (out + err).decode("utf-8", "replace")

    def restart(self) -> None:
        """Stop the node cleanly (durable queues and persistent messages are written out) and start it again."""
        self.stop()
        self.start()

    def crash(self) -> None:
        """SIGKILL the container (docker kill), as a crash or a power cut ends the node: nothing is written out, no
        connection is closed. start() brings the same container back, recovering what it had on disk."""
        container = self._container.get_wrapped_container()
        container.kill()
        container.wait()  # exited, so that start() starts it again rather than finding it still running

    def stop(self) -> None:
        """Stop the node cleanly and with it the container; start() brings it back.

        docker stop: both images (the official one and images/build's) run RabbitMQ's start script first, which stops
        the node cleanly on SIGTERM. The timeout is for a node with much to write out, not a guess at a hang.
        A node that had to be killed did not stop cleanly, and a restart after it would prove nothing: raise.
        """
        container = self._container.get_wrapped_container()
        container.stop(timeout=STOP_TIMEOUT)
        container.reload()
        code = container.attrs["State"]["ExitCode"]
        if code != 0:  # the start script exits 0 once the node has stopped; 137 is docker's SIGKILL
            raise RuntimeError(f"RabbitMQ in container {container.name} did not stop cleanly within {STOP_TIMEOUT} s "
                               f"(exit code {code}): see `docker logs {container.name}`")

    def remove(self) -> None:
        if self._container is not None:
            self._container.stop()  # testcontainers' stop removes the container and its volumes
            self._container = None


@contextlib.contextmanager
def running_container_node(version: str, workdir: Optional[Path] = None, tls: Optional[dict[str, Path]] = None,
                           max_message_size: Optional[int] = None) -> Iterator[ContainerNode]:
    """A started container node for the duration of the block, removed afterwards."""
    owned = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="labkit-container-")) if owned else workdir
    node = ContainerNode(version, folder, tls, max_message_size)
    try:
        node.start()
        yield node
    finally:
        node.remove()
        if owned:
            shutil.rmtree(folder, ignore_errors=True)
