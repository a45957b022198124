"""`class dashboard`: the class status as a web page the instructor projects, refreshing itself.

The page (dashboard.html, one self-contained file: inline CSS and script, nothing fetched from elsewhere) asks
/status.json every few seconds and redraws its table in place; /status.json is exactly `class status --json`'s
document, read with the same few whole-broker calls (labs/classroom/status.py). The server is Flask under waitress,
the kit's WSGI server: Flask's own development server is not meant to face a classroom network.

The page shows who is in the class and what each student is doing, so beyond loopback it is served only behind a
login (HTTP basic auth, the password from LABKIT_DASHBOARD_PASSWORD); `serve()`'s caller refuses to start otherwise.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import waitress
from flask import Flask, Response, jsonify, request

from labs.classroom.status import ALARM_TEXT, Thresholds, as_json, read_class, student_rows

PAGE = Path(__file__).with_name("dashboard.html")
PASSWORD_VARIABLE = "LABKIT_DASHBOARD_PASSWORD"
DEFAULT_PORT = 8000
DEFAULT_REFRESH = 3.0
REALM = "labkit class dashboard"
# The page may run its own inline script and style and fetch its own JSON, nothing else: no asset from elsewhere,
# and a student's queue name that slipped into the markup could not load or send anything.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def is_loopback(host: str) -> bool:
    """Whether a bind address keeps the page on this machine. A host name other than localhost counts as beyond
    loopback: it may resolve to any interface, and the login is the safe side of that doubt."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def login_refusal(bind: str, password: Optional[str]) -> Optional[str]:
    """The one line that refuses to serve beyond loopback without a login, or None when serving is fine."""
    if is_loopback(bind) or password:
        return None
    return (f"--bind {bind} serves the class's names and activity beyond this machine: set {PASSWORD_VARIABLE} "
            "(the page then asks for it, any user name) or leave out --bind to serve on 127.0.0.1 only")


class ClassReader:
    """The class's document, read at most once a second however many pages poll it: a projector and the
    instructor's laptop share a reading instead of doubling the calls on the class's broker."""

    def __init__(self, read: Callable[[], dict], min_interval: float = 1.0) -> None:
        self._read, self._min_interval = read, min_interval
        self._lock = threading.Lock()
        self._last: Optional[tuple[float, dict]] = None

    def document(self) -> dict:
        with self._lock:
            if self._last is None or time.monotonic() - self._last[0] >= self._min_interval:
                self._last = None  # a failed read must not leave an old reading to be served as fresh
                self._last = (time.monotonic(), self._read())
            return self._last[1]


def class_document(api, names: list[str], thresholds: Thresholds) -> dict:
    """`class status --json`'s document, from one reading of the whole class."""
    reading = read_class(api, thresholds.window)
    return as_json(student_rows(names, reading, thresholds), reading)


def page_html(refresh: float) -> str:
    """The page with its settings: the refresh interval and the alarms' sentences (status.py's, said once).
    JSON inside a script element: '<' is escaped so that no text can close the element."""
    settings = json.dumps({"refresh_ms": int(refresh * 1000), "alarm_text": ALARM_TEXT}).replace("<", "\\u003c")
    return PAGE.read_text(encoding="utf-8").replace("__SETTINGS__", settings)


def create_app(read: Callable[[], dict], refresh: float = DEFAULT_REFRESH, password: Optional[str] = None) -> Flask:
    """The dashboard: / (the page) and /status.json (the class's document, or 503 and {"error": LINE, "at": TIME}
    when the management API fails: the page says so and keeps polling). With a password, both ask for it."""
    app = Flask(__name__)
    reader = ClassReader(read)
    html = page_html(refresh)

    @app.before_request
    def login() -> Optional[Response]:
        if password is None:
            return None
        given = request.authorization
        if given is not None and given.password is not None and \
                hmac.compare_digest(given.password.encode(), password.encode()):
            return None
        return Response("login required\n", 401, {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
                        mimetype="text/plain")

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/")
    def page() -> Response:
        return Response(html, mimetype="text/html")

    @app.get("/status.json")
    def status() -> Response:
        try:
            return jsonify(reader.document())
        except Exception as exc:  # whatever the API did, the page says it and the server goes on
            # A ManagementError is already one line saying what to do; anything else is named by its type.
            line = str(exc) if isinstance(exc, OSError) and str(exc) else f"{type(exc).__name__}: {exc}"
            app.logger.warning("reading the class failed: %s", line)
            return jsonify(error=line, at=datetime.now(timezone.utc).isoformat(timespec="seconds")), 503

    return app


def serve(app: Flask, bind: str, port: int, announce: Callable[[str], None]) -> None:
    """Listen (an OSError now if the port is taken), say where, and serve until interrupted."""
    server = waitress.create_server(app, host=bind, port=port, threads=8, ident="labkit")
    # One socket, or several when a name resolves to more than one address (localhost: 127.0.0.1 and ::1).
    listening = [(server.effective_host, server.effective_port)] if hasattr(server, "effective_port") else \
        server.effective_listen
    for host, bound in listening:
        announce(f"dashboard on http://{f'[{host}]' if ':' in host else host}:{bound}/ (Ctrl-C stops it)")
    try:
        server.run()
    finally:
        server.close()
