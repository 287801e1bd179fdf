"""One real seldon-core-microservice running our model class, as a child process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from .venvs import ROOT, server_python

INTERFACE = "defect_server.seldon_model.DefectModel"
GUARD = Path(__file__).resolve().parent / "guard.py"
LAUNCHER = Path(__file__).resolve().parent / "seldon_launcher.py"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def graph_parameters(values: dict[str, object]) -> str:
    """Seldon's PREDICTIVE_UNIT_PARAMETERS format."""
    kinds = {str: "STRING", int: "INT", float: "FLOAT", bool: "BOOL"}
    return json.dumps([{"name": k, "value": str(v), "type": kinds[type(v)]} for k, v in values.items()])


class NotReady(RuntimeError):
    """The server is alive but refuses to serve; the message is its own reason."""


@dataclass
class ServerProcess:
    """A model server on loopback ports; ``url`` is its REST root."""

    params: dict[str, object]
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    python: Path | None = None  # the server venv's interpreter; default: scripts/server-venv's
    # The SeldonDeployment's annotations, as the pod's /etc/podinfo/annotations gives them to the
    # wrapper (e.g. seldon.io/rest-timeout: gunicorn's worker timeout); see seldon_launcher.py.
    annotations: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> ServerProcess:
        python = self.python or server_python()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "models" / "server"),
            "GUNICORN_WORKERS": str(self.workers),
            "INCLUDE_METRICS_IN_CLIENT_RESPONSE": "false",
            **self.env,
        }
        wrapper = [str(python.parent / "seldon-core-microservice")]
        if self.annotations:
            wrapper = [str(python), str(LAUNCHER), str(self._annotations_file())]
        cmd = [
            str(python),
            str(GUARD),
            *wrapper,
            INTERFACE,
            "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port),
            "--metrics-port", str(self.metrics_port),
            "--workers", str(self.workers),
            "--parameters", graph_parameters(self.params),
        ]  # fmt: skip
        # The guard owns the server's process group: stopping it, or killing the site, takes down
        # gunicorn's workers and the gRPC/metrics children too.
        with open(self.log_path or os.devnull, "a") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def _annotations_file(self) -> Path:
        """The downward API's format: one ``key="value"`` per line."""
        folder = self.log_path.parent if self.log_path else Path(tempfile.mkdtemp(prefix="podinfo-"))
        path = folder / f"annotations-{self.http_port}"
        path.write_text("".join(f"{key}={json.dumps(value)}\n" for key, value in self.annotations.items()))
        return path

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_alive(self, timeout: float = 60.0) -> None:
        """Until the wrapper answers /health/ping (the model may or may not be ready)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise RuntimeError(f"model server exited with {code}: {self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health/ping", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"model server not up after {timeout:g}s: {self.log_tail()}")

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason) from the server's own health check."""
        try:
            resp = requests.get(f"{self.url}/health/status", timeout=5)
        except requests.RequestException as exc:
            return False, f"no answer ({type(exc).__name__})"
        if resp.status_code == 200:
            return True, "ready"
        try:
            return False, resp.json()["status"]["info"]
        except (ValueError, KeyError, TypeError):
            return False, f"HTTP {resp.status_code}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until verified and loaded; a model the server refused raises NotReady at once."""
        self.wait_alive(timeout)
        deadline = time.monotonic() + timeout
        reason = ""
        while time.monotonic() < deadline:
            ready, reason = self.readiness()
            if ready:
                return
            if reason.startswith("not ready:") and "not loaded yet" not in reason:
                raise NotReady(reason.removeprefix("not ready: "))
            if not self.alive():
                raise RuntimeError(f"model server exited: {self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"model server not ready after {timeout:g}s: {reason}")

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-chars:]
        return "(no log)"

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM via the guard (gunicorn finishes in-flight requests), SIGKILL after ``grace``.

        Whatever happened to the guard (it may have been killed on its own), the server's
        process group is swept at the end: nothing may keep the ports a restart needs.
        """
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.terminate()  # the guard's second SIGTERM kills the group
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the guard led the group: its pid is the group's id
        except (ProcessLookupError, PermissionError):
            pass  # nothing left

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
