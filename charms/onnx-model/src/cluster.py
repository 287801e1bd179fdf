"""The charm's only door to the Kubernetes API: apply, prune, read, with errors sorted for the user.

Built on the official client's DynamicClient, whose ``server_side_apply``
sends ``application/apply-patch+yaml`` (the typed CustomObjectsApi can only
merge-patch custom objects).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from kubernetes.dynamic.exceptions import (
    DynamicApiError,
    ForbiddenError,
    NotFoundError,
    ResourceNotFoundError,
)

log = logging.getLogger(__name__)

FIELD_MANAGER = "onnx-model-charm"
# Kinds this charm ever writes, so pruning finds every leftover, including a removed Secret.
OWNED_KINDS = (
    ("machinelearning.seldon.io/v1", "SeldonDeployment"),
    ("networking.istio.io/v1beta1", "VirtualService"),
    ("v1", "Secret"),
)


class TrustRequired(Exception):
    """The API answered 403: the application was deployed without --trust."""


class ClusterError(Exception):
    """Any other API failure; the next event retries the whole reconcile."""


class MissingCRD(ClusterError):
    """Seldon Core or Istio is not installed (their CRDs are absent)."""


def connect() -> Any:
    """A DynamicClient with the pod's service-account credentials."""
    from kubernetes import client, config, dynamic

    config.load_incluster_config()
    return dynamic.DynamicClient(client.ApiClient())


class Cluster:
    """Operations on one namespace, for one application's labelled objects."""

    def __init__(self, client_factory: Callable[[], Any] | None = None) -> None:
        self._factory = client_factory or connect
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._guard(self._factory)
        return self._client

    def _resource(self, api_version: str, kind: str) -> Any:
        try:
            return self._guard(lambda: self.client.resources.get(api_version=api_version, kind=kind))
        except ResourceNotFoundError:
            raise MissingCRD(
                f"{kind} ({api_version}) is not served by the cluster: deploy "
                + ("seldon-core" if "seldon" in api_version else "istio-pilot")
                + " first"
            ) from None

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply under one field manager; force, since this charm owns the object.

        A field the cluster's CRD does not know (another Istio or Seldon than the site pins) is
        refused, not dropped: server-side apply cannot type it (500, "field not declared in
        schema"; shown against the real API server in tests/cluster). ``fieldValidation=Strict``
        (GA in Kubernetes 1.27) refuses duplicate fields too; the dynamic client passes it as a
        query parameter.
        """
        resource = self._resource(obj["apiVersion"], obj["kind"])
        self._guard(
            lambda: self.client.server_side_apply(
                resource,
                body=obj,
                namespace=obj["metadata"]["namespace"],
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                query_params=[("fieldValidation", "Strict")],
            )
        )

    def owned(self, namespace: str, selector: dict[str, str]) -> list[tuple[str, str, str]]:
        """(apiVersion, kind, name) of every object carrying these labels."""
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        found = []
        for api_version, kind in OWNED_KINDS:
            try:
                resource = self._resource(api_version, kind)
            except MissingCRD:
                continue  # nothing of a kind the cluster does not serve can be left behind
            listing = self._guard(
                lambda r=resource: self.client.get(r, namespace=namespace, label_selector=label_selector)
            )
            for item in _items(listing):
                found.append((api_version, kind, item["metadata"]["name"]))
        return found

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        resource = self._resource(api_version, kind)
        try:
            self._guard(lambda: self.client.delete(resource, name=name, namespace=namespace))
        except NotFoundError:
            pass

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        resource = self._resource(api_version, kind)
        try:
            return _plain(self._guard(lambda: self.client.get(resource, name=name, namespace=namespace)))
        except NotFoundError:
            return None

    def pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        resource = self._resource("v1", "Pod")
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        listing = self._guard(lambda: self.client.get(resource, namespace=namespace, label_selector=label_selector))
        return _items(listing)

    def nodes(self) -> list[dict[str, Any]]:
        """Every Node (cluster-scoped: needs `juju trust --scope=cluster`), for its allocatable resources."""
        resource = self._resource("v1", "Node")
        return _items(self._guard(lambda: self.client.get(resource)))

    def all_pods(self) -> list[dict[str, Any]]:
        """Every pod in every namespace (no namespace: the client lists /api/v1/pods), for what they request."""
        resource = self._resource("v1", "Pod")
        return _items(self._guard(lambda: self.client.get(resource)))

    @staticmethod
    def _guard(call: Callable[[], Any]) -> Any:
        """Sort API failures into 'needs trust' and 'try again later'."""
        try:
            return call()
        except ForbiddenError as exc:
            raise TrustRequired(_describe(exc)) from None
        except (NotFoundError, ResourceNotFoundError):
            raise
        except DynamicApiError as exc:
            raise ClusterError(_describe(exc)) from None
        except Exception as exc:  # urllib3 timeouts, refused connections, config errors
            if type(exc).__name__ == "ApiException" and getattr(exc, "status", None) == 403:
                raise TrustRequired(str(exc)) from None
            raise ClusterError(f"{type(exc).__name__}: {exc}") from None


def _describe(exc: DynamicApiError) -> str:
    status = getattr(exc, "status", "?")
    try:
        message = exc.summary()
    except Exception:
        message = str(exc)
    if status == 422:
        return f"the API rejected the object (422): {message}"
    if "field not declared in schema" in message:
        # Server-side apply builds a typed object from the CRD's schema and fails with 500 on a
        # field the schema lacks (k8s.io/apiserver fieldmanager, "failed to create typed patch
        # object"; seen against Istio 1.17.3's CRDs in tox -e cluster): another Istio or Seldon
        # than the bundle pins is installed, or the charm is newer than the cluster.
        fields = ", ".join(re.findall(r"(\S+): field not declared in schema", message)) or message
        return (
            f"the cluster's CRD does not know a field this charm writes ({fields}): "
            "is the Istio or Seldon the bundle pins installed?"
        )
    if status == 409:
        return f"conflict (409): {message}"
    if isinstance(status, int) and status >= 500:
        if "webhook" in message:
            return f"an admission webhook failed ({status}): {message}; is seldon-controller-manager running?"
        return f"the API server failed ({status}): {message}"
    return f"API error {status}: {message}"


def _plain(obj: Any) -> dict[str, Any]:
    """ResourceInstance -> dict; dicts pass through (the tests' fake returns dicts)."""
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


def _items(listing: Any) -> list[dict[str, Any]]:
    return [_plain(i) for i in (_plain(listing).get("items") or [])]
