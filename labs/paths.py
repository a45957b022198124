"""Where the kit's files are: the one place that knows the scripts' and the labs' paths (labs, tests, bench)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: the scripts a student uploads are at its top
SENDER = ROOT / "sender.py"
QPROCESSOR = ROOT / "qprocessor.py"
RABBITQUEUE = ROOT / "rabbitqueue.py"
LABS = ROOT / "labs"
HANDOUTS = LABS / "handouts"
SNIPPETS = HANDOUTS / "snippets"  # the pika code the handouts show, as files the labs run
JOBS = LABS / "jobs"  # the Jobs API lab's files, run as `python labs/jobs/api.py` the way a student runs them
CLASSROOM = LABS / "classroom"
