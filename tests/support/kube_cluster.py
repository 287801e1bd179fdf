"""A real Kubernetes control plane on this machine, as controller-runtime's envtest runs one.

etcd, kube-apiserver (RBAC, service-account tokens, its own certificates), kube-controller-manager
and kube-scheduler run as processes of this test run, each with its own log; Seldon Core's operator
runs beside them with its validating webhook registered. The flags follow MicroK8s 1.28's own
(canonical/microk8s@1.28 microk8s-resources/default-args/*), with RBAC on as `microk8s enable rbac`
sets it (--authorization-mode=RBAC,Node).

What is not MicroK8s here: etcd instead of k8s-dqlite (both speak the etcd3 API to the API server)
and no EventRateLimit admission config. The node (kubelet, kube-proxy, containerd) is
support/kube_node.py.

Everything lives under one folder; ``stop()`` ends every process group and removes it. A process
that dies makes ``check()`` raise with the tail of its log.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support import kube_pki

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "tests" / "data" / "crds"
CRD_FILES = ("seldondeployments.machinelearning.seldon.io.yaml", "istio-1.17.3.yaml")
SERVICE_CIDR = "10.152.183.0/24"  # microk8s@1.28 default-args/kube-apiserver
NODE_NAME = "edge-node"
NAMESPACE = "kubeflow"  # the Juju model the bundle is deployed into
GATEWAY = "kubeflow-gateway"  # istio-gateway's Gateway in that model (istio-operators track/1.17)
SELDON_ENV = ROOT / "tests" / "cluster" / "seldon-operator-env.yaml"
WEBHOOK_PATH = "/validate-machinelearning-seldon-io-v1-seldondeployment"


class ProcessDied(Exception):
    """A control-plane process exited; the message carries its command and log tail."""


class Timeout(Exception):
    """A condition was not met before its deadline."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.2,
    check: Callable[[], None] | None = None,
) -> Any:
    """Poll ``condition`` until it returns something truthy; ``check`` (a crash check) runs each time."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if check:
            check()
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - the condition's own failures mean "not yet"
            last_error = exc
        time.sleep(interval)
    raise Timeout(f"{what}: not within {timeout:.0f} s" + (f" (last error: {last_error})" if last_error else ""))


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 10) -> None:
        if not self.alive():
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


@dataclass
class ControlPlane:
    """Start with ``start()``; the admin's client is ``api()``; always ``stop()``."""

    workdir: Path
    binaries: dict[str, Path]
    node_cpu: str  # the reference box's CPUs and MemTotal: the kubelet reserves what this machine
    node_memory: str  # has beyond them (support/kube_node.py)
    procs: list[Proc] = field(default_factory=list)
    url: str = ""

    # --- processes -----------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends it and its children
                env={**os.environ, **(env or {})},
                cwd=self.workdir,
            )
        proc = Proc(name, argv, log, popen)
        self.procs.append(proc)
        return proc

    def check(self) -> None:
        """Raise ProcessDied for the first process that is no longer running."""
        for proc in self.procs:
            if not proc.alive():
                raise ProcessDied(
                    f"{proc.name} exited with {proc.popen.returncode}: {' '.join(proc.argv[:1])}\n"
                    f"--- last lines of {proc.log} ---\n{proc.tail()}"
                )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    # --- start ---------------------------------------------------------------------------

    def start(self, crds: bool = True) -> None:
        """etcd and the API server; with ``crds`` also the controllers, the scheduler and the CRDs.

        The Node is registered by a real kubelet (support/kube_node.py), started after this.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = self.workdir / "pki"
        self.ca = kube_pki.Authority(pki)
        sa = kube_pki.service_account_keys(pki)
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        serving = self.ca.issue(
            "apiserver",
            "kube-apiserver",
            hosts=("127.0.0.1", "localhost", "10.152.183.1", "kubernetes", "kubernetes.default.svc"),
            client=False,
            server=True,
        )
        kubelet_client = self.ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
        self._etcd()
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={self.ca.cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC,Node",  # microk8s enable rbac (addons/rbac/enable)
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                f"--kubelet-certificate-authority={self.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--allow-privileged=true",
                "--event-ttl=5m",
                "--profiling=false",
            ],
        )
        self.admin_kubeconfig = self.kubeconfig("admin", self.ca.issue("admin", "edge-admin", "system:masters"))
        wait_for(self._ready, 90, "kube-apiserver /readyz", check=self.check)
        if not crds:
            return
        for name, user in (
            ("kube-controller-manager", "system:kube-controller-manager"),
            ("kube-scheduler", "system:kube-scheduler"),
        ):
            setattr(self, name.replace("-", "_") + "_kubeconfig", self.kubeconfig(name, self.ca.issue(name, user)))
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries["kube-controller-manager"]),
                f"--kubeconfig={self.kube_controller_manager_kubeconfig}",
                f"--authentication-kubeconfig={self.kube_controller_manager_kubeconfig}",
                f"--authorization-kubeconfig={self.kube_controller_manager_kubeconfig}",
                f"--service-account-private-key-file={sa.key}",
                f"--root-ca-file={self.ca.cert}",
                f"--cluster-signing-cert-file={self.ca.cert}",
                f"--cluster-signing-key-file={self.ca.key}",
                "--use-service-account-credentials",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--profiling=false",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries["kube-scheduler"]),
                f"--kubeconfig={self.kube_scheduler_kubeconfig}",
                f"--authentication-kubeconfig={self.kube_scheduler_kubeconfig}",
                f"--authorization-kubeconfig={self.kube_scheduler_kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--profiling=false",
            ],
        )
        self.load_crds()
        # The service-account controller (controller-manager) makes `default` in each namespace;
        # pods cannot be created before it exists.
        self.ensure_namespace(NAMESPACE)
        wait_for(lambda: self._has_default_sa(NAMESPACE), 60, "ServiceAccount default in kubeflow", check=self.check)

    def _etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                str(self.binaries["etcd"]),
                "--name=edge",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=edge=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # a test cluster: speed over durability
                "--log-level=warn",
            ],
        )

    def _ready(self) -> bool:
        import requests

        admin = self.workdir / "pki"
        resp = requests.get(
            f"{self.url}/readyz",
            verify=str(self.ca.cert),
            cert=(str(admin / "admin.crt"), str(admin / "admin.key")),
            timeout=5,
        )
        return resp.status_code == 200

    def kubeconfig(self, name: str, pair: kube_pki.Pair | None = None, token: str | None = None) -> Path:
        """A kubeconfig for a client certificate or a bearer token."""
        user: dict[str, str] = {}
        if pair:
            user = {"client-certificate": str(pair.cert), "client-key": str(pair.key)}
        if token:
            user = {"token": token}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "edge", "cluster": {"server": self.url, "certificate-authority": str(self.ca.cert)}}],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": "edge", "user": name}}],
            "current-context": name,
        }
        path = self.workdir / "kubeconfig" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # --- clients -------------------------------------------------------------------------

    def api(self, token: str | None = None) -> Any:
        """A kubernetes ApiClient: the admin's, or one that presents ``token``."""
        from kubernetes import client, config

        if token is None:
            return config.new_client_from_config(str(self.admin_kubeconfig))
        configuration = client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = str(self.ca.cert)
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    def dynamic(self, token: str | None = None) -> Any:
        from kubernetes import dynamic

        return dynamic.DynamicClient(self.api(token))

    # --- objects -------------------------------------------------------------------------

    def load_crds(self, files: tuple[str, ...] = CRD_FILES) -> None:
        """The CRDs the site really has (tests/data/crds), established before anything uses them."""
        from kubernetes import client

        ext = client.ApiextensionsV1Api(self.api())
        names = []
        for file in files:
            for crd in yaml.safe_load_all((CRD_DIR / file).read_text()):
                if crd and crd.get("kind") == "CustomResourceDefinition":
                    ext.create_custom_resource_definition(crd)
                    names.append(crd["metadata"]["name"])

        def established() -> bool:
            for name in names:
                conditions = ext.read_custom_resource_definition(name).status.conditions or []
                if not any(c.type == "Established" and c.status == "True" for c in conditions):
                    return False
            return True

        wait_for(established, 60, "CRDs established", check=self.check)

    def ensure_namespace(self, name: str) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            client.CoreV1Api(self.api()).create_namespace({"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise

    def delete_namespace(self, name: str, timeout: float = 90) -> None:
        """Delete a namespace and wait until it is gone.

        Without a kubelet, a pod bound to the node is only marked for deletion (the kubelet
        confirms it), and the namespace would stay Terminating; such pods are removed at once
        (gracePeriodSeconds=0), as `kubectl delete --force` does.
        """
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        core = client.CoreV1Api(self.api())
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise

        def gone() -> bool:
            for pod in core.list_namespaced_pod(name).items:
                if pod.metadata.deletion_timestamp:
                    try:
                        core.delete_namespaced_pod(pod.metadata.name, name, grace_period_seconds=0)
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
            try:
                core.read_namespace(name)
            except ApiException as exc:
                return exc.status == 404
            return False

        wait_for(gone, timeout, f"namespace {name} deleted", interval=0.5, check=self.check)

    def _has_default_sa(self, namespace: str) -> bool:
        from kubernetes import client

        return bool(client.CoreV1Api(self.api()).read_namespaced_service_account("default", namespace))

    def apply_yaml(self, obj: dict[str, Any]) -> None:
        """Server-side apply as the admin (for what other charms would have created)."""
        dyn = self.dynamic()
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        dyn.server_side_apply(
            resource,
            body=obj,
            namespace=obj["metadata"].get("namespace"),
            field_manager="test-fixture",
            force_conflicts=True,
        )

    # --- Seldon's operator ---------------------------------------------------------------

    def start_seldon_operator(self) -> None:
        """The operator as the seldon-core charm runs it, and its validating webhook as the charm registers it."""
        port = free_port()
        tmp = self.workdir / "seldon-tmp"
        certs = tmp / "k8s-webhook-server" / "serving-certs"  # controller-runtime 0.11's CertDir under $TMPDIR
        certs.mkdir(parents=True, exist_ok=True)
        pair = self.ca.issue(
            "seldon-webhook", "seldon-webhook-service", hosts=("127.0.0.1",), client=False, server=True
        )
        shutil.copy(pair.cert, certs / "tls.crt")
        shutil.copy(pair.key, certs / "tls.key")
        env = {str(k): str(v) for k, v in yaml.safe_load(SELDON_ENV.read_text())["env"].items()}
        env.update({"KUBECONFIG": str(self.admin_kubeconfig), "TMPDIR": str(tmp), "POD_NAMESPACE": NAMESPACE})
        self._spawn(
            "seldon-operator",
            [
                str(self.binaries["seldon-operator"]),
                "--metrics-addr=0",
                f"--webhook-port={port}",
                f"--log-level={env['MANAGER_LOG_LEVEL']}",
            ],
            env=env,
        )
        wait_for(lambda: _tls_answers(port, self.ca.cert), 60, "Seldon's webhook server", check=self.check)
        ca_bundle = base64.b64encode(self.ca.cert.read_bytes()).decode()
        self.apply_yaml(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "seldon-validating-webhook-configuration"},
                "webhooks": [
                    {
                        # canonical/seldon-core-operator@track/1.17 src/templates/validate.yaml.j2, with the
                        # Service replaced by the operator's address on this machine
                        "name": "v1.vseldondeployment.kb.io",
                        "admissionReviewVersions": ["v1", "v1beta1"],
                        "clientConfig": {"url": f"https://127.0.0.1:{port}{WEBHOOK_PATH}", "caBundle": ca_bundle},
                        "failurePolicy": "Fail",
                        "rules": [
                            {
                                "apiGroups": ["machinelearning.seldon.io"],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE", "UPDATE"],
                                "resources": ["seldondeployments"],
                            }
                        ],
                        "sideEffects": "None",
                    }
                ],
            }
        )


def _tls_answers(port: int, ca: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=2) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1"),
    ):
        return True
