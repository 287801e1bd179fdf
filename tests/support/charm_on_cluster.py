"""The charm's events under ops.testing, with its Kubernetes client bound to a real API server.

The client holds the token of a ServiceAccount with what Juju 3.6 grants the application
(support/juju_rbac.py), trusted or not; everything else is as in the unit tests.
"""

from __future__ import annotations

import pytest
from ops import testing

import cluster as cluster_module
from charm import OnnxModelCharm
from support import juju_rbac
from support.charm_harness import gateway_info
from support.kube_cluster import GATEWAY, NAMESPACE, ControlPlane, wait_for


class CharmOnCluster:
    """Runs the charm's events under ops.testing with its client bound to the real API server."""

    def __init__(self, plane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.plane = plane
        self.namespace = namespace
        self._monkeypatch = monkeypatch

    def account(self, app: str, trusted: bool = True) -> str:
        """The application's ServiceAccount with Juju's roles; the charm's client uses its token."""
        token = juju_rbac.application_token(self.plane.api(), app, self.namespace, trusted)
        wait_for(lambda: self._rbac_settled(token, trusted), 30, f"RBAC for {app} (trusted={trusted})")
        self._monkeypatch.setattr(cluster_module, "connect", lambda: self.plane.dynamic(token))
        return token

    def _rbac_settled(self, token: str, trusted: bool) -> bool:
        from kubernetes import client

        review = client.AuthorizationV1Api(self.plane.api(token)).create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {
                        "group": "machinelearning.seldon.io",
                        "resource": "seldondeployments",
                        "verb": "patch",
                        "namespace": self.namespace,
                    }
                }
            }
        )
        return review.status.allowed == trusted

    def run(self, event: str, app: str, config: dict | None = None, leader: bool = True, **kw) -> testing.State:
        ctx = testing.Context(OnnxModelCharm, app_name=app)
        relations = {gateway_info(name=GATEWAY, namespace=NAMESPACE), *kw.pop("relations", ())}
        state = testing.State(
            leader=leader, config=config or {}, model=testing.Model(name=self.namespace), relations=relations, **kw
        )
        return ctx.run(getattr(ctx.on, event)(), state)
