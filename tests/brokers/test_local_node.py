"""The private local node's life on a machine shared with other nodes (test workers' nodes, a class's cluster)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import port_for
import pytest

from labs.brokers.errors import port_in_use
from labs.brokers.local_node import LocalNode, rabbitmq_installed, running_local_node
from tests.helpers import IN_THE_310_SUITE, ROOT, node_working_directory, processes_with, require


def epmd_processes(port: int) -> list[int]:
    """The pids of the epmd daemons serving this port (ERL_EPMD_PORT in their environment)."""
    return processes_with("epmd", f"ERL_EPMD_PORT={port}")


def marked(pid: int) -> bool:
    return any(entry.startswith(b"mirakuru_uuid=") for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))


@IN_THE_310_SUITE
def test_stopping_a_node_leaves_the_port_mapper_to_the_other_nodes(tmp_path, monkeypatch):
    """epmd outlives the node that needed it first: stopping that node (as a lab's restart does) must not take the
    name service away from every other node on the machine (rabbitmqctl then fails with "unavailable")."""
    require(rabbitmq_installed(), "needs rabbitmq-server: apt-get install rabbitmq-server")
    port = port_for.select_random()  # an epmd of this test's own, so the machine's shared one is not touched
    monkeypatch.setenv("ERL_EPMD_PORT", str(port))
    try:
        with running_local_node(tmp_path / "node") as node:
            node.ctl("status")  # rabbitmqctl finds the node by name through this epmd
            # A crash dump (MnesiaCore.*) goes to the node's folder, not into the checkout the tests ran from.
            assert node_working_directory(node.node_name) == (tmp_path / "node").resolve()
            daemons = epmd_processes(port)
            assert len(daemons) == 1, daemons
            assert not marked(daemons[0]), "epmd carries the node's mirakuru marker: stopping the node kills it"
        assert epmd_processes(port) == daemons, "epmd died with the node it was started for"
    finally:
        for pid in epmd_processes(port):
            os.kill(pid, signal.SIGTERM)


def test_a_process_leaving_kills_only_its_own_nodes_not_those_whose_uuid_contains_its_pid(tmp_path):
    """mirakuru's exit hook killed every process whose mirakuru_uuid contained the leaving process's pid, so a
    `python -m labs` run ending could SIGKILL another test process's broker (seen in CI as 60 errors at once)."""
    leaving = subprocess.Popen([sys.executable, "-c", "import os, sys, labs.brokers.local_node; print(os.getpid(), flush=True);"
                                " sys.stdin.readline()"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    pid = leaving.stdout.readline().strip()
    others = subprocess.Popen(["sleep", "60"], env={**os.environ, "mirakuru_uuid": f"9{pid}:not-its"})
    own = subprocess.Popen(["sleep", "60"], env={**os.environ, "mirakuru_uuid": f"{pid}:its-own"})
    try:
        leaving.communicate("\n", timeout=30)
        own.wait(10)  # its own leftover is still cleaned up at exit
        time.sleep(0.5)
        assert others.poll() is None, "a process that merely contains the pid in its uuid was killed"
    finally:
        for process in (others, own):
            process.kill()
            process.wait()


@pytest.mark.slow(seconds=10)
@pytest.mark.skipif("config.getoption('--rabbitmq') != '3.10'",
                    reason="crashes the suite's node run here: the 3.10 suite's (4.3's is a container)")
def test_a_crashed_node_has_let_go_of_its_ports_when_crash_returns_so_it_starts_again(local_node):
    """SIGKILL ends the rabbitmq-server script at once, the Erlang VM beside it a moment later: a start() in that
    moment found the node's own port taken and raised AlreadyRunning (CI: 106 errors on one test worker, whose
    broker the fault test had crashed and could not bring back)."""
    assert isinstance(local_node, LocalNode)
    local_node.crash()
    assert [port for port in local_node.ports if port_in_use(port)] == []
    # The gap is milliseconds and often missed; so, deterministically: a port still held (here by this test, for a
    # second) keeps crash() from returning until it is let go.
    holder = socket.create_server(("127.0.0.1", local_node.ports[0]))
    threading.Timer(1.0, holder.close).start()
    started = time.monotonic()
    local_node.crash()
    assert time.monotonic() - started >= 0.9 and not port_in_use(local_node.ports[0])
    local_node.start()
    local_node.admin.overview()
