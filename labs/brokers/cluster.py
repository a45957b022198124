"""A RabbitMQ cluster of three nodes on this machine: the embedded default for the cluster lab and the cluster tests.

Two kinds, one interface: RabbitMQ 3.10 as local rabbitmq-server nodes (the system package), and RabbitMQ 4.3 as
containers of the kit's image on a Docker network of their own. Either way each node listens on 127.0.0.1 only, at
ports that follow from one base port (AMQP base+n, management 10000 more), and the cluster is formed before any
queue is declared, so a quorum queue gets a member on every node.

`./kit cluster up|down|status` (python -m labs cluster) keeps the cluster's description in a state file, so the
cluster outlives the command that started it.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

import pika
import pika.exceptions
import pika.frame
import port_for

from labs.amqp.admin import AdminAPI, ManagementUnreachable
from labs.brokers.errors import amqp_server_at, container_publishing, port_in_use, port_ranges
from labs.brokers.rabbitmqctl import Rabbitmqctl
from labs.drive.wait import wait_until
from labs.settings import settings

SIZE = 3
DEFAULT_BASE_PORT = 5700  # nodes at 5701-5703, management at 15701-15703
BOOT_TIMEOUT = 120  # seconds for one node; a cold node on 2 busy cores takes 10-20
COOKIE = "LABKITCLUSTERCOOKIE"  # the nodes' shared Erlang cookie (loopback or a private network only)
IMAGE = "labkit/rabbitmq:4.3-management"
NETWORK = "labkit-cluster"


class ClusterError(RuntimeError):
    """The cluster could not be started, formed or reached; the message says what to do."""


class PortsTaken(ClusterError):
    """Another program (often another RabbitMQ) listens at the cluster's ports: its nodes could not start there."""


@dataclass(frozen=True)
class ClusterNode:
    number: int  # 1, 2, 3
    name: str  # the Erlang node name, e.g. labkit5700-c1@localhost or rabbit@c1
    port: int  # AMQP, on 127.0.0.1
    management_port: int

    def url(self, vhost: str = "/", username: str = "guest", password: str = "guest") -> str:
        from urllib.parse import quote

        return f"amqp://{quote(username, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/" \
               f"{quote(vhost, safe='')}"

    @property
    def admin(self) -> AdminAPI:
        return AdminAPI(f"http://127.0.0.1:{self.management_port}", "guest", "guest")

    def answers(self) -> bool:
        """An AMQP handshake and a management API call both succeed."""
        try:
            pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port, connection_attempts=1)).close()
            self.admin.overview()
            return True
        except (pika.exceptions.AMQPError, ManagementUnreachable, OSError):
            return False
        except ValueError as exc:  # pika's "Expected connected socket": the node died as the connection opened
            if "Expected connected socket" not in str(exc):
                raise
            return False


@dataclass
class Cluster:
    """Three nodes, local processes (version 3.10) or containers (4.3); `folder` holds their data and the state."""

    version: str
    folder: Path
    base_port: int = DEFAULT_BASE_PORT

    @property
    def nodes(self) -> list[ClusterNode]:
        local = self.version == "3.10"
        # Local node names carry the base port: two clusters on one machine (a class's and the tests') never clash.
        return [ClusterNode(n, f"labkit{self.base_port}-c{n}@localhost" if local else f"rabbit@c{n}",
                            self.base_port + n, self.base_port + 10000 + n) for n in range(1, SIZE + 1)]

    def urls(self, vhost: str = "/", username: str = "guest", password: str = "guest") -> list[str]:
        return [node.url(vhost, username, password) for node in self.nodes]

    @property
    def container_prefix(self) -> str:
        return f"labkit-cluster-{self.base_port}"

    # --- life ---

    def up(self) -> None:
        """Start the three nodes and form the cluster; a cluster that is already up is left as it is."""
        if all(node.answers() for node in self.nodes) and self.running_nodes() == {n.name for n in self.nodes}:
            return
        # Before launching anything: a node whose ports another broker holds cannot listen, yet that broker answers
        # in its place, so the cluster would seem to come up and then "not form", naming the other broker's nodes.
        self.check_ports()
        self.folder.mkdir(parents=True, exist_ok=True)
        # All three boot at once: together they take about as long as one.
        waiting = [node for node in self.nodes if not node.answers()]
        for node in waiting:
            self._launch(node)
        for node in waiting:
            self._wait_until_up(node)
        if self.version == "3.10":  # the containers form the cluster at boot (classic config peer discovery)
            first = self.nodes[0]
            for node in self.nodes[1:]:
                if first.name not in self.running_nodes_seen_by(node):
                    ctl = self.ctl(node.number)
                    ctl("stop_app")
                    ctl("join_cluster", first.name)
                    ctl("start_app")
        self.wait_formed()
        (self.folder / "cluster.json").write_text(json.dumps({"version": self.version, "base_port": self.base_port,
                                                              "nodes": [asdict(n) for n in self.nodes]}, indent=2))

    def start(self, number: int) -> None:
        """Start one node (again, after kill()); it rejoins the cluster it belongs to."""
        node = self.nodes[number - 1]
        if not node.answers():
            self._launch(node)
            self._wait_until_up(node)

    def _launch(self, node: ClusterNode) -> None:
        if self.version == "3.10":
            self._start_local(node)
        else:
            self._start_container(node)

    def _wait_until_up(self, node: ClusterNode) -> None:
        if not wait_until(node.answers, BOOT_TIMEOUT, f"node {node.name}", interval=0.5, or_last=True):
            raise ClusterError(f"node {node.name} did not come up within {BOOT_TIMEOUT}s; see {self.folder}")

    def kill(self, number: int) -> None:
        """Kill one node outright (SIGKILL, no goodbye), as a machine that dies would."""
        node = self.nodes[number - 1]
        if self.version == "3.10":
            pid = self._local_vm(node)
            if pid is None:
                raise ClusterError(f"node {node.name} is not running here")
            os.kill(pid, signal.SIGKILL)
        else:
            subprocess.run(["docker", "kill", f"{self.container_prefix}-c{number}"], capture_output=True, check=True)
        wait_until(lambda: not node.answers(), 30, f"node {node.name} to stop answering", interval=0.2, or_last=True)

    def down(self) -> None:
        """Kill every node and remove their data: with the data gone, a graceful stop (5 to 6 s a node on 3.10) would
        save nothing, and the containers of 4.3 go the same way (docker rm -f)."""
        if self.version == "3.10":
            for node in self.nodes:
                pid = self._local_vm(node)
                if pid is not None:  # else down already
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not any(self._local_vm(node) for node in self.nodes), 30, "the nodes to exit",
                       or_last=True)
        else:
            names = [f"{self.container_prefix}-c{n.number}" for n in self.nodes]
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True)
            subprocess.run(["docker", "network", "rm", self.network], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- what it looks like ---

    def ctl(self, number: int) -> Rabbitmqctl:
        node = self.nodes[number - 1]
        if self.version == "3.10":
            return Rabbitmqctl.for_node(settings().rabbitmq_bin, node.name, self._local_env(node))
        return Rabbitmqctl(("docker", "exec", f"{self.container_prefix}-c{number}", "rabbitmqctl"))

    def is_up(self) -> bool:
        """At least one of this cluster's nodes runs and answers (a cluster with a node killed is still up). By name:
        another cluster at the same ports (the other version's, the nodes named otherwise) does not count."""
        return bool(self.running_nodes() & {node.name for node in self.nodes})

    def _runs_here(self, node: ClusterNode) -> bool:
        """This cluster's own node runs (its Erlang VM, or its container), whatever answers at its ports."""
        if self.version == "3.10":
            return self._local_vm(node) is not None
        inspected = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}",
                                    f"{self.container_prefix}-c{node.number}"], capture_output=True, text=True)
        return inspected.stdout.strip() == "true"

    def check_ports(self) -> None:
        """PortsTaken, saying which ports and by what when it can tell, when something that is not this cluster's
        node listens at a port one of its nodes needs (AMQP, management, and Erlang distribution for local nodes)."""
        taken, amqp = [], []
        for node in self.nodes:
            if self._runs_here(node):
                continue
            wanted = [node.port, node.management_port] + ([node.port + 20000] if self.version == "3.10" else [])
            busy = [port for port in wanted if port_in_use(port)]
            taken += busy
            amqp += [port for port in busy if port == node.port]
        if not taken:
            return
        servers = list(dict.fromkeys(filter(None, (amqp_server_at(port) for port in amqp))))
        containers = list(dict.fromkeys(filter(None, (container_publishing(port) for port in sorted(taken)))))
        what = ", ".join(servers) if servers else "another program"
        if containers:
            what += f" in container{'s' if len(containers) > 1 else ''} {', '.join(containers)}"
        other = next((v for v in ("3.10", "4.3") if v != self.version), None)
        theirs = {n.name for n in Cluster(other, self.folder, self.base_port).nodes}
        hint = (f"take the kit's RabbitMQ {other} cluster down first (./kit cluster down --rabbitmq {other})"
                if any(f"cluster {name})" in what for name in theirs) else "stop it")
        ports = f"port {taken[0]} is" if len(taken) == 1 else f"ports {port_ranges(taken)} are"
        raise PortsTaken(f"cannot start the RabbitMQ {self.version} cluster: its {ports} taken, by {what}: {hint}, "
                         "or choose other ports with --base-port")

    def running_nodes_seen_by(self, node: ClusterNode) -> set[str]:
        try:
            return {n["name"] for n in node.admin.request("GET", "/api/nodes") if n.get("running")}
        except OSError:
            return set()

    def running_nodes(self) -> set[str]:
        for node in self.nodes:
            if node.answers():
                return self.running_nodes_seen_by(node)
        return set()

    def wait_formed(self, timeout: float = 90) -> None:
        wanted = {n.name for n in self.nodes}
        if not wait_until(lambda: self.running_nodes() == wanted, timeout, "one cluster", interval=0.5, or_last=True):
            raise ClusterError(f"the nodes did not form one cluster within {timeout:.0f}s "
                               f"(running together: {sorted(self.running_nodes())})")

    def queues(self, vhost: Optional[str] = None) -> list[dict]:
        """Every queue (of one vhost) with its type, leader and members, from a node that answers."""
        for node in self.nodes:
            if node.answers():
                path = f"/api/queues/{AdminAPI.quote(vhost)}" if vhost else "/api/queues"
                return node.admin.request("GET", path + "?columns=name,vhost,type,node,leader,members,messages")
        raise ClusterError("no node of the cluster answers")

    def queue(self, vhost: str, name: str) -> dict:
        """One queue's type, leader and members (an empty dict when it does not exist)."""
        return next((found for found in self.queues(vhost) if found["name"] == name), {})

    def leader(self, vhost: str, queue: str) -> Optional[str]:
        """The node name of a quorum queue's leader (its home node for a classic queue)."""
        for found in self.queues(vhost):
            if found["name"] == queue:
                return found.get("leader") or found.get("node")
        return None

    def number_of(self, node_name: str) -> int:
        return next(n.number for n in self.nodes if n.name == node_name)

    def status(self) -> str:
        lines = [f"RabbitMQ {self.version} cluster, data in {self.folder}"]
        running = self.running_nodes()
        for node in self.nodes:
            state = "running" if node.name in running else "down"
            lines.append(f"  {node.name:<24} {state:<8} amqp://127.0.0.1:{node.port}  "
                         f"management http://127.0.0.1:{node.management_port}")
        if running:
            for queue in self.queues():
                members = ", ".join(queue.get("members") or [])
                lines.append(f"  queue {queue['vhost']}/{queue['name']} ({queue.get('type')}): leader "
                             f"{queue.get('leader') or queue.get('node')}" + (f"; members {members}" if members else ""))
        return "\n".join(lines)

    # --- the two kinds of node ---

    def _local_env(self, node: ClusterNode) -> dict[str, str]:
        folder = self.folder / f"c{node.number}"
        erl_args = (f"-rabbitmq_management tcp_config [{{port,{node.management_port}}},{{ip,\"127.0.0.1\"}}] "
                    "-rabbit collect_statistics_interval 500 -kernel inet_dist_use_interface {127,0,0,1}")
        return {**os.environ, "RABBITMQ_NODENAME": node.name, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.port), "RABBITMQ_DIST_PORT": str(node.port + 20000),
                "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"), "RABBITMQ_LOG_BASE": str(folder / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "plugins"), "RABBITMQ_USE_LONGNAME": "false",
                "ERL_EPMD_ADDRESS": "127.0.0.1", "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": erl_args}

    def _local_vm(self, node: ClusterNode) -> Optional[int]:
        """The pid of the Erlang VM running this local node, from the pid file RabbitMQ writes beside its data, when
        that process still is the node's VM (a pid file outlives a killed node, and its pid may be reused)."""
        pid_file = self.folder / f"c{node.number}" / "mnesia" / f"{node.name}.pid"
        try:
            pid = int(pid_file.read_text().strip())
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if f"RABBITMQ_NODENAME={node.name}".encode() in environment else None

    def _start_local(self, node: ClusterNode) -> None:
        folder = self.folder / f"c{node.number}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plugins").write_text("[rabbitmq_management].\n")
        server = settings().rabbitmq_bin / "rabbitmq-server"
        if not server.exists():
            raise ClusterError(f"rabbitmq-server is not installed ({server}): apt-get install rabbitmq-server")
        from labs.brokers.local_node import ensure_epmd  # here: it pulls in pytest, which only local nodes need
        ensure_epmd()
        with (folder / "console.log").open("ab") as log:
            # A session of its own: the node outlives this command (./kit cluster up returns at once). Its working
            # directory is its own folder: Erlang writes crash dumps (MnesiaCore.*, erl_crash.dump) there, not into
            # whatever checkout the command ran from.
            subprocess.Popen([str(server)], env=self._local_env(node), stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, cwd=folder)

    @property
    def network(self) -> str:
        return f"{NETWORK}-{self.base_port}"

    def _start_container(self, node: ClusterNode) -> None:
        name = f"{self.container_prefix}-c{node.number}"
        if subprocess.run(["docker", "start", name], capture_output=True).returncode == 0:
            return  # a killed node, started again with its data
        subprocess.run(["docker", "network", "create", self.network], capture_output=True)
        config = self.folder / "cluster.conf"
        config.write_text("cluster_formation.peer_discovery_backend = classic_config\n" + "".join(
            f"cluster_formation.classic_config.nodes.{n.number} = {n.name}\n" for n in self.nodes))
        config.chmod(0o644)
        # The cookie must be the same on every node and readable by the rabbitmq user only (the image runs as that
        # user). Then the image's own command: RabbitMQ's start script, which stops the node cleanly on SIGTERM.
        cookie = "/var/lib/rabbitmq/.erlang.cookie"
        boot = (f"chmod 600 {cookie} && echo {COOKIE} > {cookie} && chmod 400 {cookie} "
                "&& exec /usr/lib/rabbitmq/bin/rabbitmq-server")
        started = subprocess.run(
            ["docker", "run", "-d", "--name", name, "--hostname", f"c{node.number}", "--network", self.network,
             "--network-alias", f"c{node.number}",
             "-p", f"127.0.0.1:{node.port}:5672", "-p", f"127.0.0.1:{node.management_port}:15672",
             "-v", f"{config}:/etc/rabbitmq/conf.d/30-cluster.conf:ro", IMAGE, "sh", "-c", boot],
            capture_output=True, text=True)
        if started.returncode:
            raise ClusterError(f"docker could not start {name}: {started.stderr.strip().splitlines()[-1]} "
                               "(images/build makes the image; ./kit does it)")


def state_folder(version: str) -> Path:
    cache = Path(os.environ.get("LABKIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "labkit")
    return cache / f"cluster-{version}"


def recorded_cluster(version: str) -> Optional[Cluster]:
    """The cluster of this version that `./kit cluster up` started and recorded (its cluster.json), at the base port
    it was started at; None when none was (or it was taken down: down removes the record with the data)."""
    try:
        record = json.loads((state_folder(version) / "cluster.json").read_text())
        return Cluster(version, state_folder(version), int(record["base_port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def free_base_port() -> int:
    """A base port whose nine ports (AMQP, management, distribution of three nodes) are all free."""
    for _ in range(200):
        base = random.randrange(7000, 19000, 10)
        if all(port_for.is_available(base + offset + n) for offset in (0, 10000, 20000) for n in (1, 2, 3)):
            return base
    raise ClusterError("no free ports for a cluster between 7000 and 39000")


@contextlib.contextmanager
def running_cluster(version: str, base_port: Optional[int] = None, folder: Optional[Path] = None,
                    announce=print) -> Iterator[Cluster]:
    """The cluster at `base_port` (the default one without it) when it is up, left as it is afterwards; otherwise a
    cluster started for the block (at `base_port`, or at free ports) and taken down after it."""
    existing = Cluster(version, state_folder(version), base_port or DEFAULT_BASE_PORT)
    if all(node.answers() for node in existing.nodes) and \
            existing.running_nodes() == {node.name for node in existing.nodes}:
        announce(f"using the RabbitMQ {version} cluster on ports {existing.nodes[0].port}-{existing.nodes[-1].port}")
        yield existing
        return
    private = Cluster(version, folder or state_folder(version).with_name(f"cluster-{version}-run-{os.getpid()}"),
                      base_port or free_base_port())
    announce(f"starting a RabbitMQ {version} cluster of three nodes on ports "
             f"{private.nodes[0].port}-{private.nodes[-1].port} for the lab; it is taken down afterwards")
    try:
        private.up()
        yield private
    finally:
        private.down()
