"""`labs run --tmux` as an instructor shows it to a class: a window per scenario, a titled pane per process, every pane
at least 80 columns wide, no idle shell, the work at the handouts' pace, and a last window of the claims. Each test
runs lab 2 on a tmux server of its own (TMUX_TMPDIR) and reads the windows back as a person attached would see them."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from typing import Iterator

import pytest

from labs.drive.wait import wait_until
from labs.paths import ROOT
from tests.labs.runs import given_broker_env, labs_command

LAB_2_WINDOWS = ["lab2 tasks", "lab2 more-tasks", "claims"]
PANE = "#{window_name}|#{pane_title}|#{pane_width}|#{pane_current_command}"


@pytest.fixture
def tmux_env(broker, tmp_path) -> Iterator[dict]:
    """The suite's broker, and a tmux server of the test's own (killed afterwards)."""
    if not shutil.which("tmux"):
        pytest.fail("tmux is missing: ./kit test installs it")
    env = given_broker_env(broker, TMUX_TMPDIR=str(tmp_path))
    env.pop("TMUX", None)
    yield env
    subprocess.run(["tmux", "kill-server"], env=env, capture_output=True)


def tmux(env: dict, *args: str) -> str:
    return subprocess.run(["tmux", *args], env=env, capture_output=True, text=True).stdout


def panes(env: dict) -> list[dict]:
    """Every pane of the labkit session: its window, title, width, and the program tmux runs in it."""
    rows = [line.split("|", 3) for line in tmux(env, "list-panes", "-s", "-t", "labkit", "-F", PANE).splitlines()]
    return [{"window": w, "title": t, "width": int(width), "command": c} for w, t, width, c in rows]


def screen(env: dict, window: str, title: str) -> str:
    """What the pane titled `title` in `window` shows, its scrollback included."""
    pane = next(line.split()[0] for line in tmux(env, "list-panes", "-t", f"labkit:{window}", "-F",
                                                 "#{pane_id} #{pane_title}").splitlines()
                if line.split(" ", 1)[1] == title)
    return tmux(env, "capture-pane", "-p", "-J", "-S", "-", "-t", pane)


def assert_laid_out_for_a_class(env: dict) -> None:
    windows = tmux(env, "list-windows", "-t", "labkit", "-F", "#{window_name}").splitlines()
    assert windows == LAB_2_WINDOWS, windows
    found = panes(env)
    titles = {window: sorted(p["title"] for p in found if p["window"] == window) for window in windows}
    assert titles == {"lab2 tasks": ["qprocessor.py w1", "qprocessor.py w2", "qprocessor.py w3", "sender.py"],
                      "lab2 more-tasks": ["qprocessor.py w1", "qprocessor.py w2", "sender.py", "sender.py"],
                      "claims": ["the claims"]}, titles
    assert min(p["width"] for p in found) >= 80, [(p["title"], p["width"]) for p in found]
    # No idle shell: each pane only holds its screen open (sleep) for the process the runner started there.
    assert {p["command"] for p in found} == {"sleep"}, [p["command"] for p in found]
    claims = screen(env, "claims", "the claims")
    assert "PASS: round-robin" in claims and "PASS: 1 labs, 0 failed claims" in claims, claims


@pytest.mark.slow(seconds=30)
def test_fast_tmux_run_lays_out_a_window_per_scenario_titled_panes_and_the_claims_then_lingers(tmux_env):
    result = labs_command("run", "2", "--tmux", "--fast", "--tmux-linger", "12", env=tmux_env, timeout=300)
    returned = time.monotonic()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tmux attach -t labkit" in result.stderr
    assert_laid_out_for_a_class(tmux_env)
    for name in ("w1", "w2", "w3"):
        assert "summary: received 3" in screen(tmux_env, "lab2 tasks", f"qprocessor.py {name}")
    assert "sent 9 messages" in screen(tmux_env, "lab2 tasks", "sender.py")
    busy = re.findall(r"busy\s+([\d.]+)s", result.stdout)
    assert busy and max(map(float, busy)) < 3, busy  # the runner's own pace: work a class would not see
    # --tmux-linger 12: the session ends by itself, some 12 seconds after the command returned
    wait_until(lambda: subprocess.run(["tmux", "has-session", "-t", "labkit"], env=tmux_env,
                                      capture_output=True).returncode != 0, 40, "the session to end")
    assert time.monotonic() - returned > 8


@pytest.mark.slow(seconds=45)
def test_at_the_handouts_pace_the_workers_are_still_at_work_seconds_in(tmux_env):
    """One second a character, as the handouts run the worker: lab 2's second scenario sends 6-character messages,
    so its workers are still busy seconds after its window opens, for a person who attaches to see."""
    run = subprocess.Popen([sys.executable, "-m", "labs", "run", "2", "--tmux", "--tmux-linger", "300"], cwd=ROOT,
                           env=tmux_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(p["window"] == "lab2 more-tasks" and p["title"] == "sender.py"
                               for p in panes(tmux_env)), 120, "lab 2's second scenario to send")
        time.sleep(3)
        shown = screen(tmux_env, "lab2 more-tasks", "qprocessor.py w1")
        assert "received" in shown and "summary" not in shown, shown  # at work, not yet done
        stdout, stderr = run.communicate(timeout=240)
    finally:
        run.kill()
    assert run.returncode == 0, stdout + stderr
    assert_laid_out_for_a_class(tmux_env)
    busy = re.findall(r"busy\s+([\d.]+)s", stdout)
    assert max(map(float, busy)) > 10, busy
    # --tmux-linger: the tmux server ends the session itself, later; it is still there now
    assert tmux(tmux_env, "list-windows", "-t", "labkit", "-F", "#{window_name}").splitlines() == LAB_2_WINDOWS


def test_fast_and_linger_go_with_tmux_only(tmux_env):
    for option in (["--fast"], ["--tmux-linger", "5"]):
        result = labs_command("run", "2", *option, env=tmux_env, timeout=60)
        assert result.returncode == 2 and "goes with --tmux" in result.stderr, result.stderr


@pytest.mark.slow(seconds=20)
def test_the_demo_in_tmux_gives_each_of_w3s_restarts_a_pane_and_shows_the_tally(tmux_env):
    """The supervisor starts w3 again after each crash: each start is a pane of its own, so the crash stays on
    screen; the tally is the last window."""
    result = labs_command("demo", "--live-only", "--tmux", "--fast", env=tmux_env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    found = panes(tmux_env)
    titles = {p["title"] for p in found}
    assert {"qprocessor.py w1", "qprocessor.py w2", "sender.py", "qprocessor.py w3 (supervised, start 1)",
            "qprocessor.py w3 (supervised, start 2)", "the claims"} <= titles, (titles, result.stdout[-1500:])
    assert {p["window"] for p in found} >= {"demo", "demo (2)", "claims"}
    assert min(p["width"] for p in found) >= 80
    tally = screen(tmux_env, "claims", "the claims")
    assert "Tally from the workers' event logs" in tally and "PASS: with --acknowledge, 0 of 18" in tally, tally
