"""The Jobs API's peer in the benchmark: the same routes and job records, on python-rq (Redis only), as a Flask user
would write it today (python bench/peers/rq_jobs.py, then `rq worker jobs` from the repository root, both with
REDIS_URL).

    POST /jobs        {"start": 1, "end": 10}  -> 201 and the job: id, status "submitted", start, end
    GET  /jobs/<id>   -> 200 and the job, or 404

The job record is labs/jobs' own: a Redis hash job.<id> with id, status ("submitted", "in progress", "complete"),
start, end, worker and status_at (when the status last changed, Unix seconds). POST records the job and enqueues
run_job(id) on rq's queue "jobs"; the worker's run_job marks it in progress, does the work (JOB_SECONDS, default 0:
the benchmark measures the machinery) and marks it complete. Served by waitress like labs/jobs/api.py (HOST, PORT).
Flask is imported only by the API, so an rq work horse importing run_job pays for redis alone.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid

import redis

QUEUE_NAME = "jobs"
REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
JOB_SECONDS = float(os.environ.get("JOB_SECONDS", "0"))
RUN_JOB = "bench.peers.rq_jobs.run_job"  # by name: the API runs as __main__, the workers import this module

rd = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_connect_timeout=2, socket_timeout=5)


def _job_key(jid: str) -> str:
    return f"job.{jid}"


def _now() -> str:
    return f"{time.time():.6f}"


def _set_status(jid: str, status: str, **fields: str) -> None:
    rd.hset(_job_key(jid), mapping={"status": status, "status_at": _now(), **fields})


def run_job(jid: str) -> None:
    """What an rq worker runs for each job: in progress, the work, complete (each stored before the next step)."""
    record = rd.hgetall(_job_key(jid))
    if not record:
        return
    _set_status(jid, "in progress", worker=f"{socket.gethostname()}:{os.getpid()}")
    time.sleep(JOB_SECONDS)
    _set_status(jid, "complete")


def _parse_job(body: bytes) -> tuple[int, int]:
    """start and end, as labs/jobs/api.py checks them; ValueError saying what is wrong."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError('the body must be a JSON object like {"start": 1, "end": 10}')
    values = []
    for name in ("start", "end"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name!r} must be an integer, not {json.dumps(value)}")
        values.append(value)
    if values[0] > values[1]:
        raise ValueError(f"start ({values[0]}) is after end ({values[1]})")
    return values[0], values[1]


def create_app():
    from flask import Flask, jsonify, request
    from rq import Queue

    app = Flask(__name__)
    queue = Queue(QUEUE_NAME, connection=redis.Redis.from_url(REDIS_URL))  # rq keeps its own bytes connection

    @app.post("/jobs")
    def submit_job():
        try:
            start, end = _parse_job(request.get_data())
        except ValueError as exc:
            return jsonify(error=str(exc)), 400
        jid = str(uuid.uuid4())
        job = {"id": jid, "status": "submitted", "start": start, "end": end}
        try:
            rd.hset(_job_key(jid), mapping={**{k: str(v) for k, v in job.items()}, "status_at": _now()})
            queue.enqueue(RUN_JOB, jid)
        except redis.RedisError as exc:
            return jsonify(error=f"Redis is unreachable: {type(exc).__name__}"), 503
        return jsonify(job), 201

    @app.get("/jobs/<jid>")
    def show_job(jid: str):
        record = rd.hgetall(_job_key(jid))
        if not record:
            return jsonify(error=f"no job {jid!r}"), 404
        job = {"id": record["id"], "status": record["status"], "start": int(record["start"]),
               "end": int(record["end"])}
        if record.get("worker"):
            job["worker"] = record["worker"]
        return jsonify(job)

    return app


def main() -> int:
    import waitress

    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "5000"))
    waitress.serve(create_app(), host=host, port=port, threads=8)  # as labs/jobs/api.py serves
    return 0


if __name__ == "__main__":
    sys.exit(main())
