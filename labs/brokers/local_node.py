"""A private rabbitmq-server node: loopback only, free ports, data in a folder of its own, management plugin on.

Its life: start (ready means an AMQP handshake and a management API call both succeed), stop, restart, and an
optional amqps:// listener.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import mirakuru.base
import pika
import port_for
from pytest_rabbitmq.factories.executor import RabbitMqExecutor

from labs.drive.wait import wait_until
from labs.amqp.admin import AdminAPI, ManagementUnreachable
from labs.brokers.errors import port_in_use
from labs.brokers.rabbitmqctl import Rabbitmqctl, RabbitmqctlFailed
from labs.settings import settings

BOOT_TIMEOUT = 90  # seconds; a cold node on 2 busy cores takes about 10
PORT_TIMEOUT = 180  # seconds for the AMQP port to open, at the busiest (see __init__)
# RabbitMQ 3.10 stalls its own shutdown for 5 s: the management plugin's statistics handler, on its way out of the
# rabbit_event manager, calls a process that no longer answers, and the node waits out rabbit_event's 5 s shutdown
# timeout (a probe node saw rabbit_sup in supervisor:shutdown and rabbit_event in
# rabbit_mgmt_db_handler:ensure_statistics_disabled the whole time). Removed while the node still runs, the handler
# leaves at once: a stop takes about 1 s instead of 6, for one rabbitmqctl call.
RELEASE_STATISTICS_HANDLER = "gen_event:delete_handler(rabbit_event, rabbit_mgmt_db_handler, [])."


def kill_own_leftovers() -> None:
    """At exit, SIGKILL what this process's executors left running: the processes whose mirakuru_uuid is this pid's.

    mirakuru's own exit hook does this with a substring test: it killed every process whose uuid merely contains
    this pid's digits, so any process that imported it (each `python -m labs` run, each test process) could SIGKILL
    another process's RabbitMQ node on its way out. Here the pid must be the uuid's prefix, as mirakuru writes it.
    """
    import psutil

    mine = f"{os.getpid()}:"
    for process in psutil.process_iter():
        try:
            if process.environ().get("mirakuru_uuid", "").startswith(mine):
                process.kill()
        except (psutil.Error, OSError):
            continue  # gone already, or not ours to read


atexit.unregister(mirakuru.base.cleanup_subprocesses)
atexit.register(kill_own_leftovers)


class RabbitmqNotInstalled(RuntimeError):
    """There is no rabbitmq-server to start a local node with."""


def rabbitmq_installed() -> bool:
    return (settings().rabbitmq_bin / "rabbitmq-server").exists()


def ensure_epmd() -> None:
    """Start Erlang's port mapper (where rabbitmqctl looks nodes up by name) as a daemon of its own, if none runs.

    Left to the first node, epmd would inherit that node's environment, and mirakuru stops a node by killing every
    process that carries its marker: a node's restart or stop would kill epmd, and every other node on this machine
    (another test worker's, a cluster's) would become unreachable for rabbitmqctl.
    """
    epmd = shutil.which("epmd")
    if epmd is None:
        return  # the node starts its own, as before
    environment = {key: value for key, value in os.environ.items() if key != "mirakuru_uuid"}
    subprocess.run([epmd, "-daemon", "-address", "127.0.0.1"], env=environment, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


class LocalNode(RabbitMqExecutor):
    """pytest-rabbitmq's executor for one node, with the management plugin on loopback."""

    def __init__(self, workdir: Path, tls: Optional[dict[str, Path]] = None) -> None:
        """`tls` (cacertfile, certfile, keyfile) adds an amqps:// listener on loopback, at `tls_port`."""
        rabbitmq_bin = settings().rabbitmq_bin
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "plugins").write_text("[rabbitmq_management].\n")
        self.workdir = workdir
        self.management_port = port_for.select_random()
        port = port_for.select_random(exclude_ports=[self.management_port])
        distribution_port = port_for.select_random(exclude_ports=[port, self.management_port])
        self.ports = (port, self.management_port, distribution_port)
        self.node_name = f"labkit-{port}@localhost"
        super().__init__(str(rabbitmq_bin / "rabbitmq-server"), "127.0.0.1", port, distribution_port,
                         str(rabbitmq_bin / "rabbitmqctl"), logpath=workdir / "logs", path=workdir,
                         plugin_path=workdir, node_name=self.node_name)
        # pytest-rabbitmq gives mirakuru a fixed 60 s for the AMQP port to open. When a test run begins, some eleven
        # Erlang VMs boot at once on 2 cores (a broker per test process, two clusters): twice today a node had not
        # opened its port by then, and every test of its process failed. mirakuru reads the limit from _timeout.
        self._timeout = PORT_TIMEOUT
        erl_args = (f"-rabbitmq_management tcp_config [{{port,{self.management_port}}},{{ip,\"127.0.0.1\"}}] "
                    # Queue counts in the management API refresh every 0.5 s instead of 5 s, so waits are short.
                    "-rabbit collect_statistics_interval 500 -kernel inet_dist_use_interface {127,0,0,1}")
        # Erlang writes its crash dumps (MnesiaCore.*, erl_crash.dump) into the node's working directory: its own.
        self._cwd = str(workdir)
        self.tls_port: Optional[int] = None
        self._booted = False  # answered AMQP and the management API since its last start
        self.ca_cert = tls["cacertfile"] if tls else None
        if tls:
            self.tls_port = port_for.select_random(exclude_ports=list(self.ports))
            self.ports += (self.tls_port,)
            options = ",".join(f'{{{key},"{path}"}}' for key, path in tls.items())
            erl_args += (f' -rabbit ssl_listeners [{{"127.0.0.1",{self.tls_port}}}]'
                         f" -rabbit ssl_options [{options},{{verify,verify_none}},{{fail_if_no_peer_cert,false}}]")
        self._envvars.update({"RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "ERL_EPMD_ADDRESS": "127.0.0.1",
                              "RABBITMQ_USE_LONGNAME": "false", "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": erl_args})
        self.admin = AdminAPI(f"http://127.0.0.1:{self.management_port}", "guest", "guest")
        # rabbitmqctl runs with the node's own environment (its HOME and cookie), by the node's name.
        self.rabbitmqctl = Rabbitmqctl.for_node(rabbitmq_bin, self.node_name, self.envvars)

    def start(self) -> "LocalNode":
        """Start the node and wait until it is ready; if it does not get there, stop what was started and raise."""
        ensure_epmd()
        self._booted = False
        try:
            super().start()
            self.wait_until_ready()
            self._booted = True
        except BaseException:
            self._stop_after_failure()
            raise
        return self

    def _stop_after_failure(self) -> None:
        try:
            self.stop()
        except Exception as exc:  # the start's own error is the one to raise; say this one too
            print(f"labkit: could not stop node {self.node_name} after it failed to start: {exc!r}", file=sys.stderr)

    def wait_until_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Ready means an AMQP handshake and a management API call both succeed, not just an open port."""
        wait_until(self.answers, timeout, f"node {self.node_name} to answer", interval=0.2,
                   ignoring=(pika.exceptions.AMQPError, ManagementUnreachable, OSError))

    def answers(self) -> bool:
        """An AMQP handshake and a management API call both succeed (raises while the node is not there yet)."""
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port)).close()
        self.admin.overview()
        return True

    def stop(self, *args, **kwargs) -> "LocalNode":
        """Stop the node cleanly: SIGTERM, and wait until it has written out its data and exited."""
        if self._booted and self.running():
            try:
                self.rabbitmqctl("eval", RELEASE_STATISTICS_HANDLER, timeout=30)
            except (RabbitmqctlFailed, subprocess.TimeoutExpired, OSError):
                pass  # it stops all the same, 5 s later
        self._booted = False
        return super().stop(*args, **kwargs)

    def restart(self) -> None:
        """Stop the node cleanly (durable queues and persistent messages are written out) and start it again."""
        self.stop()
        self.start()

    def crash(self) -> None:
        """SIGKILL the node's processes, as a crash or a power cut ends it: nothing is written out, no connection is
        closed. start() brings it back on the same ports, recovering what it had on disk."""
        self._booted = False
        self.kill(sig=signal.SIGKILL)
        self._wait_until_ports_free()

    def _wait_until_ports_free(self) -> None:
        """After a SIGKILL, mirakuru waits for the rabbitmq-server script only (a shell that runs the Erlang VM in
        the background): the VM may still be exiting, its listening sockets open, and a start() then finds its own
        port taken (AlreadyRunning: one restart in four on RabbitMQ 3.10). A clean stop has no such gap: the script
        waits for the VM before it exits."""
        wait_until(lambda: not any(port_in_use(port) for port in self.ports), 30,
                   f"node {self.node_name}'s ports to close", interval=0.05)

    def log_lines(self) -> list[str]:
        """The node's own log, every file of it (for a failure's diagnosis)."""
        files = sorted(path for path in (Path(self._cwd) / "logs").rglob("*.log") if path.is_file())
        return [line for path in files for line in path.read_text(errors="replace").splitlines()]

    def readable_path(self, path: Path) -> str:
        """Where this node's rabbitmqctl reads a host file: the file itself (a ContainerNode copies it in)."""
        return str(path)

    def ctl(self, *args: str) -> str:
        """Run rabbitmqctl against this node."""
        return self.rabbitmqctl(*args)


@contextlib.contextmanager
def running_local_node(workdir: Optional[Path] = None, tls: Optional[dict[str, Path]] = None) -> Iterator[LocalNode]:
    """A started node for the duration of the block; its data is removed afterwards unless workdir was given.

    A node that fails to start is stopped and its error raised. When the block fails, a failure to stop the node is
    printed and the block's own error raised; when the block succeeds, a failure to stop is raised.
    """
    if not rabbitmq_installed():
        raise RabbitmqNotInstalled(f"rabbitmq-server is not installed ({settings().rabbitmq_bin} has none): "
                                   "apt-get install rabbitmq-server, or set AMQP_URL")
    owned = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="labkit-broker-")) if owned else workdir
    try:
        node = LocalNode(folder, tls)
        node.start()
        try:
            yield node
        except BaseException:
            node._stop_after_failure()
            raise
        node.stop()
    finally:
        if owned:
            shutil.rmtree(folder, ignore_errors=True)
