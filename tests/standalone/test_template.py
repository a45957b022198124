"""qprocessor.py is a template: a student changes the body of work() and nothing else, and the rest (acks, redelivery,
prefetch, the event log) keeps working around the new work. These tests do what the student does."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

from labs.amqp.connection import Event
from tests.helpers import QPROCESSOR, wait_until

COUNT = 12


def with_work_body(source: str, new_body: str) -> str:
    """The script with the body of work() (after its docstring) replaced by `new_body`, and nothing else changed."""
    work = next(node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef) and node.name == "work")
    first = work.body[1] if isinstance(work.body[0], ast.Expr) and isinstance(work.body[0].value, ast.Constant) \
        else work.body[0]
    lines = source.splitlines(keepends=True)
    start = first.lineno - 1
    while start > 0 and lines[start - 1].strip().startswith("#"):  # the comments that belong to the old body
        start -= 1
    indented = "".join(f"    {line}\n" for line in new_body.splitlines())
    return "".join(lines[:start]) + indented + "".join(lines[work.end_lineno:])


def test_work_is_the_first_function_a_newcomer_sees():
    tree = ast.parse(QPROCESSOR.read_text(encoding="utf-8"))
    definitions = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert definitions[0].name == "work" and isinstance(definitions[0], ast.FunctionDef)
    assert [arg.arg for arg in definitions[0].args.args] == ["body"]


def test_a_students_own_work_runs_once_for_every_message_with_acks_redelivery_prefetch_and_events(space, tmp_path):
    # Given qprocessor.py uploaded alone, its work() replaced by the student's: note each body in a file, slowly
    upload = tmp_path / "upload"
    upload.mkdir()
    done_log = tmp_path / "work.log"
    source = QPROCESSOR.read_text(encoding="utf-8")
    changed = with_work_body(source, f"with open({str(done_log)!r}, 'a') as log:\n"
                                     f"    log.write(body.decode() + '\\n')\n"
                                     f"time.sleep(0.1)")
    assert changed != source and "def work(body: bytes) -> None:" in changed
    script = upload / "qprocessor.py"
    script.write_text(changed, encoding="utf-8")
    shutil.copymode(QPROCESSOR, script)
    space.send("--queue", "tasks", "--count", str(COUNT))

    # When it runs with acks, prefetch 1, and every 4th delivery rejected back to the queue
    events = tmp_path / "events.jsonl"
    worker = subprocess.Popen([sys.executable, str(script), "--queue", "tasks", "--acknowledge", "--prefetch", "1",
                               "--lose-every", "4", "--lose-mode", "requeue", "--max-messages", str(COUNT + 3),
                               "--events", str(events), "--name", "student"], cwd=upload, env=space.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    space.children.adopt(worker)
    wait_until(lambda: done_log.exists() and len(done_log.read_text().splitlines()) >= 2, 30, "the new work to run")
    ready = space.ready("tasks")
    worked = len(done_log.read_text().splitlines())
    out, err = worker.communicate(timeout=60)

    # Then prefetch 1 held back the rest: at most one unacked beyond the messages already worked on
    assert ready >= COUNT - worked - 1, (ready, worked)
    assert worker.returncode == 0, err
    # ... the new work ran once for every message, never for a delivery lost before its work
    bodies = [str(n) for n in range(1, COUNT + 1)]
    assert sorted(done_log.read_text().splitlines(), key=int) == bodies
    # ... the event log tells the same story, and each requeued message came back redelivered
    records = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [record["event"] for record in records]
    assert kinds.count("received") == COUNT + 3 and kinds.count("requeued") == 3
    assert sorted((r["body"] for r in records if r["event"] == Event.DONE), key=int) == bodies
    requeued = sorted(r["body"] for r in records if r["event"] == Event.REQUEUED)
    assert sorted(r["body"] for r in records if r["event"] == Event.RECEIVED and r["redelivered"]) == requeued
    assert "summary: received 15, processed 12, lost 0, requeued 3, redelivered 3, abandoned 0" in out
    # ... and every message was acked: none came back when the worker's connection closed
    assert space.ready("tasks") == 0
    assert Path(upload / "qprocessor.py").read_text() == changed  # the copy ran as uploaded
