"""The model over HTTP: what is transient is retried with backoff, what is final is said once.

Three outcomes for a photo, because they call for different actions:

- the model is *unavailable* (connection refused or reset, connect timeout, 502/503/504, 404
  because the route is gone during a redeploy, 429): not the photo's fault, so it is retried
  with backoff for as long as it takes; the photo waits in the drop folder, nothing is lost;
- the model *failed on this photo* (500, read timeout, an answer that is not JSON): retried
  ``attempts`` times, then final;
- the model *refused* the photo (any other 4xx: corrupt, too large...): final at once.

Retries and backoff come from tenacity; the sleep between tries wakes early on shutdown.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from manifests import prefix  # the charm's own (inspection/__init__ puts it on the path)

UNAVAILABLE_STATUS = {404, 429, 502, 503, 504}


class Refused(Exception):
    """Final for this photo: the reason goes to the sidecar file and the failure message."""


class Transient(Exception):
    """Worth another try."""


class Unavailable(Transient):
    """The model cannot answer anyone right now."""


class PhotoFailed(Transient):
    """The model failed on this photo; it may succeed on a retry."""


class ShuttingDown(Exception):
    """Raised out of a backoff wait when the service is stopping."""


class StartupError(Exception):
    """The model cannot be used at all: wrong URL, wrong name, unreachable. Printed as is."""


def _reason(resp: requests.Response) -> str:
    """Seldon's error format puts the server's words in status.info."""
    try:
        info = (resp.json().get("status") or {}).get("info")
    except (ValueError, AttributeError):
        info = None
    return f"HTTP {resp.status_code}: {info or resp.text[:200].strip() or resp.reason}"


class ModelClient:
    def __init__(
        self,
        url: str,
        model: str,
        timeout: float,
        attempts: int,
        log: Callable[[str], None],
        stopping: threading.Event,
        max_backoff: float = 30.0,
    ) -> None:
        self.base = f"{url}{prefix(model)}".rstrip("/")  # the charm's route (manifests.prefix)
        self.model, self.timeout, self.attempts = model, timeout, attempts
        self.log, self.stopping, self.max_backoff = log, stopping, max_backoff
        self.session = requests.Session()

    def check(self) -> None:
        """Before watching: is there a model of that name at that URL? GET /api/v1.0/metadata is
        served by the Seldon Python wrapper itself (SeldonIO/seldon-core v1.17.1,
        python/seldon_core/wrapper.py), which the pod's Service reaches directly (no executor:
        seldon.io/no-engine) and the local site runs, through the gateway's /model/<name>/ rewrite."""
        url = f"{self.base}/api/v1.0/metadata"
        try:
            resp = self.session.get(url, timeout=self.timeout)
        except requests.ConnectionError as exc:
            raise StartupError(f"model unreachable at {url}: {_short(exc)}") from None
        except requests.Timeout:
            raise StartupError(f"model unreachable at {url}: no answer in {self.timeout:g} s") from None
        if resp.status_code == 404:
            raise StartupError(f"no model {self.model!r} at {url} (HTTP 404): check --url and --model") from None
        if resp.status_code != 200:
            raise StartupError(f"model at {url} is not ready: {_reason(resp)}")

    def predict(self, data: bytes, image: str) -> dict:
        """The model's ``jsonData`` for this photo; raises Refused (final) or ShuttingDown."""
        retrying = Retrying(
            retry=retry_if_exception_type(Transient),
            stop=self._give_up,
            wait=wait_exponential(multiplier=0.5, max=self.max_backoff),
            sleep=self._sleep,
            before_sleep=lambda state: self._log_retry(state, image),
            reraise=True,
        )
        body = {"binData": base64.b64encode(data).decode()}
        try:
            return retrying(self._once, body)
        except PhotoFailed as exc:
            raise Refused(f"{exc} (after {self.attempts} attempts)") from None

    def _once(self, body: dict) -> dict:
        try:
            resp = self.session.post(f"{self.base}/api/v0.1/predictions", json=body, timeout=self.timeout)
        except requests.ConnectTimeout:
            raise Unavailable(f"no connection in {self.timeout:g} s") from None
        except requests.ConnectionError as exc:
            raise Unavailable(_short(exc)) from None
        except requests.Timeout:
            raise PhotoFailed(f"no answer in {self.timeout:g} s") from None
        if resp.status_code in UNAVAILABLE_STATUS:
            raise Unavailable(_reason(resp))
        if resp.status_code >= 500:
            raise PhotoFailed(_reason(resp))
        if resp.status_code != 200:
            raise Refused(_reason(resp))
        try:
            return resp.json()["jsonData"]
        except (ValueError, KeyError, TypeError):
            raise PhotoFailed(f"HTTP 200 but not a prediction: {resp.text[:200]!r}") from None

    def _give_up(self, state: RetryCallState) -> bool:
        return isinstance(state.outcome.exception(), PhotoFailed) and state.attempt_number >= self.attempts

    def _sleep(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise ShuttingDown()

    def _log_retry(self, state: RetryCallState, image: str) -> None:
        exc = state.outcome.exception()
        what = "model unavailable" if isinstance(exc, Unavailable) else "model failed"
        wait = state.next_action.sleep if state.next_action else 0
        self.log(f"{image}: {what} ({exc}); try {state.attempt_number + 1} in {wait:.1f} s")


def _short(exc: Exception) -> str:
    """requests' connection errors nest urllib3's; the innermost words are the useful ones."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if marker in text:
            return marker.lower()
    return text[-200:]
