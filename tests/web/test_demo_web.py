"""`homing demo --web`: the printed links really let one person call themselves between two browser tabs."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, homing_cmd, homing_env
from tests.web.browser import chromium, require_browser


@pytest.mark.timeout(120)
def test_demo_web_links_call_each_other(tmp_path: Path) -> None:
    require_browser()
    proc = subprocess.Popen(homing_cmd("demo", "--web"), env=homing_env(), cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        links: dict[str, str] = {}
        deadline = time.monotonic() + 40
        while len(links) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.match(r"\s+(alice|bob)\s+\(homed on node-\d\): (http://127\.0\.0\.1:\d+/app/\S+)", line)
            if m:
                links[m[1]] = m[2]
        assert set(links) == {"alice", "bob"}, links
        with chromium(tmp_path, "demo-alice") as a, chromium(tmp_path, "demo-bob") as b:
            a.open(links["alice"])
            b.open(links["bob"])
            for page in (a, b):
                page.wait(lambda v: v["conn"] == "connected", 20, "connected")
            bob_id = b.view()["id"]
            a.click_css(f'li[data-id="{bob_id}"] .call-audio')
            b.wait(lambda v: v["callState"] == "incoming", 15, "ringing")
            b.click("accept")
            for page in (a, b):
                page.wait(lambda v: v["callState"] == "connected", 30, "connected call")
            b.click("hangup")
            a.wait(lambda v: v["callState"] == "ended" and v["callReason"] == "hangup", 15, "ended")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
