"""The local site's gateway: one real Envoy (the proxy inside Istio's ingress gateway).

Listener, routes and clusters come from files (path-based xDS: LDS, RDS, CDS) that are replaced
atomically, so a roll changes a cluster's endpoint and a canary its weights without restarting
Envoy; ``apply`` returns once Envoy's admin API shows the new routes and endpoints live.

The routes are a separate RouteConfiguration (RDS), as Istio's gateway gets them from istiod,
not inline in the listener: a changed route then applies to the next request, also on an open
connection, and the listener never drains. With the routes inline, every route change replaced
the listener; Envoy 1.36 updates such a listener's filter chains in place, but its admin API
went on reporting the first version_info, so a caller could not tell when a change was live.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from .model_server import free_port
from .process import die_with_parent

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # the gateway's own body limit (413 above it)
# Below gunicorn's 2 s keep-alive: Envoy drops an idle upstream connection before the server does,
# so a request is never sent down a connection the server is closing.
UPSTREAM_IDLE_TIMEOUT = "1s"


ROUTE_CONFIG = "local_site"


def route_configuration(routes: list[dict[str, Any]]) -> dict[str, Any]:
    """What the listener's RDS subscription serves: every model's route, on any host."""
    return {
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": ROUTE_CONFIG,
        "virtual_hosts": [{"name": "gateway", "domains": ["*"], "routes": routes}],
    }


def watched_file(path: Path) -> dict[str, Any]:
    """A path-based xDS source, reloaded when a file is moved into its directory."""
    return {
        "path_config_source": {"path": str(path), "watched_directory": {"path": str(path.parent)}},
        "resource_api_version": "V3",
    }


def listener(host: str, port: int, rds_path: Path) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": "gateway",
        "address": {"socket_address": {"address": host, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": HCM,
                            "stat_prefix": "gateway",
                            "codec_type": "AUTO",
                            # Istio's default path normalisation (BASE): /a/../b is /b before matching.
                            "normalize_path": True,
                            "merge_slashes": False,
                            "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
                            "rds": {"route_config_name": ROUTE_CONFIG, "config_source": watched_file(rds_path)},
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.buffer",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                                        "max_request_bytes": MAX_REQUEST_BYTES,
                                    },
                                },
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                    },
                                },
                            ],
                        },
                    }
                ]
            }
        ],
    }


# A port on 127.0.0.1 (the local site), or (address, port); None: no Ready endpoint, as a Service
# whose pods are not Ready (Envoy answers 503 "no healthy upstream", as the Istio gateway does).
Endpoint = int | tuple[str, int] | None


def _address(endpoint: int | tuple[str, int]) -> tuple[str, int]:
    return endpoint if isinstance(endpoint, tuple) else ("127.0.0.1", endpoint)


def _live_addresses(endpoint: Endpoint) -> set[tuple[str, int]]:
    """The (address, port) Envoy should list for a cluster: none for one without a Ready endpoint."""
    return set() if endpoint is None else {_address(endpoint)}


def cluster(name: str, endpoint: Endpoint) -> dict[str, Any]:
    """One upstream: a local server's port, or a Kubernetes Service's address (tox -e cluster)."""
    if endpoint is None:
        lb_endpoints = []
    else:
        address, port = _address(endpoint)
        lb_endpoints = [{"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}]
    return {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": lb_endpoints}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": UPSTREAM_IDLE_TIMEOUT},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }


class Envoy:
    """An Envoy process configured from files in ``state_dir``."""

    def __init__(self, state_dir: Path, binary: Path, log_path: Path) -> None:
        self.dir = state_dir
        self.binary = binary
        self.log_path = log_path
        self.admin_port = free_port()
        self.version = 0
        self._clusters: dict[str, Endpoint] = {}
        self._listener: dict[str, Any] | None = None
        self._routes: dict[str, Any] | None = None
        self.proc: subprocess.Popen | None = None

    def _write(self, name: str, resources: list[dict[str, Any]]) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps({"version_info": str(self.version), "resources": resources}))
        os.replace(tmp, self.dir / name)  # atomic: Envoy sees the whole file or none of it

    def apply(
        self,
        host: str,
        port: int,
        routes: list[dict[str, Any]],
        clusters: dict[str, Endpoint],
        timeout: float = 30.0,
    ) -> None:
        """Write what changed (clusters first, then routes); return once Envoy serves exactly that.

        Envoy keeps the old version_info on a resource whose content did not change, so
        readiness is judged by content: each cluster's endpoint, and the route configuration's
        version only when the routes were rewritten.
        """
        dropped = {name: p for name, p in self._clusters.items() if name not in clusters}
        if dropped and self.proc is not None:
            # Routes first, clusters after: a route must never name a cluster Envoy no longer has
            # (a canary going away: its share moves to the stable model, then its cluster goes).
            self.apply(host, port, routes, {**dropped, **clusters}, timeout)
        self.version += 1
        if clusters != self._clusters:
            self._write("cds.json", [cluster(name, p) for name, p in sorted(clusters.items())])
            self._clusters = dict(clusters)
        routes_version = None
        new_routes = route_configuration(routes)
        if new_routes != self._routes:
            self._write("rds.json", [new_routes])
            self._routes = new_routes
            routes_version = str(self.version)
        new_listener = listener(host, port, self.dir / "rds.json")
        if new_listener != self._listener:
            self._write("lds.json", [new_listener])
            self._listener = new_listener
        if self.proc is None:
            self._start()
        self._wait_live(clusters, routes_version, timeout)

    def _start(self) -> None:
        bootstrap = {
            "node": {"id": "local-site", "cluster": "istio-ingressgateway"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "dynamic_resources": {
                "lds_config": watched_file(self.dir / "lds.json"),
                "cds_config": watched_file(self.dir / "cds.json"),
            },
        }
        path = self.dir / "bootstrap.yaml"
        path.write_text(yaml.safe_dump(bootstrap))
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "-c",
                    str(path),
                    "--disable-hot-restart",
                    "--log-level",
                    "warn",
                    "--drain-time-s",
                    "3",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LOCAL_SITE_STATE": str(self.dir)},
                preexec_fn=die_with_parent,
            )

    def _wait_live(self, clusters: dict[str, Endpoint], routes_version: str | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        admin = f"http://127.0.0.1:{self.admin_port}"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                live = _endpoints(requests.get(f"{admin}/clusters?format=json", timeout=2).json())
                if all(live.get(name) == _live_addresses(e) for name, e in clusters.items()):
                    listening = requests.get(f"{admin}/listeners?format=json", timeout=2).json()
                    if listening.get("listener_statuses"):
                        if routes_version is None:
                            return
                        dump = requests.get(f"{admin}/config_dump?resource=dynamic_route_configs", timeout=2).json()
                        if _route_versions(dump) == {routes_version}:
                            return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"envoy did not apply the new routes in {timeout:g}s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _endpoints(clusters_json: dict[str, Any]) -> dict[str, set[tuple[str, int]]]:
    """Cluster name -> the (address, port) of its live hosts, from /clusters?format=json."""
    out: dict[str, set[tuple[str, int]]] = {}
    for status in clusters_json.get("cluster_statuses", []):
        sockets = [h["address"]["socket_address"] for h in status.get("host_statuses", [])]
        out[status["name"]] = {(a["address"], a["port_value"]) for a in sockets}
    return out


def _route_versions(dump: dict[str, Any]) -> set[str]:
    """version_info of the route configurations the listener's RDS subscription holds."""
    return {rc.get("version_info") for rc in dump.get("configs", [])}
