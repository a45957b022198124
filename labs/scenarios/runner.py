"""Prove each handout on a broker: run its scenario with real processes, then check every claim it makes."""
from __future__ import annotations

import contextlib
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pika

from labs.brokers.broker import Broker
from labs.brokers.cluster import Cluster
from labs.amqp.admin import ManagementError, ManagementRefused
from labs.amqp.management import POLICY_PREFIX
from labs.classroom.provision import ClassLimits, Student, definitions, new_password
from labs.drive.processes import ProcessGroup, Run
from labs.drive.tmux import Board
from labs.drive.wait import wait_until
from labs.paths import HANDOUTS, ROOT, SNIPPETS
from labs.scenarios.setup import SettingsBlockFailed, typed_settings
from labs.scenarios.shown import shown_output_claims
from labs.settings import child_environment


@dataclass
class Claim:
    text: str
    ok: Optional[bool]  # None: skipped, with the reason in detail
    detail: str = ""

    @property
    def status(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]

    def line(self) -> str:
        return f"  {self.status}: {self.text}" + (f" ({self.detail})" if self.detail else "")


STUDENT_TAGS = "management"  # what `class provision` gives every student unless told otherwise: their own vhost in
#                              the management API, as the sender's line on a full queue and the observation steps use


@dataclass
class Context:
    """One lab's own vhost and user on the broker, as a student would have, and what the lab ran there."""

    broker: Broker
    url: str
    vhost: str
    echo: bool = False
    tmux: Optional[Board] = None  # a window for each run, named after the lab and the run's queue
    pace: Optional[float] = None  # at least this many seconds a character of work (Run.pace)
    name: str = "lab"  # "lab2": names its tmux windows
    cluster: Optional[Cluster] = None  # a cluster lab's three nodes; self.url is then node 1's
    as_student: bool = False  # in a class-provisioned student's vhost that every lab shares, not one of its own
    settings: dict[str, str] = field(default_factory=dict)  # the student's lab 0 variables (as_student)
    runs: list[Run] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    printed: list[list[str]] = field(default_factory=list)  # what the lab's other commands printed (see saw())

    def run(self, queue: str, url: Optional[str] = None, paced: bool = True) -> Run:
        """Processes on one queue, connected to `url` (several separated by spaces), by default the lab's broker;
        `paced=False` keeps the scenario's own pace in tmux too (a run of many messages, as lab 11's)."""
        window = self.tmux.window(f"{self.name} {queue}") if self.tmux else None
        run = Run(url or self.url, queue, echo=self.echo, tmux=window, pace=self.pace if paced else None,
                  management_url=self.settings.get("RABBITMQ_MANAGEMENT_URL", self.broker.admin.base_url))
        self.runs.append(run)
        return run

    def node_url(self, number: int) -> str:
        """The lab's URL (its user and vhost) on one node of its cluster."""
        assert self.cluster, "not a cluster lab"
        parts = urllib.parse.urlsplit(self.url)
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{self.cluster.nodes[number - 1].port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def node_address(self, number: int) -> str:
        """host:port of one node of the cluster, as the scripts name the node they are connected to."""
        parts = urllib.parse.urlsplit(self.node_url(number))
        return f"{parts.hostname}:{parts.port}"

    def every_node_url(self) -> str:
        """AMQP_URL for every node of the cluster, as the scripts take it: separated by spaces."""
        assert self.cluster, "not a cluster lab"
        return " ".join(self.node_url(node.number) for node in self.cluster.nodes)

    def credentials(self) -> tuple[str, str]:
        """The lab's user and password, as the student was handed them."""
        parts = urllib.parse.urlsplit(self.url)
        username, password = (urllib.parse.unquote(part or "") for part in (parts.username, parts.password))
        return username, password

    def tag_user(self, tags: str) -> None:
        """Give the lab's user these tags beside a student's own, as an instructor would (rabbitmqctl
        set_user_tags); "" gives back a student's own."""
        username, password = self.credentials()
        self.broker.admin.add_user(username, password, tags=",".join(filter(None, (STUDENT_TAGS, tags))))

    def saw(self, text: str) -> None:
        """Keep what a command other than a run's scripts printed (a snippet, a request's answer): the handout's
        output blocks may show it."""
        self.printed.append(text.splitlines())

    def everything_printed(self) -> list[list[str]]:
        """What each process and command of the lab printed, a list of lines each."""
        return [*self.printed, *(lines for run in self.runs for lines in run.printed)]

    def claim(self, text: str, ok: bool, detail: str = "") -> bool:
        self.claims.append(Claim(text, bool(ok), detail))
        return bool(ok)

    def skip(self, text: str, reason: str) -> None:
        self.claims.append(Claim(text, None, reason))

    def ready(self, queue: str, url: Optional[str] = None) -> Optional[int]:
        """Ready messages in the queue, or None when it does not exist."""
        with contextlib.closing(pika.BlockingConnection(pika.URLParameters(url or self.url))) as connection:
            try:
                return connection.channel().queue_declare(queue, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker:
                return None

    def first_body(self, queue: str) -> Optional[str]:
        """The body of the message at the head of the queue, left there (taken unacked, given back on closing)."""
        with contextlib.closing(pika.BlockingConnection(pika.URLParameters(self.url))) as connection:
            body = connection.channel().basic_get(queue, auto_ack=False)[2]
        return None if body is None else body.decode("utf-8", "replace")

    def stats(self, queue: str, settle: float = 1.2, timeout: float = 15) -> dict:
        """The management API's counts, after waiting out its sampling (a new queue has none at first)."""
        time.sleep(settle)
        counted = wait_until(lambda: (stats := self.broker.admin.queue(self.vhost, queue)) and
                             "messages_ready" in stats and stats, timeout, f"counts of queue {queue!r}",
                             interval=0.2, or_last=True)
        return counted or self.broker.admin.queue(self.vhost, queue)  # without counts: the claims say so

    def student_environment(self) -> dict[str, str]:
        """The variables lab 0 has a student set (RABBITMQ_HOST, RABBITMQ_PORT, RABBITMQ_VHOST, RABBITMQ_USERNAME,
        RABBITMQ_PASSWORD): those the student typed (as_student), or those of the lab's own vhost and user."""
        if self.settings:
            return child_environment(PYTHONUNBUFFERED="1", **{key: value for key, value in self.settings.items()
                                                              if key.startswith("RABBITMQ_")})
        parts = urllib.parse.urlsplit(self.url)
        return child_environment(RABBITMQ_HOST=parts.hostname or "localhost", RABBITMQ_PORT=str(parts.port or 5672),
                                 RABBITMQ_VHOST=urllib.parse.unquote(parts.path[1:]),
                                 RABBITMQ_USERNAME=urllib.parse.unquote(parts.username or ""),
                                 RABBITMQ_PASSWORD=urllib.parse.unquote(parts.password or ""), PYTHONUNBUFFERED="1")

    def snippet(self, name: str, until_lines: Optional[int] = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a handout's pika code (labs/handouts/snippets/NAME) as a student runs it, with lab 0's variables.

        With `until_lines` it is a consumer that runs until Ctrl-C, as the handout's does: it gets SIGINT once it has
        printed that many lines, or after `timeout`.
        """
        command = [sys.executable, str(SNIPPETS / name)]
        with tempfile.TemporaryDirectory(prefix="labkit-snippet-") as folder:
            children = ProcessGroup(Path(folder), self.student_environment())
            if until_lines is None:
                result = children.run_as_seen(command, timeout=timeout)
                self.printed.append(result.seen)
                return result
            # A file, not a pipe: the output is read while the consumer runs, without a thread to drain it.
            consumer = children.start(command, "consumer", errors_apart=True)
            output = children.output("consumer")
            wait_until(lambda: output.read_text().count("\n") >= until_lines, timeout, f"{until_lines} lines",
                       give_up=lambda: None if consumer.poll() is None else "it exited", or_last=True)
            if consumer.poll() is None:
                consumer.send_signal(signal.SIGINT)  # Ctrl-C, as the handout says to stop it
            with contextlib.suppress(subprocess.TimeoutExpired):
                consumer.wait(15)
            children.kill_all()
            result = subprocess.CompletedProcess(command, consumer.returncode, output.read_text(),
                                                 children.errors("consumer").read_text())
            self.saw(result.stdout + result.stderr)
            return result


@dataclass(frozen=True)
class Lab:
    number: int
    slug: str
    title: str
    scenario: Callable[[Context], None]
    on_cluster: bool = False  # runs on a three-node cluster the kit controls (it kills a node), not on AMQP_URL's
    sets_broker_settings: bool = False  # changes the rabbit application's settings (rabbitmqctl eval), then restores
    instructor: str = ""  # what only the instructor may do in this lab on a class broker: run as the administrator

    @property
    def handout(self) -> Path:
        return HANDOUTS / f"{self.number:02d}-{self.slug}.md"


@dataclass(frozen=True)
class Account:
    """Where labs run: a vhost, a user who may use it and no other, and what removes both."""

    url: str
    vhost: str
    remove: Callable[[], None]
    settings: dict[str, str] = field(default_factory=dict)  # what handout 0 has this student set, if they follow it


def provisioned_student(broker: Broker, default_queue_type: Optional[str] = None) -> Account:
    """One student as `class provision` makes every student of a class: the class's limits and cap, the management
    tag, a vhost of their own. `labs run --as-student` runs the labs in order there, with this account alone."""
    student = Student(f"student-{secrets.token_hex(3)}", new_password())
    document = definitions([student], default_queue_type, tags=(STUDENT_TAGS,), limits=ClassLimits(),
                           operator_overflow=broker.version()[0] >= 4)
    name = student.username

    def remove() -> None:
        broker.admin.delete_vhost(name)
        broker.admin.delete_user(name)

    broker.admin.import_definitions(document)
    # The student follows handout 0: the labs run with what its block sets, typed into bash with this student's
    # values, so that a handout 0 that leaves a variable out or builds AMQP_URL wrong fails the labs after it.
    try:
        settings = typed_settings(broker.host, broker.port, broker.admin.base_url, name, student.password)
        if "AMQP_URL" not in settings:
            raise SettingsBlockFailed("handout 0's settings block sets no AMQP_URL, which the labs connect with")
    except Exception:
        remove()
        raise
    return Account(settings["AMQP_URL"], name, remove, settings)


def account_state(broker: Broker, account: Account) -> dict:
    """What provisioning gave a student that no lab may leave changed: the user's tags (lab 9 lends policymaker),
    the vhost's limits, and the policies the instructor set (the class's cap, which lab 12 lowers for a moment; lab
    4's short consumer timeout, for the lab only). The scripts' own policies (labkit-QUEUE) are the student's."""
    admin, vhost = broker.admin, broker.admin.quote(account.vhost)
    tags = admin.request("GET", f"/api/users/{vhost}")["tags"]  # the user is named as their vhost
    caps = {kind: {policy["name"]: {key: policy[key] for key in ("pattern", "apply-to", "priority", "definition")}
                   for policy in admin.request("GET", f"/api/{kind}/{vhost}")
                   if not policy["name"].startswith(POLICY_PREFIX)}
            for kind in ("policies", "operator-policies")}
    return {"tags": sorted(tags if isinstance(tags, list) else filter(None, tags.split(","))),  # 3.10: "a,b"
            "limits": [each["value"] for each in admin.request("GET", f"/api/vhost-limits/{vhost}")], **caps}


def student_space(broker: Broker, lab: Lab, default_queue_type: Optional[str] = None) -> Account:
    """A fresh vhost and user for the lab, as a student has (with the default queue type an instructor may give it).

    The management API must allow it: a lab never falls back to a shared vhost, where it would trip over what
    others left there.
    """
    name = f"lab{lab.number}-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(10)

    def remove() -> None:
        broker.admin.delete_vhost(name)
        broker.admin.delete_user(name)

    try:
        broker.admin.add_vhost(name, default_queue_type)
        broker.admin.add_user(name, password, tags=STUDENT_TAGS)
        broker.admin.grant(name, name)
    except (ManagementRefused, urllib.error.HTTPError) as exc:
        with contextlib.suppress(ManagementError, urllib.error.HTTPError):
            remove()
        reason = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else "refused"
        raise ManagementRefused(f"the management API at {broker.admin.base_url} would not create vhost and user "
                                f"{name!r} for lab {lab.number} ({reason}): AMQP_URL's user "
                                f"{broker.username!r} needs the administrator tag") from None
    except ManagementError:
        with contextlib.suppress(ManagementError, urllib.error.HTTPError):
            remove()
        raise
    return Account(broker.url(name, name, password), name, remove)


def run_lab(lab: Lab, broker: Broker, echo: bool = False, tmux: Optional[Board] = None,
            default_queue_type: Optional[str] = None, cluster: Optional[Cluster] = None,
            pace: Optional[float] = None, student: Optional[Account] = None) -> Context:
    """Run the lab's scenario in a vhost of its own, or in the `student`'s that every lab shares (left for the next
    lab, as a student's is); a claim that cannot be checked fails, with its reason.

    A management API that is unreachable or refuses us is not a claim: it is raised, for one line and its exit code.
    A run that cannot be stopped is a failed claim too, once every other run is stopped and the vhost removed.
    """
    account = student or student_space(broker, lab, default_queue_type)
    context = Context(broker, account.url, account.vhost, echo=echo, tmux=tmux, pace=pace, name=f"lab{lab.number}",
                      cluster=cluster, as_student=student is not None, settings=student.settings if student else {})
    vhost = account.vhost
    try:
        if default_queue_type:  # what follows holds on such a vhost only if the broker really took the default
            found = broker.admin.default_queue_type(vhost)
            context.claim(f"the lab's vhost has default queue type {default_queue_type}",
                          found == default_queue_type, f"the broker reports {found}")
        lab.scenario(context)
    except ManagementError:
        raise
    except Exception as exc:  # a lab that cannot finish is a failed claim, reported like the others
        context.claims.append(Claim(f"lab {lab.number} ran to the end", False, f"{type(exc).__name__}: {exc}"))
    finally:
        # Every run is stopped and the vhost removed even when a stop fails: a run left alone keeps its workers.
        failures = []
        for run in context.runs:
            try:
                run.stop()
            except Exception as exc:  # reported below, once every other run is stopped
                failures.append(f"queue {run.queue!r}: {type(exc).__name__}: {exc}")
        if student is None:
            account.remove()
    if failures:
        context.claims.append(Claim(f"lab {lab.number} stopped every process it started", False, "; ".join(failures)))
    if context.as_student:
        shown_output(lab, context)
    return context


def shown_output(lab: Lab, context: Context) -> None:
    """Each output block of the handout is what the student's processes printed (labs/scenarios/shown.py)."""
    if context.tmux:
        context.skip("the handout's output blocks are what the student saw",
                     "checked without --tmux: in tmux the processes print to their panes")
        return
    for text, ok, detail in shown_output_claims(lab.handout, context.everything_printed(), context.vhost,
                                                context.broker.version()):
        context.claim(text, ok, detail)


def report(lab: Lab, context: Context) -> str:
    lines = [f"Lab {lab.number}: {lab.title}  [{lab.handout.relative_to(ROOT)}]"]
    if context.as_student:
        lines.append(f"  as student {context.vhost!r}, in their vhost, after the labs before it")
        if lab.instructor:
            lines.append(f"  the instructor's step, run as the administrator: {lab.instructor}")
    for run in context.runs:
        if run.sent:
            lines.append(f"  queue {run.queue!r}:")
            lines.append(run.tally().report())
    lines.extend(claim.line() for claim in context.claims)
    return "\n".join(lines)


def command_line(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)
