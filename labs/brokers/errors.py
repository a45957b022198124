"""What keeps the kit from getting a broker, and who holds a port it needs: a module of its own, so that every way of
starting a broker can use it without importing the others (the container and the local node are started from
labs.brokers.broker, the cluster checks its ports here before it starts)."""
from __future__ import annotations

import socket
import subprocess
from typing import Optional

import pika


class BrokerUnavailable(RuntimeError):
    """Neither AMQP_URL nor a way to start the asked-for broker (rabbitmq-server installed, a Docker engine)."""


def port_in_use(port: int) -> bool:
    """Something listens at 127.0.0.1:port (or at every address), so a node could not listen there."""
    with socket.socket() as probe:
        # As the nodes do: a port whose last connections linger in TIME_WAIT (a node just killed) is free again.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def amqp_server_at(port: int) -> Optional[str]:
    """What the AMQP server at 127.0.0.1:port says it is, e.g. "RabbitMQ 4.3.6 (cluster rabbit@c1)": from the
    connection.start it sends before any login, so no credentials are needed. None when nothing there speaks AMQP."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.settimeout(3)
            sock.sendall(pika.frame.ProtocolHeader().marshal())
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                data += chunk
                _, frame = pika.frame.decode_frame(data)
                if frame is not None:
                    break
        said = frame.method.server_properties
    except (OSError, AttributeError, pika.exceptions.AMQPError):
        return None

    def text(value) -> str:
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    name = " ".join(text(said[key]) for key in ("product", "version") if key in said) or "an AMQP server"
    return name + (f" (cluster {text(said['cluster_name'])})" if "cluster_name" in said else "")


def container_publishing(port: int) -> Optional[str]:
    """The Docker container publishing this port, when Docker is here and one does."""
    try:
        found = subprocess.run(["docker", "ps", "--filter", f"publish={port}", "--format", "{{.Names}}"],
                               capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = found.stdout.split()
    return names[0] if found.returncode == 0 and names else None


def port_ranges(ports: list[int]) -> str:
    """5701, 5702, 5703, 15701 -> "5701-5703, 15701": the ports in one short line."""
    ranges: list[list[int]] = []
    for port in sorted(set(ports)):
        if ranges and port == ranges[-1][1] + 1:
            ranges[-1][1] = port
        else:
            ranges.append([port, port])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
