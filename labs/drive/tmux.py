"""A lab run as a class watches it in tmux: a window per scenario, named after it, and a pane per process, titled
with its program and role; no idle shell anywhere; every pane kept at least 80 columns wide.

Outside tmux the windows go to a detached session, "labkit", of 200x50 (`tmux attach -t labkit`); inside tmux they
are added to the session the command runs in. The panes stay after their processes end (remain-on-exit), so a
person attaching late can still read and scroll back what each one printed.
"""
from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

from labs.drive.wait import wait_until

SESSION = "labkit"
HANDOUT_PACE = 1.0  # seconds of work a character, as the handouts run the worker: what a class watches
WIDTH, HEIGHT = 200, 50  # the detached session's size: a terminal a projector shows well
# Tiled at 200 columns, up to 4 panes make 2 columns of 100; a 5th makes 3 columns of 66, where a worker's summary
# line wraps. So a scenario with more processes gets more windows, not narrower panes.
PANES_PER_WINDOW = 4
# What a pane passes on from the kit's environment: the connection, nothing else of the caller's.
PASSED_ON = ("AMQP_URL", "RABBITMQ_QUEUE", "RABBITMQ_MANAGEMENT_URL", "PYTHONUNBUFFERED")


def tmux(*args: str) -> str:
    """One tmux command (on the server TMUX or TMUX_TMPDIR names, as a person's own tmux would find); its output."""
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout.strip()


def titled(title: str, command: str) -> str:
    """A pane's shell command that first sets the pane's title (tmux shows it on the pane's border)."""
    return f"printf '\\033]2;%s\\033\\\\' {shlex.quote(title)}; {command}"


class Board:
    """The tmux windows of one `labs run --tmux` or `demo --tmux`."""

    _channels = itertools.count(1)

    def __init__(self, session: str = SESSION) -> None:
        self.inside = bool(os.environ.get("TMUX"))
        self.session = tmux("display-message", "-p", "#{session_name}") if self.inside else session
        self.announced = False
        self.said: list[str] = []  # the reports, for the last window
        self.windows: list[str] = []  # those this board made, to end them inside a person's own session

    def window(self, name: str) -> "Window":
        """A scenario's windows: the first is made with its first pane."""
        return Window(self, name)

    def open(self, name: str, command: str, env: dict) -> tuple[str, str, int]:
        """A new window named `name` whose one pane runs `command`: (window id, pane id, pane pid)."""
        exports = [f"-e{key}={value}" for key, value in env.items()]
        exists = self.inside or subprocess.run(["tmux", "has-session", "-t", f"={self.session}"],
                                               capture_output=True).returncode == 0
        verb = (["new-window", "-d", "-t", f"{self.session}:"] if exists else
                ["new-session", "-d", "-s", self.session, "-x", str(WIDTH), "-y", str(HEIGHT)])
        window, pane, pid = self.held(
            [*verb, "-n", name, *exports, "-P", "-F", "#{window_id} #{pane_id} #{pane_pid}"], command).split()
        self.windows.append(window)
        if not self.announced and not self.inside:
            print(f"watch it live: tmux attach -t {self.session}", file=sys.stderr, flush=True)
            self.announced = True
        return window, pane, int(pid)

    def split(self, window: str, command: str, env: dict) -> tuple[str, int]:
        """Another pane in `window` running `command`, the panes tiled: (pane id, pane pid)."""
        exports = [f"-e{key}={value}" for key, value in env.items()]
        pane, pid = self.held(["split-window", "-d", "-t", window, *exports, "-P", "-F", "#{pane_id} #{pane_pid}"],
                              command).split()
        tmux("select-layout", "-t", window, "tiled")
        return pane, int(pid)

    def held(self, verb: list[str], command: str) -> str:
        """Run a tmux command that starts `command` in a new pane, holding it back (tmux wait-for) until the pane
        has remain-on-exit: a process that ends at once would otherwise take its pane, and its output, with it."""
        channel = f"labkit-{os.getpid()}-{next(self._channels)}"
        made = tmux(*verb, f"tmux wait-for {channel}; {command}")
        pane = made.split()[-2]
        tmux("set-option", "-p", "-t", pane, "remain-on-exit", "on")
        tmux("set-option", "-w", "-t", pane, "pane-border-status", "top")
        tmux("wait-for", "-S", channel)
        return made

    def finish(self, linger: Optional[float] = None) -> None:
        """A last window, "claims", showing what was said (each lab's report, its PASS and FAIL lines); with
        `linger`, the session ends that many seconds later (the tmux server does it: this process may be gone)."""
        if self.said:
            with tempfile.NamedTemporaryFile("w", prefix="labkit-claims-", suffix=".txt", delete=False) as text:
                text.write("\n".join(self.said) + "\n")
            # The pane reads the file, then removes it: nothing is left behind once the window shows it.
            self.open("claims", titled("the claims", f"cat {shlex.quote(text.name)}; rm -f {shlex.quote(text.name)}"),
                      {})
        if linger is not None:
            # Inside a person's own session only the board's windows go; the detached session goes whole.
            ends = ("; ".join(f"tmux kill-window -t {window}" for window in self.windows) if self.inside
                    else f"tmux kill-session -t {shlex.quote(self.session)}")
            tmux("run-shell", "-b", "-t", f"{self.session}:", f"sleep {linger:g}; {ends}")


class Window:
    """A scenario's panes: its first window holds up to PANES_PER_WINDOW, then "NAME (2)" the next ones..."""

    def __init__(self, board: Board, name: str) -> None:
        self.board, self.name = board, name
        self.current: Optional[str] = None
        self.panes_here = 0
        self.windows = 0

    def pane(self, args: Sequence[str], env: dict, title: str) -> "PaneProcess":
        passed = {key: value for key, value in env.items() if key in PASSED_ON}
        command = titled(title, f"exec {' '.join(shlex.quote(a) for a in args)}")
        if self.current is None or self.panes_here == PANES_PER_WINDOW:
            self.windows += 1
            name = self.name if self.windows == 1 else f"{self.name} ({self.windows})"
            self.current, pane, pid = self.board.open(name, command, passed)
            self.panes_here = 1
        else:
            pane, pid = self.board.split(self.current, command, passed)
            self.panes_here += 1
        return PaneProcess(pane, pid)


class PaneProcess:
    """A command running in a tmux pane, with the parts of Popen's interface the runs use."""

    def __init__(self, pane: str, pid: int) -> None:
        self.pane, self.pid = pane, pid
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            status = subprocess.run(["tmux", "display-message", "-p", "-t", self.pane,
                                     "#{pane_dead} #{pane_dead_status} #{pane_dead_signal}"],
                                    capture_output=True, text=True).stdout.split()
            if not status:
                self.returncode = -signal.SIGKILL  # its pane is gone: the session was killed
            elif status[0] == "1":
                code = int(status[1]) if len(status) > 1 and status[1] else 0
                killed = int(status[2]) if len(status) > 2 and status[2] else 0
                self.returncode = -killed if killed else code
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        try:
            wait_until(lambda: self.poll() is not None, float("inf") if timeout is None else timeout,
                       f"pane {self.pane} to end")
        except TimeoutError:
            raise subprocess.TimeoutExpired(str(self.pane), timeout) from None
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-", "-t", self.pane],
                              capture_output=True, text=True).stdout
