"""Debian's headless ``chromium``, driven over the Chrome DevTools protocol (a websocket).

A real browser loads the page, runs its JavaScript and makes its requests, as a user's
would; the test reads what the page shows from the DOM. ``tox -e e2e`` installs chromium as
root (scripts/host-packages); elsewhere a missing browser skips, naming the package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket


def require_chromium() -> str:
    """The browser's path; a skip naming the package where it is missing (a fail on CI, which installs it)."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: tox -e e2e (scripts/host-packages) should have installed it")
        pytest.skip("needs the Debian package chromium (apt-get install chromium)")
    return path


class Chromium:
    """One headless browser with one page; ``with Chromium(folder) as browser: ...``.

    Every network request the page makes is recorded (``Network.requestWillBeSent``), so a
    test can say that nothing came from off the site. ``--no-proxy-server``: a host proxy in
    the environment must not stand between the browser and the loopback site.
    """

    def __init__(self, folder: Path, timeout: float = 60.0) -> None:
        self.folder = folder
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.ws: websocket.WebSocket | None = None
        self.requested: list[str] = []
        self._next_id = 0

    def __enter__(self) -> Chromium:
        binary = require_chromium()
        self.folder.mkdir(parents=True, exist_ok=True)
        profile = self.folder / "profile"
        args = [
            binary,
            "--headless=new",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--no-proxy-server",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # chromium refuses to run as root with its sandbox
        log = (self.folder / "chromium.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        port_file = profile / "DevToolsActivePort"  # chromium writes its port here once it listens
        self._until(lambda: port_file.exists() and len(port_file.read_text().splitlines()) >= 1, "DevTools port")
        port = int(port_file.read_text().splitlines()[0])
        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        # suppress_origin: chromium refuses DevTools websockets that carry an Origin it was not told of.
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True)
        self.call("Network.enable")
        self.call("Page.enable")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.folder / "chromium.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _until(self, condition, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not condition():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited {self.proc.returncode} waiting for {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium: no {what} in {self.timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; events that arrive meanwhile are recorded. The socket's timeout bounds it."""
        assert self.ws is not None
        self._next_id += 1
        self.ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def open(self, url: str) -> None:
        """Navigate and wait for the page's load event (its scripts have run)."""
        self.call("Page.navigate", url=url)
        self.evaluate(
            "new Promise(done => document.readyState === 'complete'"
            " ? done(true) : window.addEventListener('load', () => done(true)))"
        )

    def evaluate(self, expression: str) -> Any:
        """Run JavaScript in the page, await its promise, and return its value (JSON)."""
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
            timeout=int(self.timeout * 1000),
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"in the page: {details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")
