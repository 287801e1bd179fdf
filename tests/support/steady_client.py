"""A client calling a model in a loop while the site changes under it, as a camera line would.

Shared by the local site's roll tests and the canary's promote/abort tests: it records which
model (sha256) answered each request and every failure, bounded in count and time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests


class SteadyClient:
    """Calls ``call()`` in a loop until stopped or ``max_requests`` answers and failures."""

    def __init__(self, call: Callable[[], requests.Response], max_requests: int = 3000) -> None:
        self.call, self.max = call, max_requests
        self.shas: list[str] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and len(self.shas) + len(self.failures) < self.max:
            try:
                resp = self.call()
                if resp.status_code == 200:
                    self.shas.append(resp.json()["jsonData"]["model"]["sha256"])
                else:
                    self.failures.append(f"{resp.status_code} {resp.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> SteadyClient:
        self.thread.start()
        while not self.shas and not self.failures:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def wait_for_run(self, sha: str, length: int, timeout: float) -> None:
        """Until the last ``length`` answers all came from ``sha``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tail = self.shas[-length:]
            if len(tail) == length and set(tail) == {sha}:
                return
            time.sleep(0.1)
        raise TimeoutError(f"no run of {length} answers from {sha[:7]}: last {[s[:7] for s in self.shas[-20:]]}")
