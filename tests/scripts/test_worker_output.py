"""qprocessor.py's output options: --events - (JSON lines on stdout) and --quiet (the summary alone)."""
from __future__ import annotations

import json
import re
import signal

from labs.amqp.connection import Event
from labs.drive.event_log import EventLog, read_events

SUMMARY = re.compile(r"\[(?P<name>[\w-]+)\] summary: received (?P<received>\d+), processed (?P<processed>\d+), "
                     r"lost (?P<lost>\d+), requeued \d+, redelivered \d+, abandoned \d+")


def test_events_dash_writes_parseable_json_lines_to_stdout(space):
    space.send("--count", "4")
    result = space.run_worker("--events", "-", "--name", "json", "--seconds-per-char", "0", "--lose-every", "4",
                              "--max-messages", "4")
    connected, *records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    # First where it connected (a cluster's failovers show as disconnected and connected again, tests/faults/test_failover.py)
    assert (connected["event"], connected["node"], connected["message_id"], connected["body"]) == \
        ("connected", f"{space.broker.host}:{space.broker.port}", None, "")
    assert [(r["event"], r["body"]) for r in records] == [
        ("received", "1"), ("done", "1"), ("received", "2"), ("done", "2"), ("received", "3"), ("done", "3"),
        ("received", "4"), ("lost", "4")]
    for record in records:
        assert record["worker"] == "json" and record["message_id"] and record["redelivered"] is False
        assert isinstance(record["time"], float)
    assert all(isinstance(r["seconds"], (int, float)) for r in records if r["event"] == Event.DONE)
    assert records[-1]["mode"] == "drop"
    # Every other stdout line is the worker's own labelled output.
    assert all(line.startswith("{") or line.startswith("[json] ") for line in result.stdout.splitlines())


def test_events_dash_with_quiet_leaves_only_json_and_the_summary(space):
    space.send("--count", "3")
    result = space.run_worker("--events", "-", "--quiet", "--name", "q", "--seconds-per-char", "0",
                              "--max-messages", "3")
    *events, summary = result.stdout.splitlines()
    assert [json.loads(line)["event"] for line in events] == ["connected"] + ["received", "done"] * 3
    assert SUMMARY.fullmatch(summary)


def test_quiet_worker_prints_only_the_summary(space):
    space.send("--count", "5")
    result = space.run_worker("--quiet", "--name", "hush", "--acknowledge", "--seconds-per-char", "0",
                              "--lose-every", "5", "--max-messages", "5")
    assert result.stdout.count("\n") == 1, result.stdout
    found = SUMMARY.fullmatch(result.stdout.strip())
    assert found and found.group("name", "received", "processed", "lost") == ("hush", "5", "4", "1")
    assert result.stderr == ""


def test_quiet_worker_still_logs_its_events_to_a_file(space):
    space.send("--count", "2")
    worker = space.start_worker("filed", "--quiet", "--seconds-per-char", "0", "--max-messages", "2")
    assert worker.wait() == 0
    assert worker.bodies(Event.DONE) == ["1", "2"]
    assert worker.output.strip().splitlines() == ["[filed] summary: received 2, processed 2, lost 0, requeued 0, "
                                                  "redelivered 0, abandoned 0"]


def test_a_line_still_being_written_is_left_for_the_next_read(tmp_path):
    """The runner and the tests read event logs while workers append to them: a half-written last line is not an
    error, and it is read whole the next time."""
    log = tmp_path / "events.jsonl"
    log.write_text('{"event": "done", "body": "1"}\n{"event": "done", "bo')
    assert [e["body"] for e in read_events(log)] == ["1"]
    log.write_text('{"event": "done", "body": "1"}\n{"event": "done", "body": "2"}\n')
    assert [e["body"] for e in read_events(log)] == ["1", "2"]


def test_an_event_log_read_as_it_grows_parses_each_line_once_and_keeps_it(tmp_path):
    """Labs and tests poll a log while workers append to it: each read gives every record so far, once, a half-written
    line only when it is whole, and what was read stays readable after the run's folder is removed."""
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    assert log.read() == []  # no worker has written yet
    with path.open("a") as appending:
        appending.write('{"event": "done", "body": "1"}\n{"event": "done", "bo')
        appending.flush()
        assert [e["body"] for e in log.read()] == ["1"]
        appending.write('dy": "2"}\n{"event": "done", "body": "3"}\n')
    assert [e["body"] for e in log.read()] == ["1", "2", "3"]
    assert [e["body"] for e in log.read()] == ["1", "2", "3"]
    path.unlink()
    assert [e["body"] for e in log.read()] == ["1", "2", "3"]


# Every count of the summary line, the optional failed/dead-lettered part included (absent means 0).
FULL_SUMMARY = re.compile(r"\[(?P<name>[\w-]+)\] summary: received (?P<received>\d+), processed (?P<processed>\d+), "
                          r"lost (?P<lost>\d+), requeued (?P<requeued>\d+), redelivered (?P<redelivered>\d+), "
                          r"abandoned (?P<abandoned>\d+)(?:, failed (?P<failed>\d+), "
                          r"dead-lettered (?P<dead_lettered>\d+))?")


def summary_counts(output: str) -> dict[str, int]:
    """The counts of the worker's last summary line, each one present (0 when the line leaves it out)."""
    found = [m for m in map(FULL_SUMMARY.fullmatch, output.splitlines()) if m]
    assert found, f"no summary line in {output!r}"
    return {key: int(value or 0) for key, value in found[-1].groupdict().items() if key != "name"}


def event_counts(worker) -> dict[str, int]:
    """What the worker's own event log says, counted as the summary should count it."""
    events = worker.events()
    kinds = [e["event"] for e in events]
    return {"received": kinds.count("received"), "processed": kinds.count("done"), "lost": kinds.count("lost"),
            "requeued": kinds.count("requeued"),
            "redelivered": sum(1 for e in events if e["event"] == Event.RECEIVED and e["redelivered"]),
            "abandoned": kinds.count("abandoned"), "failed": kinds.count("failed"),
            "dead_lettered": kinds.count("dead-lettered")}


def test_each_workers_summary_matches_its_own_event_log_count_for_count(space):
    """The summary is the only account a student reads; the event log is what really happened. Three workers in
    turn give every count a non-zero value somewhere, and each redelivery comes from another worker's doing."""
    space.send("--count", "12")
    # Given a worker stopped mid-work: it abandons message 1, which goes back to the queue (redelivered later).
    slow = space.start_worker("abandons", "--acknowledge", "--prefetch", "1", "--seconds-per-char", "5")
    slow.wait_for_events(Event.RECEIVED, 1)
    slow.signal(signal.SIGTERM)
    assert slow.wait() == 0, slow.output
    # One after the other, so each gets what the one before left: a worker that drops every 3rd delivery and
    # leaves after 6 (what it dropped, and the rest it had prefetched, come back redelivered);
    loser = space.start_worker("drops", "--acknowledge", "--seconds-per-char", "0", "--lose-every", "3",
                               "--max-messages", "6")
    assert loser.wait() == 0, loser.output
    # and one that rejects every 4th back to the queue (it comes back to itself) and fails on the poison "11".
    requeuer = space.start_worker("requeues", "--acknowledge", "--seconds-per-char", "0", "--lose-every", "4",
                                  "--lose-mode", "requeue", "--fail-on", "11", "--fail-mode", "reject",
                                  "--idle-exit", "1")
    assert requeuer.wait(60) == 0, requeuer.output

    totals: dict[str, int] = {}
    for worker in (slow, loser, requeuer):
        summary, logged = summary_counts(worker.output), event_counts(worker)
        assert summary == logged, f"{worker.name}: summary {summary}, event log {logged}"
        for key, value in logged.items():
            totals[key] = totals.get(key, 0) + value
    # The scenario did what it is for: every count but dead-lettered (no dead-letter queue here) was exercised.
    assert all(totals[key] > 0 for key in totals if key != "dead_lettered"), totals
    assert space.ready("hello") == 0
