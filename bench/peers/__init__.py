"""The peers the bench measures the kit against: what a careful user writes with plain pika (or python-rq for the
Jobs API), each a whole program the bench runs as a subprocess by its path. This module is the one place that knows
those paths, as labs/paths.py knows the scripts'."""
from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
PLAIN_PUBLISH = FOLDER / "plain_publish.py"  # a BlockingConnection publish loop: unconfirmed, confirmed, persistent
PLAIN_CONSUME = FOLDER / "plain_consume.py"  # basic_consume with a callback that acks
PIPELINED_PUBLISH = FOLDER / "pipelined_publish.py"  # a SelectConnection keeping a window of messages unconfirmed
RQ_API = FOLDER / "rq_jobs.py"  # the Jobs API's routes on python-rq
