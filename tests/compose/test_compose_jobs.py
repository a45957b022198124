"""compose.yaml's `jobs` profile for real: the Jobs API answers once `up --wait` returns, jobs POSTed over HTTP are
run by the scaled workers to "complete", and a worker container killed mid-job leaves its job to another worker.

As tests/compose/test_compose_up.py: the kit's local images (images/build makes labkit/redis and labkit/jobs too), a compose
project of its own, free host ports on 127.0.0.1; without Docker or the images it skips, and under CI=true it fails
instead (tests.helpers.require).
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Optional

import port_for
import pytest

from tests.helpers import wait_until
from tests.compose.test_compose_up import (IN_THE_43_SUITE, Project, brought_down_afterwards,
                                   require_docker_compose_and_images, run)

REDIS_IMAGE = "labkit/redis:latest"
JOBS_IMAGE = "labkit/jobs:latest"
JOB_SECONDS = 2  # long enough to see a job in progress and kill its worker, short enough for a quick test
WORKERS = 3
JOBS = 6


class JobsProject(Project):
    """The compose project with the jobs profile on, the API on a free host port, jobs of JOB_SECONDS."""

    def __init__(self) -> None:
        super().__init__()
        self.api_port = port_for.select_random(exclude_ports=[self.amqp_port, self.management_port])
        self.env.update(REDIS_IMAGE=REDIS_IMAGE, JOBS_IMAGE=JOBS_IMAGE, LABKIT_JOBS_API_PORT=str(self.api_port),
                        JOB_SECONDS=str(JOB_SECONDS), COMPOSE_PROFILES="jobs")

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> tuple[int, object]:
        """The status and the JSON answer, as curl sends a body."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=body, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def submit(self, start: int, end: int) -> str:
        status, job = self.request("POST", "/jobs", json.dumps({"start": start, "end": end}).encode())
        assert status == 201 and job["status"] == "submitted", (status, job)
        return job["id"]

    def job(self, jid: str) -> dict:
        status, job = self.request("GET", f"/jobs/{jid}")
        assert status == 200, (status, job)
        return job

    def workers(self) -> dict[str, str]:
        """The running jobs workers' containers by hostname (a container's hostname is its short id), the name
        before the colon of a job's "worker" field."""
        ids = self.compose("ps", "-q", "jobs-worker").stdout.split()
        return {run("docker", "inspect", "-f", "{{.Config.Hostname}}", each, timeout=30).stdout.strip(): each
                for each in ids}


@pytest.fixture
def jobs_project():
    require_docker_compose_and_images()
    with brought_down_afterwards(JobsProject()) as started:
        yield started


@pytest.mark.slow(seconds=20)
@IN_THE_43_SUITE
def test_the_api_answers_after_up_wait_the_workers_complete_jobs_and_a_killed_worker_leaves_its_job_to_another(
        jobs_project):
    project = jobs_project
    project.compose("up", "-d", "--wait", "--wait-timeout", "90", "--pull", "never", "--no-build",
                    "--scale", f"jobs-worker={WORKERS}", "jobs-api", "jobs-worker")

    # `--wait` returned because the API's healthcheck passed (a container without one counts as ready once it runs,
    # maybe before it listens), and the API answers, from Redis, on 127.0.0.1 only.
    api = project.compose("ps", "-q", "jobs-api").stdout.split()
    assert len(api) == 1, api
    health = run("docker", "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", api[0], timeout=30)
    assert health.stdout.strip() == "healthy", health
    assert project.request("GET", "/jobs") == (200, [])
    assert project.request("GET", "/jobs/no-such-job")[0] == 404
    assert project.compose("port", "jobs-api", "5000").stdout.strip() == f"127.0.0.1:{project.api_port}"
    workers = project.workers()
    assert len(workers) == WORKERS, workers

    # Jobs go from submitted to complete, shared among the workers.
    jids = [project.submit(number, number + 10) for number in range(JOBS)]
    wait_until(lambda: all(project.job(jid)["status"] == "complete" for jid in jids), 30,
               f"{JOBS} jobs to be complete")
    ran_on = {jid: project.job(jid)["worker"].split(":")[0] for jid in jids}
    assert set(ran_on.values()) <= set(workers), (ran_on, workers)
    assert len(set(ran_on.values())) >= 2, f"one worker ran every job: {ran_on}"

    # A worker's container killed (SIGKILL) while its job is in progress: the broker gives the job to another worker,
    # which completes it.
    jid = project.submit(100, 110)
    job = wait_until(lambda: (job := project.job(jid))["status"] == "in progress" and job, 20,
                     f"job {jid} to be in progress")
    victim = job["worker"].split(":")[0]
    killed = run("docker", "kill", workers[victim], timeout=30)
    assert killed.returncode == 0, killed.stderr
    assert project.job(jid)["status"] == "in progress", "the job finished before its worker was killed"
    done = wait_until(lambda: (job := project.job(jid))["status"] == "complete" and job, 20,
                      f"job {jid} to be complete after its worker was killed")
    assert done["worker"].split(":")[0] in set(workers) - {victim}, (done, victim)
    victim_log = run("docker", "logs", workers[victim], timeout=30)
    assert f"job {jid} in progress" in victim_log.stderr and f"job {jid} complete" not in victim_log.stderr

    status, listed = project.request("GET", "/jobs")
    assert status == 200 and sorted(job["id"] for job in listed) == sorted([*jids, jid])
    assert all(job["status"] == "complete" for job in listed), listed
