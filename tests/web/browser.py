"""Driving Debian's headless Chromium with selenium for the browser client's tests (docs/web.md, docs/testing.md).

Nothing is downloaded at run time: the driver is /usr/bin/chromedriver, the browser /usr/bin/chromium, media devices
are Chromium's fake camera and microphone. Every wait polls the page a bounded number of times.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WEB = REPO / "web"
# Screenshots go next to the test's other files; HOMING_SCREENSHOTS=docs/img refreshes the images docs/web.md shows
# (a test run leaves the checkout as it was).
SCREENSHOTS_ENV = "HOMING_SCREENSHOTS"
POLL_S = 0.1


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        return "Debian chromium and chromium-driver are not installed (tests/run installs them as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not (WEB / "node_modules" / "@msgpack" / "msgpack").is_dir():
        return "web/node_modules is missing: run `npm ci` in web/"
    return None


def require_browser() -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)


class Page:
    """One browser (its own profile directory) showing the call page."""

    def __init__(self, driver: Any, name: str, tmp: Path) -> None:
        self.driver = driver
        self.name = name
        self.tmp = tmp

    def open(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def view(self) -> dict[str, Any]:
        """The page's window.homing state (connection, call state, reason, node)."""
        raw = self.js(
            "const h = window.homing; if (!h) return null;"
            " return JSON.stringify({conn: h.conn, connDetail: h.connDetail, node: h.node, callState: h.callState,"
            " callDetail: h.callDetail, callReason: h.callReason, error: h.error, id: h.id, history: h.history,"
            " refused: h.refused})"
        )
        return json.loads(raw) if raw else {}

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        tries = int(timeout / POLL_S) + 1
        last: dict[str, Any] = {}
        for _ in range(tries):
            last = self.view()
            if last and pred(last):
                return last
            time.sleep(POLL_S)
        raise AssertionError(f"{self.name}: timed out after {timeout} s waiting for {what}; page state: {last}")

    def click(self, element_id: str) -> None:
        self.js(f"document.getElementById({json.dumps(element_id)}).click()")

    def click_css(self, selector: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).click()")

    def stats(self) -> dict[str, Any]:
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.homing.stats().then((s) => done(JSON.stringify(s)),"
            " (e) => done(JSON.stringify({error: String(e)})));"
        )
        return dict(json.loads(result) or {})

    def screenshot(self, name: str) -> Path:
        chosen = os.environ.get(SCREENSHOTS_ENV)
        folder = (REPO / chosen) if chosen else self.tmp
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        self.driver.save_screenshot(str(path))
        return path


@contextmanager
def chromium(tmp: Path, name: str, *extra_flags: str) -> Iterator[Page]:
    """A fresh headless Chromium (own --user-data-dir) with fake media; always quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp / f"chromium-{name}"
    profile.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1000,760",
        f"--user-data-dir={profile}",
        *extra_flags,
    ):
        opts.add_argument(flag)
    service = Service(CHROMEDRIVER, log_output=str(tmp / f"chromedriver-{name}.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(20)
    try:
        yield Page(driver, name, tmp)
    finally:
        try:
            logs = driver.get_log("browser")  # type: ignore[no-untyped-call]
            (tmp / f"console-{name}.log").write_text("\n".join(str(x) for x in logs))
        except Exception:
            pass
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
