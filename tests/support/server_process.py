"""Run the real seldon-core-microservice with our model class, in the server's own venv."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
INTERFACE = "defect_server.seldon_model.DefectModel"


def server_python() -> Path:
    """The server venv's python: $DEFECT_SERVER_VENV (tox) or .venv/server, created if needed."""
    target = Path(os.environ.get("DEFECT_SERVER_VENV") or ROOT / ".venv" / "server")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "server-venv"), str(target)],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graph_parameters(values: dict[str, object]) -> str:
    """Seldon's PREDICTIVE_UNIT_PARAMETERS format."""
    kinds = {str: "STRING", int: "INT", float: "FLOAT", bool: "BOOL"}
    return json.dumps([{"name": k, "value": str(v), "type": kinds[type(v)]} for k, v in values.items()])


@dataclass
class ServerProcess:
    """One seldon-core-microservice; ``url`` is its REST root."""

    params: dict[str, object]
    workers: int = 1
    log_path: Path | None = None
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> ServerProcess:
        python = server_python()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "models" / "server"),
            "GUNICORN_WORKERS": str(self.workers),
            "INCLUDE_METRICS_IN_CLIENT_RESPONSE": "false",
        }
        cmd = [
            str(python.parent / "seldon-core-microservice"),
            INTERFACE,
            "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port),
            "--metrics-port", str(self.metrics_port),
            "--workers", str(self.workers),
            "--parameters", graph_parameters(self.params),
        ]  # fmt: skip
        log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_alive(self, timeout: float = 60.0) -> None:
        """Until the wrapper answers /health/ping (the model may or may not be ready)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health/ping", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not up after {timeout}s: {self.log_tail()}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_alive(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if requests.get(f"{self.url}/health/status", timeout=5).status_code == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"server alive but not ready: {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text()[-chars:]
        return "(no log)"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
