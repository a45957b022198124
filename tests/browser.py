"""A real browser for the tests that look at a page: Debian's chromium (./kit test installs it), headless, driven by
Playwright. Playwright's own browser download is not reachable here, so it is pointed at the system's executable.

A module of its own, not tests/helpers.py: importing Playwright takes about 0.4 s, which every test module would pay."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from playwright.sync_api import Browser, sync_playwright

from tests.helpers import require

CHROMIUM = "/usr/bin/chromium"
# No sandbox (the suite may run as root, which chromium's sandbox refuses), and none of the background calls home a
# fresh profile makes: the pages under test are the only thing the browser asks for.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """The browser, closed afterwards; without Debian's chromium the test is skipped (under CI=true failed)."""
    require(Path(CHROMIUM).exists(), "the browser tests need Debian's chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()
