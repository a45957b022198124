"""The kit's one process runner (ProcessGroup: the labs, the tests, the Jobs lab and the bench start their children
through it), sender.py and qprocessor.py as real processes of one lab run on a broker, and waiting for them.

A lab run's processes have their output relayed (prefixed) to the terminal, or, with tmux, each runs in a pane of its
own so a class can watch the dispatch live (labs/drive/tmux.py).
"""
from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import pika

from labs.drive.event_log import EventLog, EventTally
from labs.drive.tmux import Window, show
from labs.drive.wait import wait_until
from labs.paths import QPROCESSOR, SENDER
from labs.settings import child_environment



@dataclass
class ProcessGroup:
    """Child processes started for one purpose (a lab run, a test, the Jobs lab, a benchmark), with one environment,
    and killed together when it ends: none outlives what started it. Each child's standard input is closed (or the
    text given), its output and errors go to a file of its own in `folder` (or, line by line, to a function)."""

    folder: Path
    env: dict = field(default_factory=child_environment)
    cwd: Optional[Path] = None  # where the children start (this process's own folder by default)
    processes: list = field(default_factory=list)

    def output(self, label: str) -> Path:
        """Where the child started under `label` writes its standard output and errors."""
        return self.folder / f"{label}.out"

    def errors(self, label: str) -> Path:
        """Where the child started under `label` with errors_apart writes its standard errors."""
        return self.folder / f"{label}.err"

    def start(self, command: Sequence[str], label: str, *, env: Optional[dict] = None,
              relay: Optional[Callable[[str], None]] = None, errors_apart: bool = False,
              screen: Optional[str] = None, group: bool = False) -> subprocess.Popen:
        """Start `command` in the background; its output goes to output(label) (its errors too, unless
        `errors_apart` sends them to errors(label)), or each line of both to `relay`, or both to a terminal (a tmux
        pane's) at `screen`. With `group`, it leads a process group of its own (a shell and what it starts), which
        interrupt() and kill() reach whole."""
        if relay is None:
            with (open(screen, "ab") if screen else self.output(label).open("ab")) as sink, \
                    (self.errors(label).open("ab") if errors_apart else contextlib.nullcontext()) as errors:
                process = subprocess.Popen(command, stdout=sink, stderr=errors or subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=env or self.env, cwd=self.cwd,
                                           start_new_session=group)
        else:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       stdin=subprocess.DEVNULL, env=env or self.env, cwd=self.cwd,
                                       start_new_session=group)
            threading.Thread(target=lambda: [relay(line) for line in process.stdout], daemon=True).start()
        process.leads_group = group
        return self.adopt(process)

    def run(self, command: Sequence[str], *, input: Optional[str] = None, env: Optional[dict] = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """Run `command` to its end and return what it printed (text): a script's one run, as a student types it."""
        return subprocess.run(command, input=input, capture_output=True, text=True, env=env or self.env,
                              cwd=self.cwd, timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)

    def run_as_seen(self, command: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess:
        """Run `command` to its end like run(), and also keep its lines of output and errors in the order they came,
        as one terminal shows both (`seen`, a list of lines): what a handout's output block shows."""
        process = self.adopt(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd))
        whole = {process.stdout: bytearray(), process.stderr: bytearray()}
        pending = {process.stdout: b"", process.stderr: b""}  # each stream's line not yet ended
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for stream in whole:
                selector.register(stream, selectors.EVENT_READ)
            while selector.get_map():
                if time.monotonic() > deadline:
                    self.kill(process)
                    raise subprocess.TimeoutExpired(command, timeout)
                for key, _ in selector.select(timeout=1):
                    chunk = os.read(key.fd, 65536)
                    whole[key.fileobj] += chunk
                    *lines, pending[key.fileobj] = (pending[key.fileobj] + chunk).split(b"\n")
                    if not chunk:  # the end of the stream: its last line, even without a newline
                        selector.unregister(key.fileobj)
                        lines.append(pending[key.fileobj])
                    seen += [line.decode("utf-8", "replace") for line in lines if line or chunk]
        process.wait(max(1.0, deadline - time.monotonic()))
        process.stdout.close()
        process.stderr.close()
        result = subprocess.CompletedProcess(command, process.returncode,
                                             *(bytes(whole[stream]).decode("utf-8", "replace")
                                               for stream in (process.stdout, process.stderr)))
        result.seen = seen
        return result

    def adopt(self, process):
        """Count a process started another way (with a pipe of a test's own, in a folder of its own) among the
        group's."""
        self.processes.append(process)
        return process

    @staticmethod
    def kill(process, timeout: float = 10) -> None:
        """SIGKILL the process if it still runs (with its group, if it leads one), and wait until it has exited."""
        if getattr(process, "leads_group", False):
            with contextlib.suppress(ProcessLookupError):  # the group is gone already
                os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.wait(timeout)

    @staticmethod
    def interrupt(process) -> None:
        """Ctrl-C, as a terminal sends it: SIGINT to the process's whole group (a shell loop and its worker)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)

    def kill_all(self, timeout: float = 10) -> None:
        for process in self.processes:
            self.kill(process, timeout)

    def terminate_all(self, timeout: float = 15) -> None:
        """SIGTERM whatever still runs (a clean stop, as Ctrl-C), and SIGKILL what has not exited `timeout` seconds
        later."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        waited = wait_until(lambda: all(process.poll() is not None for process in self.processes), timeout,
                            "the processes to exit", or_last=True)
        if not waited:
            self.kill_all()


class RunStopped(RuntimeError):
    """A worker asked of a run that is already stopped."""


@dataclass
class Run:
    """Processes of one scenario against one queue, sharing one event log."""

    url: str
    queue: str
    echo: bool = True
    tmux: Optional[Window] = None  # the run's tmux window(s): workers and the sender get panes there
    # At least this many seconds a character of work (the handouts' 1 s, in tmux, for people to watch): a worker's
    # --seconds-per-char below it is raised to it, and the run's waits grow to match.
    pace: Optional[float] = None
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="labkit-run-")))
    sent: list[str] = field(default_factory=list)
    management_url: Optional[str] = None  # where the scripts set policies (--delivery-limit, --dead-letter-queue)
    # For the report's timeline (python -m labs run --report): when sender.py returned for each body of `sent`, the
    # makespan the lab calls ideal, whether the queue's depth tells this run's story, and moments the lab names.
    sent_at: list[float] = field(default_factory=list)
    ideal_makespan: Optional[float] = None
    depth_chart: bool = False
    moments: list[tuple[float, str]] = field(default_factory=list)
    # What each of the run's processes printed, a list of lines each, output and errors as a terminal shows them
    # (without tmux): the student mode checks the handout's output blocks against it (labs/scenarios/shown.py).
    printed: list[list[str]] = field(default_factory=list)
    log: EventLog = field(init=False, repr=False)  # the workers' shared event log, in the folder
    children: ProcessGroup = field(init=False, repr=False)
    # Set by stop(), under the lock worker() starts processes under: a process either starts before stop() takes the
    # lock, and is killed, or not at all. A supervisor (supervise) would otherwise restart a worker the clean-up killed.
    stopped: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.log = EventLog(self.folder / "events.jsonl")
        self.children = ProcessGroup(self.folder, self.env())

    @property
    def processes(self) -> list:
        return self.children.processes

    def env(self) -> dict:
        management = {"RABBITMQ_MANAGEMENT_URL": self.management_url} if self.management_url else {}
        return child_environment(AMQP_URL=self.url, RABBITMQ_QUEUE=self.queue, PYTHONUNBUFFERED="1", **management)

    def send(self, *args: str, bodies: Sequence[str] = (), check: bool = True) -> subprocess.CompletedProcess:
        """Run sender.py; `bodies` records what it sends, so the tally knows what should be processed."""
        command = [sys.executable, str(SENDER), *args]
        result = self.children.run_as_seen(command)
        self.printed.append(result.seen)
        if self.tmux:
            show(self.tmux.pane("sender.py"), result.stdout + result.stderr)
        else:
            self._print("sender", (result.stdout + result.stderr).splitlines())
        if check and result.returncode:
            raise RuntimeError(f"sender.py {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}")
        self.sent.extend(bodies)
        self.sent_at.extend([time.time()] * len(bodies))
        return result

    def worker(self, name: Optional[str], *args: str, role: Optional[str] = None):
        """Start qprocessor.py as worker `name` (None: the default name a student's worker has, worker-PID);
        RunStopped once the run is stopped. `role` titles its tmux pane."""
        label = name or f"worker{len(self.processes)}"
        return self._start(self.worker_command(name, args), label,
                           f"qprocessor.py {label}" + (f" ({role})" if role else ""))

    def shell_loop(self, name: str, *args: str):
        """The handouts' `while true; do ./qprocessor.py ...; done`, in bash as a student types it: bash starts worker
        `name` again each time it ends, until one Ctrl-C (ProcessGroup.interrupt) stops the worker and, with it, the
        loop. Its own process group, as a terminal's foreground job, which is what Ctrl-C reaches."""
        worker = shlex.join(self.worker_command(name, args))
        return self._start(["bash", "-c", f"while true; do {worker}; done"], name,
                           f"while true; do qprocessor.py {name}; done", group=True)

    def worker_command(self, name: Optional[str], args: Sequence[str]) -> list[str]:
        """qprocessor.py as the run starts it: named (or not), logging to the run's event log, at the run's pace."""
        named = ["--name", name] if name else []
        return [sys.executable, str(QPROCESSOR), *named, "--events", str(self.folder / "events.jsonl"),
                *self.paced(args)]

    def _start(self, command: list[str], label: str, title: str, group: bool = False):
        """Start a process of the run, unless the run is stopped (RunStopped): in a tmux pane titled `title`, or with
        its lines relayed and kept in `printed`."""
        with self._lock:
            if self.stopped:
                raise RunStopped(f"the run on queue {self.queue!r} is stopped: {label} is not started")
            if self.tmux:
                return self.children.start(command, label, screen=self.tmux.pane(title), group=group)
            lines: list[str] = []
            self.printed.append(lines)

            def relay(line: str) -> None:
                lines.append(line.rstrip("\n"))
                self._print(None, [line])

            process = self.children.start(command, label, relay=relay, group=group)
            process.printed = lines  # what it has printed so far
            return process

    def paced(self, args: Sequence[str]) -> list[str]:
        """A worker's arguments with its --seconds-per-char raised to the run's pace, if it has one. Zero stays zero:
        a scenario that gives its worker no work at all (lab 9's poison loop, 20 deliveries) is about something
        else, and would take minutes at the handouts' pace."""
        args = list(args)
        if self.pace is not None and "--seconds-per-char" in args:
            at = args.index("--seconds-per-char") + 1
            if float(args[at]) > 0:
                args[at] = f"{max(float(args[at]), self.pace):g}"
        return args

    def waited(self, timeout: float) -> float:
        """A wait of the run's scenario, long enough for the work at the run's pace (which can be 50 times slower
        than the runner's own)."""
        return timeout if self.pace is None else max(timeout, 600)

    def _print(self, prefix: Optional[str], lines) -> None:
        for line in lines:
            if self.echo:
                print(f"    {prefix + ' | ' if prefix else ''}{line.rstrip()}", flush=True)

    def supervise(self, name: str, *args: str, restarts: int = 20) -> int:
        """Run a worker and start it again each time it crashes, as a shell loop around it would; return crashes."""
        crashes = 0
        try:
            while ((code := self.worker(name, *args, role=f"supervised, start {crashes + 1}").wait()) < 0
                   and code != -signal.SIGTERM  # stopped (the run's end, as with Ctrl-C) before its handler was set
                   and crashes < restarts):
                crashes += 1
                self._print(None, [f"(supervisor: {name} crashed; starting it again)"])
        except RunStopped:
            pass  # stop() killed it (a kill looks like a crash): after the clean-up nothing starts again
        return crashes

    def wait_for_consumers(self, count: int, timeout: float = 30) -> None:
        wait_for_consumers(self.url, self.queue, count, timeout)

    def tally(self) -> EventTally:
        return EventTally(list(self.sent), self.log.read())  # after stop(): what it read before the folder went

    def finish(self, until: Optional[Callable[[EventTally], object]] = None, timeout: float = 120) -> None:
        """Wait until the event log shows what the run waits for (by default: every message sent in it processed),
        then stop the workers still running as a student does with Ctrl-C (SIGTERM), and wait until they have exited.

        Their idle exit would end them too, but only after seconds of nothing to do, more than a lab's dozen short
        messages take. Past `timeout`, or once no worker runs, they are stopped all the same: the claims then say
        what is missing.
        """
        waited_for = until or (lambda tally: not tally.missing)
        stop_when(self.processes, lambda: waited_for(self.tally()), self.waited(timeout))

    def stop(self) -> None:
        """Kill what still runs, read the event log a last time (tally() still answers) and remove its folder.
        Nothing starts in the run afterwards (worker() raises RunStopped)."""
        with self._lock:
            self.stopped = True
        try:
            self.children.kill_all(timeout=60)
            self.log.read()  # the last lines, while the folder is still there
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def stop_when(processes: Sequence, condition: Callable[[], object], timeout: float) -> bool:
    """Poll `condition` until it holds, `timeout` seconds pass or no process runs; then stop those still running with
    SIGTERM, which a worker takes as Ctrl-C (a clean stop), and wait until they have exited. Return whether it held.

    SIGTERM, not SIGINT: a worker still starting (its handler not yet installed) then ends quietly instead of
    printing a KeyboardInterrupt traceback."""
    try:
        held = bool(wait_until(condition, timeout, "the run's end",
                               give_up=lambda: None if any(p.poll() is None for p in processes) else "no process runs"))
    except TimeoutError:
        held = bool(condition())  # the last process may have finished the work just before it exited
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    wait_all(running, 60)
    return held


def wait_for_consumers(url: str, queue: str, count: int, timeout: float = 30) -> None:
    """Block until `count` consumers are attached to the queue, so dispatch starts with all of them."""
    connection = pika.BlockingConnection(pika.URLParameters(url))

    def attached() -> bool:
        channel = connection.channel()
        try:
            consumers = channel.queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:  # only NOT_FOUND means "not declared yet"; a refusal will not pass
                raise
            return False
        channel.close()
        return consumers >= count

    try:
        wait_until(attached, timeout, f"{count} consumers to attach to {queue!r}")
    finally:
        connection.close()


def numbered(count: int, length: int = 0) -> list[str]:
    """The bodies sender.py --count generates."""
    return [str(n).ljust(length, ".") for n in range(1, count + 1)]


def wait_all(processes: Sequence, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    return [process.wait(max(deadline - time.monotonic(), 0.1)) for process in processes]


