"""Run sender.py and qprocessor.py as real processes on a broker and tally what their event logs show."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
SENDER = ROOT / "sender.py"
QPROCESSOR = ROOT / "qprocessor.py"


@dataclass
class Tally:
    """What the event logs say happened to the messages of one run."""

    sent: list[str]
    events: list[dict]

    def bodies(self, kind: str) -> list[str]:
        return [e["body"] for e in self.events if e["event"] == kind]

    @property
    def processed(self) -> set[str]:
        return set(self.bodies("done"))

    @property
    def missing(self) -> list[str]:
        return [body for body in self.sent if body not in self.processed]

    @property
    def redelivered(self) -> int:
        return sum(1 for e in self.events if e["event"] == "received" and e["redelivered"])

    def per_worker(self) -> dict[str, tuple[int, float]]:
        """Messages done and seconds busy per worker."""
        done = Counter(e["worker"] for e in self.events if e["event"] == "done")
        busy = Counter()
        for e in self.events:
            if e["event"] == "done":
                busy[e["worker"]] += e.get("seconds", 0.0)
        return {worker: (done[worker], busy[worker]) for worker in sorted({e["worker"] for e in self.events})}

    @property
    def makespan(self) -> float:
        times = [e["time"] for e in self.events]
        return max(times) - min(times) if times else 0.0

    def report(self) -> str:
        lines = [f"  sent {len(self.sent)}, processed {len(self.processed)}, "
                 f"lost by workers {len(self.bodies('lost'))}, requeued {len(self.bodies('requeued'))}, "
                 f"redelivered {self.redelivered}, never processed {len(self.missing)}, "
                 f"makespan {self.makespan:.2f}s"]
        for worker, (done, busy) in self.per_worker().items():
            lines.append(f"    {worker:<10} processed {done:>3}  busy {busy:6.2f}s")
        return "\n".join(lines)


@dataclass
class Run:
    """Processes of one scenario against one queue; their output is streamed with a prefix when `echo` is on."""

    url: str
    queue: str
    echo: bool = True
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="labkit-run-")))
    processes: list[subprocess.Popen] = field(default_factory=list)

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(AMQP_URL=self.url, RABBITMQ_QUEUE=self.queue, PYTHONUNBUFFERED="1")
        return env

    def send(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, str(SENDER), *args], capture_output=True, text=True,
                                env=self.env(), stdin=subprocess.DEVNULL, timeout=300)
        if self.echo:
            for line in (result.stdout + result.stderr).splitlines():
                print(f"  sender | {line}")
        if result.returncode:
            raise RuntimeError(f"sender.py {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def worker(self, name: str, *args: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, str(QPROCESSOR), "--name", name, "--events", str(self.folder / "events.jsonl"), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env(), stdin=subprocess.DEVNULL)
        self.processes.append(process)
        threading.Thread(target=self._relay, args=(process,), daemon=True).start()
        return process

    def _relay(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            if self.echo:
                print(f"  {line.rstrip()}", flush=True)

    def supervise(self, name: str, *args: str, restarts: int = 20) -> int:
        """Run a worker and start it again each time it crashes, as a shell loop around it would; return crashes."""
        crashes = 0
        while self.worker(name, *args).wait() < 0 and crashes < restarts:
            crashes += 1
            if self.echo:
                print(f"  (supervisor: {name} crashed; starting it again)", flush=True)
        return crashes

    def tally(self, sent: Sequence[str]) -> Tally:
        path = self.folder / "events.jsonl"
        events = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return Tally(list(sent), events)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def numbered(count: int, length: int) -> list[str]:
    """The bodies sender.py --count generates."""
    return [str(n).ljust(length, ".") for n in range(1, count + 1)]


def wait_all(processes: Sequence[subprocess.Popen], timeout: Optional[float] = None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    for process in processes:
        process.wait(None if deadline is None else max(deadline - time.monotonic(), 0.1))
