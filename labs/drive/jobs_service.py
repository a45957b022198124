"""The Jobs API lab's processes as a student starts them (python labs/jobs/api.py, python labs/jobs/worker.py), with
a private Redis, and the HTTP calls the handout makes with curl."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import port_for

from labs.drive.processes import ProcessGroup
from labs.drive.wait import wait_until
from labs.paths import JOBS
from labs.settings import child_environment



class JobsService:
    """The API under waitress and its workers, on the lab's broker (AMQP_URL) and a Redis (REDIS_URL)."""

    def __init__(self, amqp_url: str, redis_url: str) -> None:
        self.amqp_url, self.redis_url = amqp_url, redis_url
        self.port = port_for.select_random()
        self.base = f"http://127.0.0.1:{self.port}"
        self.folder = Path(tempfile.mkdtemp(prefix="labkit-jobs-"))
        self.children = ProcessGroup(self.folder, child_environment(
            AMQP_URL=amqp_url, REDIS_URL=redis_url, HOST="127.0.0.1", PORT=str(self.port), PYTHONUNBUFFERED="1"))

    def start(self, script: str, label: str, **extra: str) -> subprocess.Popen:
        return self.children.start([sys.executable, str(JOBS / script)], label, env={**self.children.env, **extra})

    def start_api(self, timeout: float = 20) -> None:
        api = self.start("api.py", "api")
        try:  # any answer of the API's own (a 404 for a path it does not have) means it serves requests
            wait_until(lambda: self.request("GET", "/nothing")[0] == 404, timeout, "the Jobs API to answer",
                       interval=0.2, give_up=lambda: None if api.poll() is None else "the API exited")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}: {self.children.output('api').read_text()[-500:]}") from None

    def start_worker(self, label: str, seconds: float = 0, **extra: str) -> subprocess.Popen:
        return self.start("worker.py", label, JOB_SECONDS=str(seconds), **extra)

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> tuple[int, object]:
        """The status and the JSON answer (0 and None when nothing answers), as curl -d sends a body."""
        status, text = self.exchange(method, path, body)
        return status, json.loads(text or "null")

    def exchange(self, method: str, path: str, body: Optional[bytes] = None) -> tuple[int, str]:
        """The status and the answer as sent, the text `curl -s` prints (0 and "" when nothing answers)."""
        request = urllib.request.Request(self.base + path, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return 0, ""

    def post(self, body: bytes) -> tuple[int, dict]:
        return self.request("POST", "/jobs", body)  # type: ignore[return-value]

    def job(self, jid: str) -> dict:
        return self.request("GET", f"/jobs/{jid}")[1]  # type: ignore[return-value]

    def wait_for(self, jid: str, status: str, timeout: float = 30) -> dict:
        return wait_until(lambda: (job := self.job(jid)) and job.get("status") == status and job, timeout,
                    f"job {jid} to be {status!r}")


    def __enter__(self) -> "JobsService":
        return self

    def __exit__(self, *_exc) -> None:
        self.children.kill_all()
        shutil.rmtree(self.folder, ignore_errors=True)  # the processes' output, read while the lab ran

