"""An in-memory stand-in for kubernetes.dynamic.DynamicClient: the charm's only boundary.

It keeps objects the way an API server would (by kind, namespace, name),
answers label selectors, and raises the client's own exception classes
(built from real ApiExceptions), so the charm's error handling is exercised
as it would be against a cluster. Tests assert on what ends up stored.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError, api_exception

SERVED = {
    ("machinelearning.seldon.io/v1", "SeldonDeployment"),
    ("networking.istio.io/v1beta1", "VirtualService"),
    ("networking.istio.io/v1beta1", "Gateway"),
    ("v1", "Secret"),
    ("v1", "Pod"),
    ("v1", "Node"),
}
CLUSTER_SCOPED = {"Node"}  # stored under namespace ""


def api_error(status: int, message: str = "") -> Exception:
    """The exception DynamicClient raises for an HTTP status, as it builds it."""
    exc = ApiException(status=status, reason=message or f"HTTP {status}")
    exc.body = json.dumps({"kind": "Status", "message": message or f"HTTP {status}", "code": status})
    return api_exception(exc)


class Timeout(Exception):
    """What urllib3 raises when the API server does not answer in time."""


@dataclass(frozen=True)
class FakeResource:
    api_version: str
    kind: str
    namespaced: bool = True


@dataclass
class FakeResources:
    served: set[tuple[str, str]]

    def get(self, api_version: str, kind: str) -> FakeResource:
        if (api_version, kind) not in self.served:
            raise ResourceNotFoundError(f"No matches found for {{'api_version': {api_version!r}, 'kind': {kind!r}}}")
        return FakeResource(api_version, kind, namespaced=kind not in CLUSTER_SCOPED)


@dataclass
class FakeCluster:
    """Objects by (kind, namespace, name); ``fail`` makes verbs raise, for fault tests."""

    served: set[tuple[str, str]] = field(default_factory=lambda: set(SERVED))
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    # What others keep in the cluster (read-only to the charm): istio-pilot's gateway in `kubeflow`.
    existing: dict[tuple[str, str, str], dict[str, Any]] = field(
        default_factory=lambda: {("Gateway", "kubeflow", "kubeflow-gateway"): {"kind": "Gateway"}}
    )
    fail: dict[tuple[str, str], Exception] = field(default_factory=dict)  # (verb, kind|'*') -> error
    fail_times: dict[tuple[str, str], int] = field(default_factory=dict)
    managers: set[str] = field(default_factory=set)

    @property
    def resources(self) -> FakeResources:
        self._maybe_fail("discover", "*")
        return FakeResources(self.served)

    def client(self) -> FakeCluster:
        """Pass as Cluster(client_factory=fake.client)."""
        return self

    def _maybe_fail(self, verb: str, kind: str) -> None:
        for key in ((verb, kind), (verb, "*"), ("*", "*")):
            if key in self.fail:
                remaining = self.fail_times.get(key)
                if remaining is not None:
                    if remaining <= 0:
                        continue
                    self.fail_times[key] = remaining - 1
                raise self.fail[key]

    # --- verbs the charm uses ------------------------------------------------

    def server_side_apply(
        self,
        resource: FakeResource,
        body: dict,
        namespace: str,
        field_manager: str,
        force_conflicts: bool,
        query_params: list[tuple[str, str]] | None = None,
    ) -> dict:
        self._maybe_fail("apply", resource.kind)
        if not field_manager:
            raise api_error(400, "fieldManager is required for apply patch")
        assert body["kind"] == resource.kind and body["apiVersion"] == resource.api_version
        self.managers.add(field_manager)
        key = (resource.kind, namespace, body["metadata"]["name"])
        stored = copy.deepcopy(body)
        old = self.objects.get(key)
        generation = 1
        if old is not None:
            if "status" in old:
                stored["status"] = old["status"]  # apply never touches the status subresource
            generation = old["metadata"].get("generation", 1) + (old.get("spec") != body.get("spec"))
        stored["metadata"]["generation"] = generation
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def get(
        self, resource: FakeResource, name: str | None = None, namespace: str | None = None, label_selector: str = ""
    ) -> dict:
        self._maybe_fail("get", resource.kind)
        # kubernetes.dynamic Resource.path(): a cluster-scoped kind ignores the namespace, and a
        # namespaced kind without one is listed across every namespace (/api/v1/pods).
        if not resource.namespaced:
            namespace = ""
        if name is not None:
            if namespace is None:
                raise api_error(404, f"{resource.kind} {name}: a namespaced object needs a namespace")
            key = (resource.kind, namespace, name)
            obj = self.objects.get(key, self.existing.get(key))
            if obj is None:
                raise api_error(404, f"{resource.kind} {name} not found")
            return copy.deepcopy(obj)
        wanted = dict(p.split("=", 1) for p in label_selector.split(",") if p)
        items = [
            copy.deepcopy(o)
            for (kind, ns, _), o in sorted(self.objects.items())
            if kind == resource.kind
            and (namespace is None or ns == namespace)
            and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]
        return {"items": items}

    def delete(self, resource: FakeResource, name: str, namespace: str) -> dict:
        self._maybe_fail("delete", resource.kind)
        if self.objects.pop((resource.kind, namespace, name), None) is None:
            raise api_error(404, f"{resource.kind} {name} not found")
        return {}

    # --- what the rest of the cluster would do -------------------------------

    def of_kind(self, kind: str) -> dict[str, dict]:
        return {name: o for (k, _, name), o in self.objects.items() if k == kind}

    def set_sdep_state(self, namespace: str, name: str, state: str, description: str = "") -> None:
        """What Seldon's operator writes into .status."""
        self.objects[("SeldonDeployment", namespace, name)]["status"] = {"state": state, "description": description}

    def add_pod(
        self,
        namespace: str,
        sdep_name: str,
        sha: str,
        ready: bool,
        pod: str = "",
        terminating: bool = False,
        ip: str = "",
    ) -> None:
        """A model pod of the SeldonDeployment, labelled as Seldon labels it."""
        sdep = self.objects[("SeldonDeployment", namespace, sdep_name)]
        labels = dict(sdep["spec"]["predictors"][0]["labels"])
        labels["onnx-model.juju.is/model-sha256"] = sha[:16]
        labels.update({"seldon-deployment-id": sdep_name, "seldon-app": f"{sdep_name}-default"})
        name = pod or f"{sdep_name}-default-0-model-{sha[:5]}-{len(self.objects)}"
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
        if terminating:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        self.objects[("Pod", namespace, name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "status": {
                "phase": "Running",
                "podIP": ip or f"10.1.0.{len(self.objects) % 250 + 2}",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }

    def put(self, obj: dict[str, Any]) -> None:
        """An object as the API returns it (a kubelet-written Pod, a Node), stored as is."""
        meta = obj["metadata"]
        namespace = "" if obj["kind"] in CLUSTER_SCOPED else meta["namespace"]
        self.objects[(obj["kind"], namespace, meta["name"])] = copy.deepcopy(obj)

    def remove_pods(self, namespace: str, sha: str) -> None:
        for key, obj in list(self.objects.items()):
            if (
                key[0] == "Pod"
                and key[1] == namespace
                and obj["metadata"]["labels"].get("onnx-model.juju.is/model-sha256") == sha[:16]
            ):
                del self.objects[key]
