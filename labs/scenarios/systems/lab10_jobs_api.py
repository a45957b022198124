"""Lab 10, A task queue behind a web API: the Jobs API with its workers, redis for the job records."""
from __future__ import annotations

import signal

from labs.brokers.redis_server import redis_installed, running_redis
from labs.drive.jobs_service import JobsService
from labs.scenarios.helpers import wait_for_count
from labs.scenarios.runner import Context

HANDOUT_BAD_JOBS = [b"oops", b'{"start": 1}', b'{"start": "1", "end": 2}', b'{"start": 9, "end": 2}']


def jobs_api(lab: Context) -> None:
    """The Jobs API with real workers and redis: a job's statuses, bad bodies, a killed worker, a failing job."""
    if not redis_installed():
        lab.skip("the Jobs API's claims", "needs redis-server for the job records: apt-get install redis-server "
                                         "(./kit installs it)")
        return
    with running_redis() as redis_server, JobsService(lab.url, redis_server.url) as service:
        service.start_api()
        status, job = service.post(b'{"start": 1, "end": 10}')
        submitted = status == 201 and job.get("status") == "submitted"
        first = service.start_worker("w1", seconds=0.5)
        done = service.wait_for(job["id"], "complete") if submitted else {}
        lab.claim("POST /jobs answers 201 with the job \"submitted\"; a worker takes it to \"complete\"",
                  submitted and done.get("status") == "complete", f"{status} {job}")

        answers = [service.post(body) for body in HANDOUT_BAD_JOBS]
        listed = service.request("GET", "/jobs")[1]
        lab.claim("each bad body the handout suggests is a 400 with a JSON error, and nothing is recorded",
                  all(code == 400 and answer.get("error") for code, answer in answers) and len(listed) == 1,
                  "; ".join(f"{code} {answer}" for code, answer in answers))

        service.children.kill(first)  # idle: the next job goes to the slow worker alone
        slow = service.start_worker("slow", seconds=60)
        jid = service.post(b'{"start": 2, "end": 3}')[1]["id"]
        service.wait_for(jid, "in progress")
        slow.send_signal(signal.SIGKILL)
        rescuer = service.start_worker("rescuer", seconds=0)
        finished = service.wait_for(jid, "complete")
        lab.claim("a worker killed mid-job (SIGKILL) leaves the job to another worker, which completes it",
                  finished["worker"].endswith(f":{rescuer.pid}"), f"completed by {finished['worker']}")

        service.children.kill(rescuer)
        service.start_worker("fragile", seconds=0, JOB_FAIL_START="13")
        bad = service.post(b'{"start": 13, "end": 20}')[1]["id"]
        failed = service.wait_for(bad, "failed")
        dead = wait_for_count(lab, "jobs.dead", 1)
        lab.claim("a job whose work raises ends \"failed\" with its error after 3 attempts, its id dead-lettered "
                  "to jobs.dead", failed.get("error", "").startswith("RuntimeError") and dead == 1,
                  f"error {failed.get('error')!r}; jobs.dead holds {dead}")
