"""The Jobs API (python labs/jobs/api.py): submit jobs over HTTP, and look at them while workers run them.

    POST /jobs        {"start": 1, "end": 10}  -> 201 and the job: id, status "submitted", start, end
    GET  /jobs/<id>   -> 200 and the job, or 404
    GET  /jobs        -> 200 and every job

Errors are JSON, {"error": "..."}: 400 for a body that is not a JSON object with integer start <= end, 404 for an
unknown job or route, 405 for a wrong method, 413 for a body larger than MAX_CONTENT_LENGTH bytes (default 1 MiB,
plenty for a job), 503 when Redis or the broker cannot be reached (the job is then not recorded). Served by
waitress, a production WSGI server, on HOST (default 127.0.0.1; 0.0.0.0 in a container) and PORT (default 20000
plus the last four digits of your user id: your own port on a login server that a class shares, see own_port);
AMQP_URL and REDIS_URL say where the broker and Redis are.
"""
from __future__ import annotations

import json
import logging
import os
import sys

from flask import Blueprint, Flask, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import jobs

bp = Blueprint("jobs", __name__)

# A job is a few dozen bytes. Without a limit a class server takes any upload (Flask has none by default), so one
# student's runaway script could fill the server's memory; MAX_CONTENT_LENGTH in the environment changes it.
DEFAULT_MAX_CONTENT_LENGTH = 1024 * 1024


class BadJob(Exception):
    """The request's body is not a job we can run: HTTP 400 with this message."""


def _parse_job(body: bytes) -> tuple[int, int]:
    """start and end from a request body, or BadJob saying what is wrong with it."""
    try:
        data = json.loads(body)
    except ValueError as exc:  # also catches a body that is not UTF-8
        raise BadJob(f"invalid JSON: {exc}") from None
    except RecursionError:  # [[[[...]]]] deeper than Python's recursion limit: a bad body, not a server failure
        raise BadJob("invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise BadJob('the body must be a JSON object like {"start": 1, "end": 10}')
    values = []
    for name in ("start", "end"):
        if name not in data:
            raise BadJob(f"missing field {name!r}")
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, int):  # JSON true is a bool, and bool is an int
            raise BadJob(f"{name!r} must be an integer, not {json.dumps(value)}")
        values.append(value)
    start, end = values
    if start > end:
        raise BadJob(f"start ({start}) is after end ({end})")
    return start, end


@bp.post("/jobs")
def submit_job():
    start, end = _parse_job(request.get_data())
    return jsonify(jobs.add_job(start, end)), 201


@bp.get("/jobs/<jid>")
def show_job(jid: str):
    job = jobs.get_job(jid)
    if job is None:
        return jsonify(error=f"no job {jid!r}"), 404
    return jsonify(job)


@bp.get("/jobs")
def list_jobs():
    return jsonify(jobs.all_jobs())


def create_app(max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH) -> Flask:
    """The application: the routes above and JSON for every error, never an HTML page or a traceback. A request body
    larger than `max_content_length` bytes is refused with 413 before it is parsed."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_content_length
    app.register_blueprint(bp)

    @app.errorhandler(BadJob)
    def bad_job(exc: BadJob):
        return jsonify(error=str(exc)), 400

    @app.errorhandler(jobs.JobsUnavailable)
    def unavailable(exc: jobs.JobsUnavailable):
        return jsonify(error=str(exc)), 503

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge):  # the limit in the answer: the client can tell what to change
        return jsonify(error=f"413 Request Entity Too Large: the body is larger than the {max_content_length} bytes "
                             "this server takes (MAX_CONTENT_LENGTH)"), 413

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=f"{exc.code} {exc.name}: {exc.description}"), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unexpected error")  # the traceback goes to the server's log, not to the client
        return jsonify(error=f"internal error: {type(exc).__name__}"), 500

    return app


def own_port() -> int:
    """A port for this user alone: on a login server every student's API would otherwise want the same one. Lab 0
    sets PORT to the same number, so curl finds it; uids in one class differ in their last four digits."""
    return 20000 + os.getuid() % 10000


def main() -> int:
    import waitress

    logging.basicConfig(level=logging.INFO, format="api %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # a lost broker is the 503's one line, not a traceback
    host = os.environ.get("HOST", "127.0.0.1")
    try:
        port = int(os.environ.get("PORT") or own_port())
    except ValueError:
        print(f"api: PORT must be a number, not {os.environ['PORT']!r}", file=sys.stderr)
        return 2
    try:
        max_content_length = int(os.environ.get("MAX_CONTENT_LENGTH", DEFAULT_MAX_CONTENT_LENGTH))
        if max_content_length < 1:
            raise ValueError
    except ValueError:
        print(f"api: MAX_CONTENT_LENGTH must be a number of bytes, not {os.environ['MAX_CONTENT_LENGTH']!r}",
              file=sys.stderr)
        return 2
    try:
        waitress.serve(create_app(max_content_length), host=host, port=port, threads=8)
    except OSError as exc:
        print(f"api: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
