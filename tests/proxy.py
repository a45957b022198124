"""A small TCP proxy on loopback that can cut every connection through it, like a network failure."""
from __future__ import annotations

import selectors
import socket
import struct
import threading


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
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            for key, _ in self._selector.select(timeout=0.1):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._forward(key.fileobj)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()  # the broker is down: the client sees the connection fail, as it would directly
            return
        with self._lock:
            self._pairs[client], self._pairs[server] = server, client
            for end in (client, server):
                self._selector.register(end, selectors.EVENT_READ)

    def _forward(self, source: socket.socket) -> None:
        with self._lock:
            target = self._pairs.get(source)
        if target is None:
            return
        try:
            data = source.recv(65536)
            if data:
                target.sendall(data)
                return
        except OSError:
            pass
        self._drop(source)

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
