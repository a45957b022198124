"""The Jobs API lab (labs/jobs) as a student runs it: a real Redis, the API under waitress, workers as processes,
every request over HTTP."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Iterator, Optional

import port_for
import pytest
import requests

from labs.brokers.redis_server import RedisServer, redis_installed, running_redis
from tests.helpers import ROOT, require, wait_until
from tests.proxy import CuttableProxy

JOBS = ROOT / "labs" / "jobs"
HANDOUT = ROOT / "labs" / "handouts" / "10-jobs-api.md"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, its data in the test's folder, nothing saved to disk."""
    require(redis_installed(), "the Jobs API needs Redis: apt-get install redis-server (./kit test does)")
    with running_redis(tmp_path / "redis") as server:
        yield server


class Lab:
    """The API and the workers of one test, started as `python labs/jobs/api.py` and `python labs/jobs/worker.py`."""

    def __init__(self, space, redis_server: RedisServer, amqp_url: Optional[str] = None) -> None:
        self.space, self.redis = space, redis_server
        self.amqp_url = amqp_url or space.url
        self.port = port_for.select_random()
        self.base = f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict:
        return self.space.env(AMQP_URL=self.amqp_url, REDIS_URL=self.redis.url, HOST="127.0.0.1",
                              PORT=str(self.port), **extra)

    def start(self, script: str, label: str, **extra: str) -> tuple[subprocess.Popen, Path]:
        process = self.space.children.start([sys.executable, str(JOBS / script)], label, env=self.env(**extra))
        return process, self.space.children.output(label)

    def start_api(self, **extra: str) -> None:
        self.api, self.api_output = self.start("api.py", "api", **extra)

        def up() -> bool:
            assert self.api.poll() is None, self.api_output.read_text()
            try:
                return requests.get(self.base + "/nothing", timeout=2).status_code == 404
            except requests.ConnectionError:
                return False

        wait_until(up, 20, "the API to answer")

    def start_worker(self, label: str, seconds: float = 0, **extra: str) -> subprocess.Popen:
        worker, _ = self.start("worker.py", label, JOB_SECONDS=str(seconds), **extra)
        return worker

    def post(self, body, raw: bool = False) -> requests.Response:
        if raw:
            return requests.post(self.base + "/jobs", data=body, timeout=10)
        return requests.post(self.base + "/jobs", json=body, timeout=10)

    def job(self, jid: str) -> dict:
        response = requests.get(f"{self.base}/jobs/{jid}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def jobs(self) -> list[dict]:
        response = requests.get(self.base + "/jobs", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_status(self, jid: str, status: str, timeout: float = 20) -> dict:
        return wait_until(lambda: (job := self.job(jid))["status"] == status and job, timeout,
                          f"job {jid} to be {status!r}")


@pytest.fixture
def lab(space, redis_server) -> Lab:
    started = Lab(space, redis_server)
    started.start_api()
    return started


def test_a_job_goes_from_submitted_to_in_progress_to_complete(lab, space):
    response = lab.post({"start": 3, "end": 9})
    assert response.status_code == 201
    job = response.json()
    assert job == {"id": job["id"], "status": "submitted", "start": 3, "end": 9}
    assert lab.job(job["id"])["status"] == "submitted"
    assert space.ready("jobs") == 1  # recorded and queued

    worker = lab.start_worker("w1", seconds=1.5)
    lab.wait_for_status(job["id"], "in progress")
    began = time.monotonic()
    assert lab.job(job["id"])["worker"].endswith(f":{worker.pid}")
    done = lab.wait_for_status(job["id"], "complete")
    assert time.monotonic() - began >= 1.0, "complete before the work was done"
    assert done["start"] == 3 and done["end"] == 9
    assert [j["id"] for j in lab.jobs()] == [job["id"]]
    assert space.ready("jobs") == 0 and space.ready("jobs.dead") == 0


BAD_BODIES = [
    pytest.param(b"{not json", "invalid JSON", id="invalid-json"),
    pytest.param(b"\xff\xfe", "invalid JSON", id="not-utf8"),
    pytest.param(b"", "invalid JSON", id="empty"),
    pytest.param(b"[1, 2]", "JSON object", id="not-an-object"),
    pytest.param(b'{"end": 5}', "missing field 'start'", id="missing-start"),
    pytest.param(b'{"start": 5}', "missing field 'end'", id="missing-end"),
    pytest.param(b'{"start": "1", "end": 5}', "'start' must be an integer", id="string"),
    pytest.param(b'{"start": 1, "end": 2.5}', "'end' must be an integer", id="float"),
    pytest.param(b'{"start": true, "end": 5}', "'start' must be an integer", id="bool"),
    pytest.param(b'{"start": 1, "end": null}', "'end' must be an integer", id="null"),
    pytest.param(b'{"start": 9, "end": 2}', "start (9) is after end (2)", id="start-after-end"),
]


def test_every_bad_body_is_a_400_with_a_json_error_and_records_nothing(lab, space):
    for param in BAD_BODIES:
        body, message = param.values
        response = lab.post(body, raw=True)
        assert response.status_code == 400, (param.id, response.text)
        assert message in response.json()["error"], (param.id, response.text)
    assert lab.jobs() == []
    assert space.ready_or_zero("jobs") == 0
    assert lab.post({"start": 4, "end": 4}).status_code == 201  # start == end is a job


def test_a_body_nested_too_deeply_is_a_400_not_a_server_error(lab, space):
    """[[[[...]]]] 100,000 deep (200 kB, under the size limit) overflows the JSON parser's recursion: still a bad
    body, a 400 with a JSON error, and no traceback in the server's log."""
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"start": 1, "end": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        response = lab.post(body, raw=True)
        assert response.status_code == 400, response.text[:500]
        assert "invalid JSON: nested too deeply" in response.json()["error"]
    assert lab.jobs() == []
    assert space.ready_or_zero("jobs") == 0
    log = lab.api_output.read_text()
    assert "RecursionError" not in log and "Traceback" not in log, log[-2000:]


def test_a_body_over_the_size_limit_is_a_413_with_a_json_error_and_records_nothing(lab, space, redis_server):
    """A 50 MB job (valid JSON, padded) is refused with 413 under the default limit of 1 MiB, and the limit is
    MAX_CONTENT_LENGTH's when set (a bad value: exit 2, one line); a job under it still goes through."""
    padded = json.dumps({"start": 1, "end": 2, "padding": "x" * 50_000_000}).encode()
    response = requests.post(lab.base + "/jobs", data=padded, timeout=120)
    assert response.status_code == 413, response.text[:500]
    assert "larger than the 1048576 bytes" in response.json()["error"]
    assert lab.jobs() == [] and space.ready_or_zero("jobs") == 0

    small = Lab(space, redis_server)
    small.start_api(MAX_CONTENT_LENGTH="100")
    over = small.post({"start": 1, "end": 2, "padding": "x" * 100})
    assert over.status_code == 413 and "larger than the 100 bytes" in over.json()["error"], over.text
    assert small.post({"start": 1, "end": 2}).status_code == 201
    assert len(small.jobs()) == 1

    bad = subprocess.run([sys.executable, str(JOBS / "api.py")], capture_output=True, text=True, timeout=60,
                         env=lab.env(MAX_CONTENT_LENGTH="1MB"), stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == "api: MAX_CONTENT_LENGTH must be a number of bytes, not '1MB'"


def handout_curl_bodies() -> tuple[list[str], list[str]]:
    """The bodies lab 10 posts with curl: those of its shell block (jobs) and those it says to try (bad requests)."""
    text = HANDOUT.read_text()
    jobs = re.findall(r"^curl -s -X POST localhost:\$PORT/jobs -d '([^']*)'", text, re.M)
    bad = re.findall(r"`-d '([^']*)'`", text.split("Bad requests get a 400", 1)[1].split("\n\n", 1)[0])
    return jobs, bad


def test_the_handouts_curl_commands_get_the_answers_it_shows(lab):
    """curl as the handout types it (form content type, no JSON header): a job is 201 and "submitted", each body the
    handout says to try is a 400 with a JSON error."""
    curl = shutil.which("curl")
    require(curl, "lab 10 uses curl: apt-get install curl (./kit test does)")
    jobs, bad = handout_curl_bodies()
    assert jobs and len(bad) >= 4, (jobs, bad)

    def post(body: str) -> tuple[int, dict]:
        result = subprocess.run([curl, "-s", "-w", "\n%{http_code}", "-X", "POST", f"127.0.0.1:{lab.port}/jobs",
                                 "-d", body], capture_output=True, text=True, timeout=30)
        answer, status = result.stdout.rsplit("\n", 1)
        return int(status), json.loads(answer)

    for body in jobs:
        status, job = post(body)
        assert status == 201 and job["status"] == "submitted", (body, job)
        assert {key: job[key] for key in ("start", "end")} == json.loads(body)
    for body in bad:
        status, answer = post(body)
        assert status == 400 and answer["error"], (body, answer)
    assert len(lab.jobs()) == len(jobs)


def test_unknown_jobs_routes_and_methods_are_json_errors(lab):
    missing = requests.get(lab.base + "/jobs/no-such-job", timeout=10)
    assert missing.status_code == 404 and "no job 'no-such-job'" in missing.json()["error"]
    route = requests.get(lab.base + "/elsewhere", timeout=10)
    assert route.status_code == 404 and route.json()["error"].startswith("404 Not Found")
    method = requests.delete(lab.base + "/jobs", timeout=10)
    assert method.status_code == 405 and method.json()["error"].startswith("405")


def test_a_worker_killed_mid_job_leaves_the_job_to_another_worker(lab, space):
    jid = lab.post({"start": 1, "end": 2}).json()["id"]
    slow = lab.start_worker("slow", seconds=60)
    lab.wait_for_status(jid, "in progress")
    assert lab.job(jid)["worker"].endswith(f":{slow.pid}")
    slow.send_signal(signal.SIGKILL)
    slow.wait(10)
    quick = lab.start_worker("quick", seconds=0)
    done = lab.wait_for_status(jid, "complete")
    assert done["worker"].endswith(f":{quick.pid}")
    assert space.ready("jobs") == 0 and space.ready("jobs.dead") == 0


def test_a_job_whose_work_raises_fails_after_three_attempts_and_is_dead_lettered(lab, space):
    good = lab.post({"start": 1, "end": 5}).json()["id"]
    bad = lab.post({"start": 13, "end": 20}).json()["id"]
    lab.start_worker("w1", seconds=0, JOB_FAIL_START="13")
    failed = lab.wait_for_status(bad, "failed")
    assert failed["error"] == "RuntimeError: start 13 is poison (JOB_FAIL_START)"
    assert lab.job(good)["status"] == "complete"
    wait_until(lambda: space.ready("jobs.dead") == 1, 10, "the failed job's id in the dead-letter queue")
    _, _, body = space.channel().basic_get("jobs.dead", auto_ack=True)
    assert body.decode() == f'"{bad}"'
    output = (space.folder / "w1.out").read_text()
    assert "attempt 1 of 3" in output and "attempt 2 of 3" in output and "attempt 3 of 3" in output


def test_redis_down_is_a_503_and_nothing_is_queued(lab, space):
    lab.redis.stop()
    response = lab.post({"start": 1, "end": 2})
    assert response.status_code == 503
    assert "Redis" in response.json()["error"]
    for path in ("/jobs", "/jobs/some-id"):
        down = requests.get(lab.base + path, timeout=10)
        assert down.status_code == 503 and "Redis" in down.json()["error"]
    assert space.ready_or_zero("jobs") == 0


def test_broker_down_is_a_503_and_no_job_stays_submitted_without_being_queued(space, redis_server):
    upstream = urllib.parse.urlsplit(space.url)
    proxy = CuttableProxy(upstream.port)
    try:
        lab = Lab(space, redis_server, space.url.replace(f":{upstream.port}/", f":{proxy.port}/"))
        lab.start_api()
        first = lab.post({"start": 1, "end": 2})
        assert first.status_code == 201
        proxy.close()  # the broker is gone for the API: its connection cut, nothing listening any more
        response = lab.post({"start": 3, "end": 4})
        assert response.status_code == 503, response.text
        assert "queue is unavailable" in response.json()["error"]
        assert [job["id"] for job in lab.jobs()] == [first.json()["id"]]
        assert redis_server.client().keys("job.*") == [f"job.{first.json()['id']}"]
        assert space.ready("jobs") == 1
    finally:
        proxy.close()


def test_a_worker_without_a_broker_exits_3_with_one_line(space, redis_server, tmp_path):
    nobody = port_for.select_random()
    result = subprocess.run([sys.executable, str(JOBS / "worker.py")], capture_output=True, text=True, timeout=60,
                            env=space.env(AMQP_URL=f"amqp://u:p@127.0.0.1:{nobody}/", REDIS_URL=redis_server.url),
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"worker: cannot reach a broker at 127.0.0.1:{nobody}")


def test_each_user_of_a_login_server_gets_an_api_port_of_their_own(space, redis_server):
    """api.py without PORT listens where lab 0's PORT line puts it for the user who runs it, and another user's API
    elsewhere, so a class's APIs on one login server do not collide. The users are made with a user namespace
    (unshare: the process sees uid 1234 or 1235, and the files as they are)."""
    unshare = shutil.which("unshare")
    require(unshare, "runs the API as other users with unshare (util-linux)")
    env = {key: value for key, value in space.env(REDIS_URL=redis_server.url).items() if key != "PORT"}
    started = []
    try:
        for uid in (1234, 1235):
            as_user = [unshare, "--user", f"--map-user={uid}", f"--map-group={uid}"]
            lab0 = subprocess.run([*as_user, "bash", "-c", "echo $((20000 + $(id -u) % 10000))"], capture_output=True,
                                  text=True, timeout=10)
            port = int(lab0.stdout)
            api = subprocess.Popen([*as_user, sys.executable, str(JOBS / "api.py")], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   stdin=subprocess.DEVNULL)
            started.append(api)

            def answers() -> bool:
                assert api.poll() is None, api.stderr.read()
                try:
                    return requests.get(f"http://127.0.0.1:{port}/nothing", timeout=2).status_code == 404
                except requests.ConnectionError:
                    return False

            wait_until(answers, 20, f"uid {uid}'s API on port {port}, as lab 0 sets PORT")
        assert all(api.poll() is None for api in started), "the second user's API could not listen"
    finally:
        for api in started:
            api.terminate()
            api.wait(10)
