"""A lab run as a class watches it in tmux: a window per scenario, named after it, and a pane per process, titled
with its program and role; no idle shell anywhere; every pane kept at least 80 columns wide.

A pane is a screen for one of the run's processes: the runner starts the process itself (labs.drive.processes, its
child, so its exit status and signals are exact) with the pane's terminal as its output, while the pane holds that
terminal open with `sleep` rather than a shell. The output stays on screen after the process ends, for a person
attaching late to read and scroll back.

Outside tmux the windows go to a detached session, "labkit", of 200x50 (`tmux attach -t labkit`); inside tmux they
are added to the session the command runs in.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from typing import Optional

SESSION = "labkit"
HANDOUT_PACE = 1.0  # seconds of work a character, as the handouts run the worker: what a class watches
WIDTH, HEIGHT = 200, 50  # the detached session's size: a terminal a projector shows well
# Tiled at 200 columns, up to 4 panes make 2 columns of 100; a 5th makes 3 columns of 66, where a worker's summary
# line wraps. So a scenario with more processes gets more windows, not narrower panes.
PANES_PER_WINDOW = 4
HOLDER = "exec sleep infinity"  # what keeps a pane's terminal open: never a shell a person could type into


def tmux(*args: str) -> str:
    """One tmux command (on the server TMUX or TMUX_TMPDIR names, as a person's own tmux would find); its output."""
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout.strip()


class Board:
    """The tmux windows of one `labs run --tmux` or `demo --tmux`."""

    def __init__(self, session: str = SESSION) -> None:
        self.inside = bool(os.environ.get("TMUX"))
        self.session = tmux("display-message", "-p", "#{session_name}") if self.inside else session
        self.announced = False
        self.said: list[str] = []  # the reports, for the last window
        self.windows: list[str] = []  # those this board made, to end them inside a person's own session

    def window(self, name: str) -> "Window":
        """A scenario's windows: the first is made with its first pane."""
        return Window(self, name)

    def open(self, name: str, title: str) -> tuple[str, str]:
        """A new window named `name` with one pane titled `title`: (window id, the pane's terminal)."""
        exists = self.inside or subprocess.run(["tmux", "has-session", "-t", f"={self.session}"],
                                               capture_output=True).returncode == 0
        verb = (["new-window", "-d", "-t", f"{self.session}:"] if exists else
                ["new-session", "-d", "-s", self.session, "-x", str(WIDTH), "-y", str(HEIGHT)])
        window, pane, terminal = tmux(*verb, "-n", name, "-P", "-F", "#{window_id} #{pane_id} #{pane_tty}",
                                      HOLDER).split()
        self.windows.append(window)
        self.titled(pane, title)
        if not self.announced and not self.inside:
            print(f"watch it live: tmux attach -t {self.session}", file=sys.stderr, flush=True)
            self.announced = True
        return window, terminal

    def split(self, window: str, title: str) -> str:
        """Another pane in `window`, titled `title`, the panes tiled: the pane's terminal."""
        pane, terminal = tmux("split-window", "-d", "-t", window, "-P", "-F", "#{pane_id} #{pane_tty}",
                              HOLDER).split()
        self.titled(pane, title)
        tmux("select-layout", "-t", window, "tiled")
        return terminal

    @staticmethod
    def titled(pane: str, title: str) -> None:
        tmux("select-pane", "-t", pane, "-T", title)
        tmux("set-option", "-w", "-t", pane, "pane-border-status", "top")

    def finish(self, linger: Optional[float] = None) -> None:
        """A last window, "claims", showing what was said (each lab's report, its PASS and FAIL lines); with
        `linger`, the session ends that many seconds later (the tmux server does it: this process may be gone)."""
        if self.said:
            _, terminal = self.open("claims", "the claims")
            show(terminal, "\n".join(self.said) + "\n")
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

    def pane(self, title: str) -> str:
        """A new pane titled `title`: its terminal, for a process's output."""
        if self.current is None or self.panes_here == PANES_PER_WINDOW:
            self.windows += 1
            name = self.name if self.windows == 1 else f"{self.name} ({self.windows})"
            self.current, terminal = self.board.open(name, title)
            self.panes_here = 1
            return terminal
        self.panes_here += 1
        return self.board.split(self.current, title)


def show(terminal: str, text: str) -> None:
    """Write text on a pane's screen."""
    with open(terminal, "w") as screen:
        screen.write(text)
