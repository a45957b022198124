"""Prove each handout on a broker: run its scenario with real processes, then check every claim it makes."""
from __future__ import annotations

import contextlib
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pika

from labs.broker import Broker
from labs.scenario import Run

HANDOUTS = Path(__file__).resolve().parent / "handouts"


@dataclass
class Claim:
    text: str
    ok: Optional[bool]  # None: skipped, with the reason in detail
    detail: str = ""

    def line(self) -> str:
        status = {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
        return f"  {status}: {self.text}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Context:
    """One lab's own vhost and user on the broker, as a student would have, and what the lab ran there."""

    broker: Broker
    url: str
    vhost: str
    echo: bool = False
    tmux: Optional[str] = None
    runs: list[Run] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)

    def run(self, queue: str) -> Run:
        run = Run(self.url, queue, echo=self.echo, tmux=self.tmux)
        self.runs.append(run)
        return run

    def claim(self, text: str, ok: bool, detail: str = "") -> bool:
        self.claims.append(Claim(text, bool(ok), detail))
        return bool(ok)

    def skip(self, text: str, reason: str) -> None:
        self.claims.append(Claim(text, None, reason))

    def ready(self, queue: str) -> Optional[int]:
        """Ready messages in the queue, or None when it does not exist."""
        with contextlib.closing(pika.BlockingConnection(pika.URLParameters(self.url))) as connection:
            try:
                return connection.channel().queue_declare(queue, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker:
                return None

    def stats(self, queue: str, settle: float = 1.2, timeout: float = 15) -> dict:
        """The management API's counts, after waiting out its sampling (a new queue has none at first)."""
        time.sleep(settle)
        deadline = time.monotonic() + timeout
        while True:
            stats = self.broker.admin.queue(self.vhost, queue)
            if "messages_ready" in stats or time.monotonic() > deadline:
                return stats
            time.sleep(0.2)

    def python(self, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a snippet of plain pika as a student would type it in ipython."""
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


@dataclass(frozen=True)
class Lab:
    number: int
    slug: str
    title: str
    scenario: Callable[[Context], None]

    @property
    def handout(self) -> Path:
        return HANDOUTS / f"{self.number:02d}-{self.slug}.md"


def student_space(broker: Broker, url: Optional[str], lab: Lab) -> tuple[str, str, Callable[[], None]]:
    """A fresh vhost and user for the lab when the management API allows it, else the vhost in AMQP_URL."""
    name = f"lab{lab.number}-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(10)
    try:
        broker.admin.add_vhost(name)
        broker.admin.add_user(name, password)
        broker.admin.grant(name, name)
    except OSError:
        given = url or broker.url()
        return given, pika.URLParameters(given).virtual_host, lambda: None

    def remove() -> None:
        broker.admin.delete_vhost(name)
        broker.admin.delete_user(name)

    return broker.url(name, name, password), name, remove


def run_lab(lab: Lab, broker: Broker, url: Optional[str], echo: bool = False, tmux: Optional[str] = None) -> Context:
    lab_url, vhost, remove = student_space(broker, url, lab)
    context = Context(broker, lab_url, vhost, echo=echo, tmux=tmux)
    try:
        lab.scenario(context)
    except Exception as exc:  # a lab that cannot finish is a failed claim, reported like the others
        context.claims.append(Claim(f"lab {lab.number} ran to the end", False, f"{type(exc).__name__}: {exc}"))
    finally:
        for run in context.runs:
            run.stop()
        remove()
    return context


def report(lab: Lab, context: Context) -> str:
    lines = [f"Lab {lab.number}: {lab.title}  [{lab.handout.relative_to(HANDOUTS.parent.parent)}]"]
    for run in context.runs:
        if run.sent:
            lines.append(f"  queue {run.queue!r}:")
            lines.append(run.tally().report())
    lines.extend(claim.line() for claim in context.claims)
    return "\n".join(lines)


def command_line(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)
