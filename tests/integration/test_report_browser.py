"""RUN/report.html in a real headless browser (Debian's chromium; .ci/run installs it).

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages ending
in NUL on file descriptors 3 and 4), so no websocket library or network port is needed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH: install Debian's chromium (apt-get install -y chromium) "
                             "to test the HTML report in a real browser")]
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe", "--window-size=1280,900"]
ERROR_EVENTS = ("Runtime.exceptionThrown", "Runtime.consoleAPICalled", "Log.entryAdded")


def _high_fd(fd: int) -> int:
    new = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)  # above 4, so moving the pipe to fds 3 and 4 clobbers nothing
    os.close(fd)
    return new


class Chromium:
    """Just enough of a DevTools client: send a command, collect events, wait for one."""

    def __init__(self, profile: Path, timeout: float = 60.0):
        self.timeout, self.events, self._id, self._buf = timeout, [], 0, b""
        cmd_r, self._cmd_w = os.pipe()
        self._resp_r, resp_w = os.pipe()
        cmd_r, resp_w = _high_fd(cmd_r), _high_fd(resp_w)
        shell = f'exec "$0" "$@" 3<&{cmd_r} 4>&{resp_w} {cmd_r}<&- {resp_w}>&-'
        self.proc = subprocess.Popen(["bash", "-c", shell, CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                                      "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, pass_fds=(cmd_r, resp_w))
        os.close(cmd_r)
        os.close(resp_w)
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable", self.session)

    def _next(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._resp_r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._resp_r, 1 << 20)
            if not chunk:
                raise EOFError(f"chromium exited (code {self.proc.poll()})")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._next(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def load(self, path: Path) -> None:
        self.events.clear()
        self.send("Page.navigate", self.session, url=path.resolve().as_uri())
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._next(deadline))

    def js(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", self.session, expression=expression, returnByValue=True)
        return res["result"].get("value")

    def errors(self) -> list[dict[str, Any]]:
        found = []
        for e in self.events:
            p = e.get("params", {})
            if (e.get("method") == "Runtime.exceptionThrown"
                    or (e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"))
                    or (e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error")):
                found.append(e)
        return found

    def screenshot(self, path: Path) -> None:
        size = self.send("Page.getLayoutMetrics", self.session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.send("Page.captureScreenshot", self.session, format="png", captureBeyondViewport=True, clip=clip)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._resp_r)


# what does not fit a 1280 px window: the page scrolling sideways, an element reaching past the body, a cell
# whose text is cut (scrollWidth > clientWidth)
FITS = """(() => {
  const out = [], page = document.documentElement, body = document.body.getBoundingClientRect();
  if (page.scrollWidth > page.clientWidth) out.push(`page scrolls sideways: ${page.scrollWidth} > ${page.clientWidth}`);
  for (const e of document.querySelectorAll('table, img, pre, p, h1, h2, nav, ul')) {
    const r = e.getBoundingClientRect();
    if (r.right > body.right + 1) out.push(`${e.tagName}#${e.id} ends at ${r.right} > ${body.right}`);
  }
  for (const c of document.querySelectorAll('th, td'))
    if (c.scrollWidth > c.clientWidth + 1) out.push(`cut: ${c.textContent.slice(0, 40)}`);
  return out;
})()"""


@pytest.fixture
def browser(tmp_path):
    b = Chromium(tmp_path / "chromium-profile")
    yield b
    b.close()


@pytest.fixture
def trained_run(tmp_path):
    from lstmcast.config import validate_config
    from lstmcast.workflow import train_run
    from tests.conftest import seasonal_frame, small_config

    torch.set_num_threads(1)
    data = tmp_path / "series.csv"
    seasonal_frame(n=400).to_csv(data, index=False)
    # intervals: the widest metrics table (11 columns), which overflowed the page at 1280 px (issue 22)
    cfg = validate_config(small_config(data={"path": str(data)}, train={"max_epochs": 3, "threads": 1},
                                       model={"num_layers": 2, "hidden_size": 8, "levels": [80, 95]}))
    run = tmp_path / "run"
    train_run(cfg, run)
    return run


def test_report_renders_in_chromium_without_errors(trained_run, browser, tmp_path):
    run = trained_run
    assert (run / "report.html").is_file()  # written by train itself
    browser.load(run / "report.html")
    assert browser.errors() == []
    images = browser.js("[...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    assert [alt for alt, *_ in images] == ["training and validation loss per epoch",
                                           "history, forecast and backtest windows",
                                           "gate and hidden-state statistics over epochs"]
    assert all(complete and w > 100 and h > 100 for _, complete, w, h in images), images
    rows = browser.js("""[...document.querySelectorAll('#metrics-table tbody tr')].map(tr =>
        [...tr.cells].map(td => [td.textContent, td.dataset.value || null]))""")
    head = browser.js("[...document.querySelectorAll('#metrics-table thead th')].map(th => th.textContent)")
    metrics = json.loads((run / "metrics.json").read_text())
    assert {r[0][0] for r in rows} == set(metrics) == {"model", "naive", "seasonal_naive"}
    for row in rows:
        method = row[0][0]
        for name, (text, exact) in zip(head[1:], row[1:]):
            name = name.removesuffix(" (%)")  # sMAPE (%)
            if exact is None:  # naive has no intervals: an empty cell
                assert name not in metrics[method] and text == ""
                continue
            assert float(exact) == metrics[method][name]
            assert float(text) == pytest.approx(metrics[method][name], rel=1e-3)
    assert browser.js("document.querySelectorAll('#probe-table tbody tr').length") == 2  # two LSTM layers
    assert "hidden_size: 8" in browser.js("document.querySelector('#config pre').textContent")
    assert "coverage_95" in head and "sMAPE (%)" in head
    assert browser.js("window.innerWidth") == 1280
    assert browser.js(FITS) == []  # nothing wider than the page, no cell cutting its text
    browser.screenshot(run / "report.png")
    shot = (run / "report.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(shot[16:20], "big") >= 1000  # width in IHDR

    # the harness itself sees a broken page: a thrown error, a console error and an image that fails to load
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="missing.png">'
                   "<script>console.error('oops'); throw new Error('boom')</script></body></html>")
    browser.load(bad)
    kinds = {e["method"] for e in browser.errors()}
    assert {"Runtime.exceptionThrown", "Runtime.consoleAPICalled"} <= kinds
    assert browser.js("[...document.images].map(i => i.naturalWidth)") == [0]
