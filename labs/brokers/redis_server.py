"""A private redis-server for the Jobs API lab and its tests: loopback, a free port, nothing saved to disk."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import port_for

from labs.drive.wait import wait_until

if TYPE_CHECKING:
    import redis  # imported where used: 50 ms that every `python -m labs` would pay, for the one lab that uses Redis


class RedisNotInstalled(RuntimeError):
    """There is no redis-server to start."""


@dataclass
class RedisServer:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def url_for(self, username: str, password: str) -> str:
        """The URL a student's account logs in with (class provision --redis makes such accounts)."""
        quoted = ":".join(urllib.parse.quote(part, safe="") for part in (username, password))
        return f"redis://{quoted}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        import redis
        return redis.Redis.from_url(self.url, decode_responses=True)

    def answers(self) -> bool:
        import redis
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def redis_installed() -> bool:
    return shutil.which("redis-server") is not None


@contextlib.contextmanager
def running_redis(folder: Optional[Path] = None, timeout: float = 10) -> Iterator[RedisServer]:
    """A started redis-server for the block, answering PING; stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisNotInstalled("the Jobs API needs Redis: apt-get install redis-server (./kit does), or REDIS_URL")
    with contextlib.ExitStack() as stack:
        data = folder or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="labkit-redis-")))
        data.mkdir(parents=True, exist_ok=True)
        port = port_for.select_random()
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                                    "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = RedisServer(process, port)
        try:
            try:
                wait_until(server.answers, timeout, f"redis-server on port {port} to answer PING",
                           give_up=lambda: None if process.poll() is None else "it exited")
            except TimeoutError as exc:
                raise RuntimeError(str(exc)) from None
            yield server
        finally:
            server.stop()
