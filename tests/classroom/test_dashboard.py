"""`python -m labs class dashboard`, as an instructor runs it and projects it: started as a command on a provisioned
class, looked at in a real browser (Debian's chromium through Playwright), which must see the broker's figures change
without reloading, flagged students first, every name as text; beyond loopback only behind its password; a
management API that fails shown on the page while the server goes on."""
from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from labs.drive.wait import wait_until
from tests.browser import chromium
from tests.classroom.test_class_status import Klass, admin_env, class_cli
from tests.helpers import ROOT, require
from tests.proxy import CuttableProxy
from tests.scripts.test_sender_options import ctrl_c_as_in_a_terminal

FIELDS = ("connections", "consumers", "queues", "ready", "unacked", "publish_rate", "deliver_rate", "ack_rate",
          "redelivered", "last_activity", "flags")
# A queue name that would run script if the page wrote it as markup: it is shown in the backlog flag's note.
HOSTILE_QUEUE = '<img src=x onerror="window.pwned=1">'
STATS_WAIT = 30  # seconds for a send to reach the page: the broker's statistics (0.5 s here), then a refresh (1 s)


class Dashboard:
    """`python -m labs class dashboard --port 0` in the background, its address read from the line it says."""

    def __init__(self, roster: Path, env: dict, log: Path, *args: str) -> None:
        self.log = log
        with log.open("w") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "labs", "class", "dashboard", "--roster", str(roster), "--port", "0", *args],
                cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=output, stderr=subprocess.STDOUT,
                preexec_fn=ctrl_c_as_in_a_terminal)
        said = wait_until(lambda: re.search(r"dashboard on http://(\S+):(\d+)/", self.output()), 30,
                          "the dashboard's address", give_up=lambda: self.process.poll() is not None and
                          f"the dashboard exited {self.process.returncode}: {self.output()}")
        self.bound = said.group(1)
        self.url = f"http://127.0.0.1:{said.group(2)}/"  # whatever it is bound to, the test connects on loopback

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, password: str | None = None) -> tuple[int, Message, bytes]:
        """A plain HTTP GET (status, headers (case-insensitive), body), with basic auth when given a password."""
        headers = {"Authorization": "Basic " + base64.b64encode(f"instructor:{password}".encode()).decode()} \
            if password is not None else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers), timeout=30) as got:
                return got.status, got.headers, got.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def stop(self) -> int:
        """Ctrl-C, as the instructor stops it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@pytest.fixture
def dashboards(tmp_path):
    """Start dashboards; each must stop on Ctrl-C with exit code 0 and no traceback."""
    started: list[Dashboard] = []

    def start(roster: Path, env: dict, *args: str) -> Dashboard:
        started.append(Dashboard(roster, env, tmp_path / f"dashboard-{len(started)}.log", *args))
        return started[-1]

    yield start
    for dashboard in started:
        code = dashboard.stop()
        assert code == 0 and "Traceback" not in dashboard.output(), dashboard.output()


@pytest.fixture
def make_class(broker, tmp_path, request):
    """A provisioned roster of the given names (each suffixed for this test), removed afterwards."""
    require(broker.local is not None, "provisions a class through the suite's own broker's management API")
    made: list[Klass] = []
    tag = f"{abs(hash(request.node.nodeid)) % 10**6}"

    def make(*names: str) -> Klass:
        folder = tmp_path / f"class-{len(made)}"
        folder.mkdir()
        made.append(Klass(broker, folder, [f"{name}-{tag}" for name in names]))
        return made[-1]

    yield make
    for klass in made:
        klass.remove()


def cell(view: Page, student: str, field: str):
    return view.locator(f'[data-student="{student}"] [data-field="{field}"]')


def page_order(view: Page) -> list[str]:
    return view.locator("[data-student]").evaluate_all("found => found.map(e => e.dataset.student)")


def publish(broker, vhost: str, queue: str, count: int, queue_type: str = "classic") -> None:
    """Declare a durable queue in a student's vhost and put messages in it, through the management API."""
    quoted = broker.admin.quote
    broker.admin.request("PUT", f"/api/queues/{quoted(vhost)}/{quoted(queue)}",
                         {"durable": True, "arguments": {"x-queue-type": queue_type}})
    for number in range(count):
        broker.admin.request("POST", f"/api/exchanges/{quoted(vhost)}/amq.default/publish",
                             {"properties": {}, "routing_key": queue, "payload": f"m{number}",
                              "payload_encoding": "string"})


def test_a_send_changes_the_students_figure_on_the_page_without_a_reload(make_class, dashboards, space, broker):
    klass = make_class("ann", "ben")
    ann, ben = klass.names
    dashboard = dashboards(klass.roster, admin_env(broker), "--refresh", "1")
    assert dashboard.bound == "127.0.0.1"  # served on loopback unless told otherwise
    asked: list[str] = []
    loads: list[str] = []
    with chromium() as browser:
        view = browser.new_page(viewport={"width": 1600, "height": 900})
        view.on("request", lambda request: asked.append(request.url))
        view.on("load", lambda page: loads.append(page.url))
        view.goto(dashboard.url)
        # Every student is there with every figure, as the broker counts it: nothing sent yet.
        expect(cell(view, ben, "ready")).to_have_text("0", timeout=15_000)
        for name in (ann, ben):
            for field in FIELDS:
                expect(cell(view, name, field)).to_have_count(1)
        assert cell(view, ann, "connections").inner_text() == "0" and cell(view, ann, "flags").inner_text() == "-"

        # When Ben sends three messages with his own credentials and no worker runs,
        space.send("--count", "3", "--quiet", env=klass.env(space, ben))
        # then the page, left alone, shows them ready, flagged as a backlog, and Ben first,
        expect(cell(view, ben, "ready")).to_have_text("3", timeout=STATS_WAIT * 1000)
        expect(cell(view, ben, "flags")).to_have_text("backlog")
        expect(cell(view, ben, "queues")).to_have_text("1")
        assert broker.admin.queue(ben, "hello")["messages_ready"] == 3
        assert page_order(view)[:2] == [ben, ann]
        assert cell(view, ann, "ready").inner_text() == "0"
    # without ever loading the page again, and asking only its own server for anything.
    assert loads == [dashboard.url], loads
    assert asked and all(url.startswith(dashboard.url) for url in asked), asked
    assert sum(url == dashboard.url + "status.json" for url in asked) >= 2


def test_flagged_students_come_first_with_their_notes_as_text(make_class, dashboards, broker, tmp_path):
    klass = make_class("calm", "flood", "quiet")
    calm, flood, quiet = klass.names
    publish(broker, flood, HOSTILE_QUEUE, 2)  # ready, and nobody consumes: a backlog
    dashboard = dashboards(klass.roster, admin_env(broker), "--refresh", "1")
    with chromium() as browser:
        view = browser.new_page(viewport={"width": 1600, "height": 900})
        view.goto(dashboard.url)
        expect(cell(view, flood, "ready")).to_have_text("2", timeout=STATS_WAIT * 1000)
        # The flagged student first, then the others in roster order, the flagged row marked and its note shown,
        assert page_order(view) == [flood, calm, quiet]
        expect(view.locator(f'[data-student="{flood}"]')).to_have_class(re.compile(r"\bflagged\b"))
        expect(view.locator(f'[data-student="{calm}"]')).not_to_have_class(re.compile(r"\bflagged\b"))
        note = view.locator(f'[data-student="{flood}"] [data-field="notes"]')
        expect(note).to_be_visible()
        # the queue's name written as the text it is: no element made of it, no script run.
        expect(note).to_contain_text(f"2 ready in {HOSTILE_QUEUE!r} and no consumer")
        assert view.locator("img").count() == 0
        assert view.evaluate("() => window.pwned") is None
        view.screenshot(path=str(tmp_path / "dashboard.png"))  # to look at when it fails


def test_beyond_loopback_the_page_asks_for_the_password_and_without_one_the_dashboard_refuses_to_start(
        make_class, dashboards, broker):
    klass = make_class("ann")
    # Without a password it does not start beyond loopback: one line, usage's exit code.
    refused = class_cli(broker, "dashboard", "--roster", str(klass.roster), "--bind", "0.0.0.0", "--port", "0",
                        env=admin_env(broker, LABKIT_DASHBOARD_PASSWORD=""))
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "LABKIT_DASHBOARD_PASSWORD" in lines[0], refused.stderr
    assert "--bind 0.0.0.0" in lines[0] and "Traceback" not in refused.stderr

    # With one, every path asks for it; a wrong one is refused as no login is.
    password = "projector-Secret-7"
    dashboard = dashboards(klass.roster, admin_env(broker, LABKIT_DASHBOARD_PASSWORD=password), "--bind", "0.0.0.0")
    assert dashboard.bound == "0.0.0.0"
    for path in ("", "status.json"):
        status, headers, body = dashboard.get(path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic "), (path, status)
        assert klass.names[0].encode() not in body
        assert dashboard.get(path, "wrong")[0] == 401
    status, _, body = dashboard.get("status.json", password)
    assert status == 200 and [s["name"] for s in json.loads(body)["students"]] == klass.names
    # and a browser given the password sees the class.
    with chromium() as browser:
        context = browser.new_context(http_credentials={"username": "instructor", "password": password})
        view = context.new_page()
        view.goto(dashboard.url)
        expect(cell(view, klass.names[0], "ready")).to_have_text("0", timeout=15_000)


def test_status_json_is_the_status_commands_document(make_class, dashboards, broker):
    klass = make_class("ann", "ben")
    dashboard = dashboards(klass.roster, admin_env(broker))
    status, headers, body = dashboard.get("status.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    served = json.loads(body)
    printed = json.loads(class_cli(broker, "status", "--roster", str(klass.roster), "--json").stdout)
    assert set(served) == set(printed) == {"students", "alarms"}
    assert [set(s) for s in served["students"]] == [set(s) for s in printed["students"]]
    assert [s["name"] for s in served["students"]] == klass.names
    page_status, page_headers, page = dashboard.get("")
    assert page_status == 200 and page_headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in page_headers["Content-Security-Policy"]
    assert not re.search(rb"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page loads something from elsewhere"


def test_a_management_api_that_stops_answering_is_a_line_on_the_page_and_the_server_goes_on(make_class, dashboards,
                                                                                            broker):
    klass = make_class("ann")
    (ann,) = klass.names
    management = urllib.parse.urlsplit(broker.admin.base_url)
    proxy = CuttableProxy(management.port, management.hostname)
    try:
        env = {**admin_env(broker), "RABBITMQ_MANAGEMENT_URL": f"http://127.0.0.1:{proxy.port}"}
        dashboard = dashboards(klass.roster, env, "--refresh", "1")
        with chromium() as browser:
            view = browser.new_page(viewport={"width": 1600, "height": 900})
            view.goto(dashboard.url)
            expect(cell(view, ann, "ready")).to_have_text("0", timeout=15_000)
            error = view.locator("#error")
            expect(error).to_be_hidden()

            # When the management API stops answering (every connection to it ended at once),
            proxy.end_before_handshake(10**9)
            # the page says so in a time-stamped line, keeping the last figures,
            expect(error).to_be_visible(timeout=15_000)
            expect(error).to_have_text(re.compile(r"^\d\d:\d\d:\d\d no RabbitMQ management API at http://127\.0\.0\.1"))
            expect(cell(view, ann, "ready")).to_have_text("0")
            # and the server goes on serving: the page, and the error as JSON.
            assert dashboard.get("")[0] == 200
            status, _, body = dashboard.get("status.json")
            assert status == 503 and "no RabbitMQ management API" in json.loads(body)["error"]
            assert dashboard.process.poll() is None

            # When it answers again, the page, still polling, shows the class again.
            proxy.end_before_handshake(0)
            publish(broker, ann, "hello", 1)
            expect(cell(view, ann, "ready")).to_have_text("1", timeout=STATS_WAIT * 1000)
            expect(error).to_be_hidden()
    finally:
        proxy.close()


def test_the_nodes_alarms_are_a_banner_on_top(make_class, dashboards, restartable):
    klass = make_class("ann")
    dashboard = dashboards(klass.roster, admin_env(restartable), "--refresh", "1")
    with chromium() as browser:
        view = browser.new_page(viewport={"width": 1600, "height": 900})
        view.goto(dashboard.url)
        expect(cell(view, klass.names[0], "ready")).to_have_text("0", timeout=15_000)
        assert view.locator("[data-alarm]").count() == 0
        try:
            restartable.ctl("set_vm_memory_high_watermark", "0")
            banner = view.locator('[data-alarm="memory"]')
            expect(banner).to_be_visible(timeout=STATS_WAIT * 1000)
            expect(banner).to_contain_text("memory alarm: every publisher on the broker is blocked")
            # above the table
            assert banner.bounding_box()["y"] < view.locator("table").bounding_box()["y"]
        finally:
            restartable.ctl("set_vm_memory_high_watermark", "0.4")
        expect(view.locator("[data-alarm]")).to_have_count(0, timeout=STATS_WAIT * 1000)
