"""Job records in Redis and the queue that carries job ids to the workers: what api.py and worker.py share.

Public names (no leading underscore) are what the other two modules call; the helpers with an underscore are this
module's own business and may change without them noticing. Both read AMQP_URL and REDIS_URL.

A job's life: "submitted" (recorded, then queued) -> "in progress" (a worker took it) -> "complete", or "failed"
with the error once its last attempt raised. Every status change goes through _set_status, stored before the next
step begins, with the time it happened (status_at, Unix seconds: how long a job waited and ran, from its record).

On a class's shared Redis each student logs in as themselves (REDIS_URL=redis://alice:PASSWORD@HOST:6379/0), and
their account may touch only keys that begin with their name and a colon (`./kit class provision --redis` makes it
so): the records are then `alice:job.<id>`, out of every classmate's reach. Without a user in the URL, `job.<id>`.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

import redis

try:
    from rabbitqueue import QueueError, RabbitQueue
except ImportError:  # in the kit the module sits at the repository root; a student uploads it next to this file
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from rabbitqueue import QueueError, RabbitQueue

QUEUE_NAME = os.environ.get("JOBS_QUEUE", "jobs")
REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
ATTEMPTS = 3  # deliveries of one job before it is failed and dead-lettered

SUBMITTED, IN_PROGRESS, COMPLETE, FAILED = "submitted", "in progress", "complete", "failed"

q = RabbitQueue(QUEUE_NAME, os.environ.get("AMQP_URL"), attempts=ATTEMPTS)
rd = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_connect_timeout=2, socket_timeout=5)
_REDIS_USER = rd.connection_pool.connection_kwargs.get("username")  # the user named in REDIS_URL, if any
_KEY_PREFIX = f"{_REDIS_USER}:" if _REDIS_USER else ""


class JobsUnavailable(Exception):
    """Redis or the broker cannot be reached: the request cannot be served now (HTTP 503)."""


def _generate_jid() -> str:
    return str(uuid.uuid4())


def _job_key(jid: str) -> str:
    return f"{_KEY_PREFIX}job.{jid}"


def _from_record(record: dict) -> dict:
    """A job as the API shows it: start and end back to integers, empty fields left out."""
    job = {"id": record["id"], "status": record["status"], "start": int(record["start"]), "end": int(record["end"])}
    for extra in ("error", "worker"):
        if record.get(extra):
            job[extra] = record[extra]
    return job


def _now() -> str:
    return f"{time.time():.6f}"


def _save_job(jid: str, job: dict) -> None:
    rd.hset(_job_key(jid), mapping={**{k: str(v) for k, v in job.items()}, "status_at": _now()})


def _queue_job(jid: str) -> None:
    q.put(jid)


def _set_status(jid: str, status: str, **fields: str) -> None:
    """The one place a status changes, stored with when it did."""
    rd.hset(_job_key(jid), mapping={"status": status, "status_at": _now(), **fields})


def add_job(start: int, end: int) -> dict:
    """Record a new job as submitted and put its id on the queue; the job as recorded.

    When the queue cannot take it the record is removed again, so no job stays "submitted" without being queued.
    """
    jid = _generate_jid()
    job = {"id": jid, "status": SUBMITTED, "start": start, "end": end}
    try:
        _save_job(jid, job)
    except redis.RedisError as exc:
        raise JobsUnavailable(f"the job store (Redis) is unreachable: {type(exc).__name__}") from None
    try:
        _queue_job(jid)
    except QueueError as exc:
        try:
            rd.delete(_job_key(jid))
        except redis.RedisError:
            pass  # Redis went too; the worker ignores ids whose record is gone, and this one was never queued
        raise JobsUnavailable(f"the job queue is unavailable: {exc}") from None
    return job


def get_job(jid: str) -> Optional[dict]:
    """The job, or None when there is no such job."""
    try:
        record = rd.hgetall(_job_key(jid))
    except redis.RedisError as exc:
        raise JobsUnavailable(f"the job store (Redis) is unreachable: {type(exc).__name__}") from None
    return _from_record(record) if record else None


def all_jobs() -> list[dict]:
    """Every job, in no particular order."""
    try:
        records = [rd.hgetall(key) for key in rd.scan_iter(match=_job_key("*"))]
    except redis.RedisError as exc:
        raise JobsUnavailable(f"the job store (Redis) is unreachable: {type(exc).__name__}") from None
    return [_from_record(record) for record in records if record]


def update_job_status(jid: str, status: str, **fields: str) -> None:
    """Set the status of an existing job (with extra fields, e.g. error=...); KeyError when there is no such job."""
    if not rd.exists(_job_key(jid)):
        raise KeyError(jid)
    _set_status(jid, status, **fields)
