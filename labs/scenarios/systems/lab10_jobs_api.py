"""Lab 10, A task queue behind a web API: the Jobs API with its workers, redis for the job records.

Redis as a class has it: the student logs in with an account of their own that `class provision --redis` made, which
may touch only the keys under their name; a classmate's account is there beside it."""
from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING

from labs.brokers.redis_server import redis_installed, running_redis
from labs.classroom.provision import Student, new_password
from labs.classroom.redis_accounts import provision_redis
from labs.drive.jobs_service import JobsService
from labs.scenarios.helpers import wait_for_count
from labs.scenarios.runner import Context

if TYPE_CHECKING:
    import redis  # imported where used: 50 ms that every `python -m labs` would pay (the registry imports each lab)

HANDOUT_BAD_JOBS = [b"oops", b'{"start": 1}', b'{"start": "1", "end": 2}', b'{"start": 9, "end": 2}']


def jobs_api(lab: Context) -> None:
    """The Jobs API with real workers and redis: a job's statuses, bad bodies, a killed worker, a failing job."""
    if not redis_installed():
        lab.skip("the Jobs API's claims", "needs redis-server for the job records: apt-get install redis-server "
                                         "(./kit installs it)")
        return
    username, password = lab.credentials()
    classmate = Student("classmate", new_password())
    with running_redis() as redis_server:
        provision_redis(redis_server.url, [Student(username, password), classmate], frozenset())
        with JobsService(lab.url, redis_server.url_for(username, password)) as service:
            job_service(lab, service)
            records_are_own(lab, redis_server.client(), redis_server.url_for(classmate.username, classmate.password))


def job_service(lab: Context, service: JobsService) -> None:
    """The handout's steps on the running API, its workers started and stopped as the handout says."""
    service.start_api()
    status, answer = service.exchange("POST", "/jobs", b'{"start": 1, "end": 10}')  # the handout's first curl
    lab.saw(answer)
    job = json.loads(answer or "{}")
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


def records_are_own(lab: Context, admin: redis.Redis, classmate_url: str) -> None:
    """Every record the lab made is under the student's name, and a classmate's account cannot read one."""
    import redis
    username = lab.credentials()[0]
    keys = sorted(admin.scan_iter(match="*job.*"))
    classmate = redis.Redis.from_url(classmate_url, decode_responses=True)
    refused = "nothing to read"
    try:
        if keys:
            classmate.hgetall(keys[0])
            refused = "read it"
    except redis.exceptions.NoPermissionError:
        refused = "NOPERM"
    lab.claim(f"the job records are the student's own: under '{username}:' in the class's Redis, and a "
              "classmate's account may not read them", bool(keys) and refused == "NOPERM"
              and all(key.startswith(f"{username}:job.") for key in keys),
              f"{len(keys)} records, e.g. {keys[:1]}; the classmate's read: {refused}")
