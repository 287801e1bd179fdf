"""A real Prometheus and promtool (Debian package ``prometheus``, 2.42) for the dashboard and alert tests.

``consumer_job`` turns the charm's scrape job into what Prometheus runs, as the COS consumer
(``MetricsEndpointConsumer`` of ``prometheus_scrape``) does: the job name prefixed with the
topology identifier, the juju_* labels on every static config, ``instance`` relabelled from them.
``Prometheus`` runs the server on a free loopback port with its own TSDB folder and stops it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from .server_process import free_port

PACKAGE = "prometheus"


def require(command: str) -> str:
    """tox -e e2e installs it as root (scripts/host-packages); elsewhere a missing binary skips, naming it."""
    path = shutil.which(command)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{command} is not installed: tox -e e2e (scripts/host-packages) should have installed it")
        pytest.skip(f"needs {command} from the Debian package {PACKAGE} (apt-get install {PACKAGE})")
    return path


def topology_labels(topo: dict[str, str]) -> dict[str, str]:
    """The juju_* labels the consumer puts on every series of an application (no juju_unit: pods are not units)."""
    return {
        "juju_model": topo["model"],
        "juju_model_uuid": topo["model_uuid"],
        "juju_application": topo["application"],
        "juju_charm": topo["charm_name"],
    }


def consumer_job(job: dict[str, Any], topo: dict[str, str]) -> dict[str, Any]:
    """The charm's scrape job as the COS consumer hands it to Prometheus."""
    prefix = f"juju_{topo['model']}_{topo['model_uuid'][:7]}_{topo['application']}_prometheus_scrape"
    return {
        **job,
        "job_name": f"{prefix}_{job['job_name']}",
        "static_configs": [
            {"targets": c["targets"], "labels": {**c.get("labels", {}), **topology_labels(topo)}}
            for c in job["static_configs"]
        ],
        "relabel_configs": [
            *job.get("relabel_configs", []),
            {
                "source_labels": ["juju_model", "juju_model_uuid", "juju_application"],
                "separator": "_",
                "target_label": "instance",
                "regex": "(.*)",
            },
        ],
    }


@dataclass
class Prometheus:
    folder: Path
    scrape_configs: list[dict[str, Any]]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        binary = require("prometheus")
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": self.scrape_configs,
                }
            )
        )
        self.log = self.folder / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--storage.tsdb.path={self.folder / 'data'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def wait(self, what: str, condition, timeout: float = 60.0) -> Any:
        """Poll ``condition()`` until it returns something truthy; fail naming ``what`` at the deadline."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"prometheus exited ({self.proc.returncode}) waiting for {what}:\n{self.log_tail()}")
            try:
                result = condition()
            except requests.RequestException as exc:
                result, last = None, exc
            if result:
                return result
            time.sleep(0.2)
        pytest.fail(f"no {what} within {timeout:.0f} s (last: {last!r}):\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait("/-/ready", lambda: requests.get(self.url + "/-/ready", timeout=2).status_code == 200, timeout)

    def targets(self) -> list[dict[str, Any]]:
        return requests.get(self.url + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]

    def wait_scraped(self, job: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Every target of ``job`` scraped successfully at least once."""

        def all_up():
            mine = [t for t in self.targets() if t["labels"].get("job") == job]
            return mine if mine and all(t["health"] == "up" for t in mine) else None

        return self.wait(f"first successful scrape of job {job}", all_up, timeout)

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", f"{expr}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]["result"]

    def stop(self, grace: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
