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
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
                continue
            if resp.status_code != 200:
                self.failures.append(f"{resp.status_code} {resp.text[:200]}")
                continue
            try:  # a 200 that is not a prediction is a failure the test must see, not a dead thread
                self.shas.append(resp.json()["jsonData"]["model"]["sha256"])
            except (ValueError, KeyError, TypeError):
                self.failures.append(f"200 without jsonData.model.sha256: {resp.text[:200]}")

    def __enter__(self) -> SteadyClient:
        self.thread.start()
        self._await(lambda: self.shas or self.failures, "a first answer", timeout=60)
        return self

    def _await(self, condition: Callable[[], object], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.thread.is_alive():
                raise AssertionError(f"the client stopped before {what}: {self.failures[-3:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} in {timeout:g}s; failures: {self.failures[-3:]}")
            time.sleep(0.05)

    def wait_for_answers(self, count: int, timeout: float) -> None:
        """Until at least ``count`` answers arrived."""
        self._await(lambda: len(self.shas) >= count, f"{count} answers", timeout)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the client's request did not end in 60 s"

    def wait_for_run(self, sha: str, length: int, timeout: float) -> None:
        """Until the last ``length`` answers all came from ``sha``."""

        def run() -> bool:
            tail = self.shas[-length:]
            return len(tail) == length and set(tail) == {sha}

        try:
            self._await(run, f"run of {length} answers from {sha[:7]}", timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no run of {length} answers from {sha[:7]}: last {[s[:7] for s in self.shas[-20:]]}"
            ) from None
