"""The report page (`python -m labs run|demo --report FILE.html`) draws what the event logs say: a bar per delivery in
its worker's row, in the order the worker took them, each ending and redelivery marked; and a real browser shows it
as such, with nothing fetched and no script."""
from __future__ import annotations

import dataclasses
import html.parser
import json
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

import pytest

from labs.__main__ import run_labs, write_report
from labs.drive.processes import Run
from labs.scenarios.demo import demo
from labs.scenarios.registry import LABS
from labs.scenarios.report_html import Section, depth, page, sections
from labs.scenarios.report_html import write_report as write_page
from labs.scenarios.runner import Claim
from tests.browser import chromium
from tests.helpers import ROOT
from tests.labs.runs import given_broker_env, labs_command

ENDINGS = ("done", "lost", "requeued", "abandoned", "dead-lettered")


class Drawing(html.parser.HTMLParser):
    """The bars and marks of each SVG of a page, by the SVG's label ("timeline of queue NAME")."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.bars: dict[str, list[dict]] = defaultdict(list)
        self.marks: dict[str, list[str]] = defaultdict(list)
        self.tags: set[str] = set()
        self.svg = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        found = dict(attrs)
        self.tags.add(tag)
        if tag == "svg":
            self.svg = found.get("aria-label", "")
        elif tag == "rect" and "data-worker" in found:
            self.bars[self.svg].append(found)
        if "data-mark" in found:
            self.marks[self.svg].append(found["data-mark"])

    handle_startendtag = handle_starttag


def expected_bars(events: list[dict]) -> dict[str, list[tuple[str, str, bool]]]:
    """What each worker's row must show, from its own events in log order: a bar per `received` (or a `lost` no
    `received` came before: auto-ack messages dropped on exit), ended by the worker's next ending event for that
    body; a worker that dies with it (mode crash) crashed it."""
    rows: dict[str, list[list]] = defaultdict(list)
    for e in events:
        row, kind = rows[e["worker"]], e["event"]
        crashed = e.get("mode") == "crash" and kind in ("lost", "failed")
        if kind == "received":
            row.append([e["body"], "unfinished", e["redelivered"]])
        elif kind in ENDINGS or crashed:
            outcome = "crashed" if crashed else kind
            held = next((bar for bar in row if bar[0] == e["body"] and bar[1] == "unfinished"), None)
            if held:
                held[1] = outcome
            else:
                row.append([e["body"], outcome, e["redelivered"]])
    return {worker: [tuple(bar) for bar in row] for worker, row in rows.items() if row}


def drawn_bars(bars: list[dict]) -> dict[str, list[tuple[str, str, bool]]]:
    """Each worker's bars as drawn, left to right; each worker's bars all in one row, a row of its own."""
    rows: dict[str, list[dict]] = defaultdict(list)
    for bar in bars:
        rows[bar["data-worker"]].append(bar)
    heights = {worker: {float(bar["y"]) for bar in row} for worker, row in rows.items()}
    assert all(len(ys) == 1 for ys in heights.values()), f"a worker's bars in several rows: {heights}"
    assert len({ys.pop() for ys in heights.values()}) == len(rows), "two workers' bars in one row"
    return {worker: [(bar["data-body"], bar["data-outcome"], bar["data-redelivered"] == "true")
                     for bar in sorted(row, key=lambda bar: float(bar["x"]))] for worker, row in rows.items()}


def assert_drawn_as_logged(text: str, runs: list[Run]) -> None:
    drawing = Drawing(text)
    for run in runs:
        events = run.log.read()
        if not events:
            continue
        label = f"timeline of queue {run.queue}"
        expected = expected_bars(events)
        assert drawn_bars(drawing.bars[label]) == expected, label
        outcomes = [bar[1] for row in expected.values() for bar in row]
        marks = drawing.marks[label]
        for kind in ("lost", "crashed", "requeued", "abandoned", "dead-lettered"):
            assert marks.count(kind) == outcomes.count(kind), f"{label}: {kind} marks"
        assert marks.count("redelivered") == sum(bar[2] for row in expected.values() for bar in row), label
        assert marks.count("disconnected") == sum(e["event"] == "disconnected" for e in events), label


@pytest.fixture(scope="module")
def lab5_report(broker, tmp_path_factory):
    """Lab 5 run as `python -m labs run 5 --report FILE` runs it (run_labs, then write_report), in-process so that
    its runs' event logs stay readable after the run (their folders are removed)."""
    ran: list = []
    failed = run_labs([lab for lab in LABS if lab.number == 5], broker, ran=ran)
    path = tmp_path_factory.mktemp("report") / "lab5.html"
    write_report(path, ran)
    (lab, context), = ran
    return path, context, failed


def test_lab_5s_report_draws_each_delivery_of_its_event_logs_in_its_workers_row_and_order(lab5_report):
    path, context, failed = lab5_report
    assert failed == 0, [claim.line() for claim in context.claims]
    text = path.read_text(encoding="utf-8")
    assert len(context.runs) == 2 and all(len(run.log.read()) >= 16 for run in context.runs)
    assert_drawn_as_logged(text, context.runs)
    for claim in context.claims:
        assert claim.text in text.replace("&#x27;", "'") and f'<td class="{claim.status}">' in text
    ideal = context.runs[0].ideal_makespan
    assert ideal and text.count(f"ideal {ideal:.2f} s") >= 2, "the makespan is drawn against the lab's ideal"


def test_the_demos_report_marks_the_crashes_and_the_redeliveries_as_logged(broker, space):
    """The demo's w3 dies holding every third message it takes: each crash is marked, and each message it held comes
    back to another worker marked redelivered."""
    ran: list = []
    assert demo(dataclasses.replace(broker, vhost=space.vhost, username=space.username, password=space.password), ran)
    section, = ran
    run, = section.runs
    events = run.log.read()
    assert any(e["event"] == "lost" and e.get("mode") == "crash" for e in events)
    text = page(sections(ran))
    assert_drawn_as_logged(text, [run])
    marks = Drawing(text).marks[f"timeline of queue {run.queue}"]
    assert marks.count("crashed") >= 1 and marks.count("redelivered") >= 1


def test_run_report_writes_a_section_per_lab_with_lab_2s_round_robin_in_its_bars(broker, tmp_path):
    """As a teacher types it: `python -m labs run 2 --report FILE`. Lab 2's first run is round-robin: one worker's
    row shows 1, 4, 7 from left to right, another's 2, 5, 8 and the third's 3, 6, 9 (which gets which depends on the
    order their consumers attached)."""
    path = tmp_path / "report.html"
    result = labs_command("run", "2", "--report", str(path), env=given_broker_env(broker), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    text = path.read_text(encoding="utf-8")
    assert 'id="lab-2"' in text and "3 PASS" not in text and "2 PASS" in text
    bars = Drawing(text).bars
    first = drawn_bars(bars["timeline of queue tasks"])
    assert set(first) == {"w1", "w2", "w3"}
    assert sorted([bar[0] for bar in row] for row in first.values()) == [["1", "4", "7"], ["2", "5", "8"],
                                                                        ["3", "6", "9"]]
    assert len(bars["timeline of queue more-tasks"]) == 12


def synthetic_run(tmp_path: Path) -> Run:
    """A run whose event log holds every kind of ending, as qprocessor.py writes them, with no broker."""
    run = Run("amqp://unused/", "every-ending", echo=False, folder=tmp_path / "run")
    run.folder.mkdir()
    start = time.time()
    run.sent, run.sent_at = [str(n) for n in range(1, 9)], [start] * 8
    lines = []

    def log(kind: str, body: str, worker: str, at: float, redelivered: bool = False, **extra) -> None:
        lines.append({"event": kind, "body": body, "worker": worker, "time": start + at, "redelivered": redelivered,
                      "message_id": None, **extra})

    log("connected", "", "w1", 0.0, node="n1")
    log("received", "1", "w1", 0.1), log("done", "1", "w1", 0.3)
    log("received", "2", "w2", 0.1), log("lost", "2", "w2", 0.2, mode="crash")
    log("received", "2", "w1", 0.35, True), log("done", "2", "w1", 0.5, True)
    log("received", "3", "w3", 0.1), log("requeued", "3", "w3", 0.15)
    log("received", "3", "w3", 0.2, True), log("failed", "3", "w3", 0.25, True, mode="requeue")
    log("dead-lettered", "3", "w3", 0.26, True, queue="dead")
    log("received", "4", "w3", 0.3), log("lost", "4", "w3", 0.4, mode="drop")
    log("received", "5", "w1", 0.55), log("abandoned", "5", "w1", 0.6, reason="stopping")
    log("lost", "6", "w3", 0.62, mode="exit")
    log("disconnected", "", "w1", 0.65, node="n1")
    log("received", "7", "w3", 0.7)  # killed holding it: no ending
    run.folder.joinpath("events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run


def test_every_ending_is_drawn_and_marked_as_logged(tmp_path):
    run = synthetic_run(tmp_path)
    text = page([Section("every ending", [Claim("one", True)], [run], "every")])
    assert_drawn_as_logged(text, [run])
    drawn = drawn_bars(Drawing(text).bars["timeline of queue every-ending"])
    assert [bar[1] for bar in drawn["w3"]] == ["requeued", "dead-lettered", "lost", "lost", "unfinished"]
    assert [bar[1] for bar in drawn["w2"]] == ["crashed"]


def test_queue_depth_counts_a_message_until_it_is_done_lost_or_dead_lettered(tmp_path):
    """8 sent; 1 and 2 done, 3 dead-lettered, 4 and 6 lost: 3 outstanding at the end (5 abandoned, 7 in w3's hands
    when the log ends, 8 never taken), 2 of them ready; a requeued or crashed message stays outstanding."""
    run = synthetic_run(tmp_path)
    points = depth(run, run.log.read())
    assert points[0][1:] == (8, 8) and max(p[1] for p in points) == 8
    assert points[-1][1:] == (3, 2)
    assert min(p[1] for p in points) == 3 and all(0 <= p[2] <= p[1] for p in points)
    at = {round(p[0] - points[0][0], 2): p[1] for p in points}  # the last count at each moment
    assert (at[0.2], at[0.26], at[0.3]) == (8, 7, 6)  # the crash settles nothing; the dead letter and 1 done do


def test_a_browser_shows_every_bar_with_nothing_fetched_and_no_script(lab5_report, tmp_path):
    """Debian's chromium, headless, driven by Playwright: the bars the browser finds are those of the event logs,
    each drawn with a width inside its image; the page asks for nothing but itself."""
    path, context, _ = lab5_report
    logged = sum(len(bars) for run in context.runs for bars in expected_bars(run.log.read()).values())
    asked: list[str] = []
    with chromium() as browser:
        view = browser.new_page(viewport={"width": 1040, "height": 900}, java_script_enabled=False)
        view.on("request", lambda request: asked.append(request.url))
        view.goto(path.as_uri())
        found = view.locator("rect[data-worker]")
        assert found.count() == logged
        for index in range(found.count()):
            box = found.nth(index).bounding_box()
            image = found.nth(index).locator("xpath=ancestor::*[local-name()='svg']").bounding_box()
            assert box and image and box["width"] >= 1 and box["height"] >= 10
            assert image["x"] <= box["x"] and box["x"] + box["width"] <= image["x"] + image["width"] + 1
        assert view.locator("script").count() == 0
        shot = tmp_path / "report.png"
        view.screenshot(path=str(shot), full_page=True)
    assert asked == [path.as_uri()], f"the page asked for more than itself: {asked}"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_an_svg_report_is_one_standalone_image_of_every_timeline(tmp_path):
    """`--report FILE.svg`: the timelines alone, as an SVG document any viewer opens (the docs show lab 5's)."""
    run = synthetic_run(tmp_path)
    path = tmp_path / "timelines.svg"
    write_page(path, [Section("every ending", [Claim("one", True)], [run], "every")])
    svg = "{http://www.w3.org/2000/svg}"
    for image in (path, ROOT / "docs" / "lab5-timeline.svg"):
        root = ElementTree.parse(image).getroot()
        assert root.tag == f"{svg}svg" and not list(root.iter(f"{svg}script")), image
        bars = [rect for rect in root.iter(f"{svg}rect") if "data-worker" in rect.attrib]
        assert bars, image
    drawn = [rect.get("data-body") for rect in ElementTree.parse(path).getroot().iter(f"{svg}rect")
             if "data-worker" in rect.attrib]
    assert sorted(drawn) == sorted(bar[0] for row in expected_bars(run.log.read()).values() for bar in row)
