"""The worker of the Jobs API: takes job ids off the queue and runs them (python labs/jobs/worker.py).

Reads AMQP_URL and REDIS_URL like api.py, and JOB_SECONDS, the fake work's length (default 15, as in the notes).
JOB_FAIL_START=N makes every job whose start is N raise, to watch a failing job being retried, then failed and
dead-lettered.

Exit codes: 0 stopped by Ctrl-C or SIGTERM; 3 the broker or Redis cannot be reached (one line on stderr).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time

import redis

import jobs
from jobs import q

EXIT_UNAVAILABLE = 3  # the broker or Redis cannot be reached, or went away

JOB_SECONDS = float(os.environ.get("JOB_SECONDS", "15"))
JOB_FAIL_START = os.environ.get("JOB_FAIL_START")
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"

log = logging.getLogger("worker")


def _work(job: dict) -> None:
    """The job itself: here only time passing (replace it with the real analysis)."""
    time.sleep(JOB_SECONDS)
    if JOB_FAIL_START is not None and str(job["start"]) == JOB_FAIL_START:
        raise RuntimeError(f"start {job['start']} is poison (JOB_FAIL_START)")


def _give_up(jid: str, error: BaseException) -> None:
    """The job's last attempt raised: record why before the queue dead-letters its id."""
    jobs.update_job_status(jid, jobs.FAILED, error=f"{type(error).__name__}: {error}", worker=WORKER_NAME)


@q.worker(on_give_up=_give_up)
def execute_job(jid: str) -> None:
    job = jobs.get_job(jid)
    if job is None:  # the API removed it: its queueing failed and the client was told so
        log.warning("job %s has no record; skipped", jid)
        return
    jobs.update_job_status(jid, jobs.IN_PROGRESS, worker=WORKER_NAME)
    log.info("job %s in progress (%s..%s)", jid, job["start"], job["end"])
    _work(job)
    jobs.update_job_status(jid, jobs.COMPLETE)
    log.info("job %s complete", jid)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format=f"{WORKER_NAME} %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # rabbitqueue reports each broker failure in one line
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a job in hand goes back to the queue
    log.info("waiting for jobs on %r", q)
    try:
        execute_job()
    except KeyboardInterrupt:
        return 0
    except (jobs.QueueError, jobs.JobsUnavailable) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except redis.RedisError as exc:
        print(f"worker: the job store (Redis) is unreachable: {type(exc).__name__}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
