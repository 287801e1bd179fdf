"""Which Istio Gateway the model's VirtualService binds to: the `gateway` option, else istio-pilot's word.

istio-pilot (canonical/istio-operators, track/1.17, charms/istio-pilot) provides the
``gateway-info`` endpoint (interface ``istio-gateway-info``) and writes into its application
data bag, through its lib ``charms.istio_pilot.v0.istio_gateway_info`` (LIBPATCH 3):
``gateway_name`` (its ``default-gateway`` option), ``gateway_namespace`` (its own Juju model)
and ``gateway_up``. Charmed Kubeflow's charms
(seldon-core track/1.17 ``_get_istio_gateway``) read exactly those keys through the lib's
``GatewayRequirer.get_relation_data``. Reading two strings is all the requirer side of the lib
does, so the charm reads them here rather than vendoring the lib and its ops pin.
``gateway_up`` is not needed: the charm checks that the Gateway object exists itself.

Pure: the charm passes the relation's remote application data in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

RELATION = "gateway-info"
NAME_KEY = "gateway_name"
NAMESPACE_KEY = "gateway_namespace"


@dataclasses.dataclass(frozen=True)
class Gateway:
    """One Istio Gateway and where the charm learnt of it."""

    namespace: str
    name: str
    from_relation: bool

    @property
    def ref(self) -> str:
        """<namespace>/<name>, as a VirtualService's spec.gateways names it."""
        return f"{self.namespace}/{self.name}"


class NoGateway(Exception):
    """No gateway to route through yet; ``kind`` is the status (blocked: the user must act)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def resolve(app: str, override: str, relations: list[Mapping[str, str]]) -> Gateway:
    """The `gateway` option if set, else what istio-pilot published; NoGateway when neither.

    ``relations``: the remote application data of each gateway-info relation (the endpoint
    has limit 1, so at most one in practice).
    """
    if override:
        namespace, name = override.split("/")  # ModelConfig already checked the form
        return Gateway(namespace, name, from_relation=False)
    for data in relations:
        name, namespace = data.get(NAME_KEY, ""), data.get(NAMESPACE_KEY, "")
        if name and namespace:
            return Gateway(namespace, name, from_relation=True)
    if relations:
        raise NoGateway("waiting", "waiting for istio-pilot to publish its gateway on gateway-info")
    raise NoGateway(
        "blocked",
        f"no Istio gateway to route through: juju integrate {app} istio-pilot:gateway-info "
        "(or set gateway=<namespace>/<name>)",
    )


def missing(gateway: Gateway, app: str) -> tuple[str, str]:
    """(status kind, message) when the Gateway object is not in the cluster.

    One istio-pilot named it: it creates the object, so wait (it also says gateway_up=false
    until then). One the user named: nothing will create it, so say what to change.
    """
    if gateway.from_relation:
        return "waiting", f"waiting for the Istio gateway {gateway.ref} (istio-pilot creates it)"
    return (
        "blocked",
        f"Istio gateway {gateway.ref} not found: correct gateway=<namespace>/<name>, or leave it "
        f"empty and juju integrate {app} istio-pilot:gateway-info",
    )
