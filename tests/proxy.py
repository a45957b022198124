"""A small TCP proxy on loopback that can cut every connection through it, like a network failure, or freeze them.

A frozen direction stops being read while its sockets stay open: the peer sees a silent network path (a
stalled router, a broker too busy to answer), not a closed connection. Bytes sent meanwhile wait in the
kernel's buffers and flow again on `release()`.
"""
from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from typing import Optional


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to an upstream port; `cut()` resets every open connection at once."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._running = True
        self.cuts = 0
        self._held_to_broker = False  # stop reading the clients: nothing reaches the broker
        self._held_to_client = False  # stop reading the broker: no reply, confirm or delivery reaches a client
        self._trigger: Optional[tuple[bytes, int]] = None  # (pattern, how many more) before holding replies
        self._logins_to_reset = 0
        self._handshakes_to_end = 0
        self.failure: Optional[BaseException] = None
        self.broker_side: list[str] = []  # when and how connections to the broker failed or ended, for diagnosis
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while self._running:
                for key, _ in self._selector.select(timeout=0.1):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._forward(key.fileobj)
        except BaseException as exc:  # kept for the test to report: a dead proxy looks like a worker that never connects
            self.failure = exc
            raise

    @property
    def serving(self) -> bool:
        return self._thread.is_alive() or not self._running

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        with self._lock:
            ending, self._handshakes_to_end = self._handshakes_to_end > 0, max(self._handshakes_to_end - 1, 0)
        if ending:  # as a broker still starting, behind Docker's proxy: the connection is taken, then ended
            self._note("ended a connection before the AMQP handshake")
            client.close()
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError as exc:
            self._note(f"connecting to the broker failed: {exc!r}")
            client.close()  # the broker is down: the client sees the connection fail, as it would directly
            return
        with self._lock:
            self._pairs[client], self._pairs[server] = server, client
            for end in (client, server):
                if not self._is_held(end):
                    self._selector.register(end, selectors.EVENT_READ)

    def _forward(self, source: socket.socket) -> None:
        try:
            with self._lock:  # read under the lock: once hold() returns, nothing more is read from a held side
                target = self._pairs.get(source)
                if target is None or self._is_held(source):  # held since select() returned it
                    return
                data = source.recv(65536)
                if self._trigger is not None and data and self._is_client(source):
                    self._count_trigger(data)
                resetting = self._logins_to_reset > 0 and CONNECTION_START_OK in data and self._is_client(source)
                if resetting:
                    self._logins_to_reset -= 1
            if resetting:
                self._drop(source, reset=True)
                return
            if data:
                target.sendall(data)
                return
        except OSError as exc:
            ended = repr(exc)
        else:
            ended = "end of stream"
        with contextlib.suppress(OSError):  # a socket closed meanwhile has no name left to ask
            if not self._is_client(source):
                self._note(f"the broker's side ended: {ended}")
        self._drop(source)

    def _note(self, event: str) -> None:
        self.broker_side.append(f"{time.strftime('%H:%M:%S')} {event}")

    def _drop(self, end: socket.socket, reset: bool = False) -> None:
        with self._lock:
            other = self._pairs.pop(end, None)
            if other is not None:
                self._pairs.pop(other, None)
        for sock in (end, other):
            if sock is None:
                continue
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            if reset:  # SO_LINGER 0: close with RST, as a dropped network path or a middlebox would
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    def _is_client(self, end: socket.socket) -> bool:
        return end.getsockname()[1] == self.port

    def _is_held(self, source: socket.socket) -> bool:
        return self._held_to_broker if self._is_client(source) else self._held_to_client

    def hold(self, to_broker: bool = True, to_client: bool = True) -> None:
        """Stop forwarding in the given directions (both by default: freeze), keeping every socket open."""
        with self._lock:
            self._held_to_broker, self._held_to_client = to_broker, to_client
            for end in self._pairs:
                registered = end in self._selector.get_map()
                if self._is_held(end) and registered:
                    self._selector.unregister(end)
                elif not self._is_held(end) and not registered:
                    self._selector.register(end, selectors.EVENT_READ)

    def hold_replies_after(self, pattern: bytes, times: int = 1) -> None:
        """Hold the broker's replies from the moment the clients have sent `pattern` `times` times (counted from now).

        The data that completes the count still reaches the broker; nothing the broker sends after it reaches a
        client, e.g. the confirm of the Nth publish (BASIC_PUBLISH) and of every one after it.
        """
        with self._lock:
            self._trigger = (pattern, times)

    def _count_trigger(self, data: bytes) -> None:
        """With the lock held: count the pattern in data a client sent; hold the replies once it reaches zero."""
        pattern, left = self._trigger
        left -= data.count(pattern)
        self._trigger = (pattern, left) if left > 0 else None
        if left <= 0:
            self._held_to_client = True
            for end in self._pairs:
                if not self._is_client(end) and end in self._selector.get_map():
                    self._selector.unregister(end)

    def reset_logins(self, times: int) -> None:
        """Reset the next `times` connections the moment their client sends its login (connection.start-ok), as a
        broker that is stopping or starting does: the client sees its connection die mid-handshake."""
        with self._lock:
            self._logins_to_reset = times

    def end_before_handshake(self, times: int) -> None:
        """End the next `times` connections as soon as they are taken, before the broker says a word: what a broker
        still starting looks like behind a proxy, and what pika calls an IncompatibleProtocolError."""
        with self._lock:
            self._handshakes_to_end = times

    def freeze(self) -> None:
        """Nothing passes either way, and nobody is told: the connections hang as on a dead network path."""
        self.hold(to_broker=True, to_client=True)

    def release(self) -> None:
        """Forward both ways again, starting with whatever waited in the buffers."""
        self.hold(to_broker=False, to_client=False)

    def cut(self) -> int:
        """Reset every connection through the proxy; return how many were cut."""
        with self._lock:
            clients = [s for s in self._pairs if s.getsockname()[1] == self.port]
        for client in clients:
            self._drop(client, reset=True)
        self.cuts += 1
        return len(clients)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs) // 2

    def close(self) -> None:
        self._running = False
        self._thread.join(2)
        for end in list(self._pairs):
            self._drop(end)
        self._listener.close()


# An AMQP 0-9-1 method frame's class and method ids (60, 40) as they appear on the wire for basic.publish.
BASIC_PUBLISH = b"\x00\x3c\x00\x28"
# connection.start-ok (10, 11): the client's login.
CONNECTION_START_OK = b"\x00\x0a\x00\x0b"
