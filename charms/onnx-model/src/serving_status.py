"""What the application is really serving, read from the cluster; pure, so it is tested alone.

The model version comes from the Ready pods (Ready means the server verified
and loaded that exact file), not from the spec the charm asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from manifests import SHA_LABEL, prefix

Kind = Literal["active", "waiting", "blocked"]


@dataclass(frozen=True)
class Serving:
    kind: Kind
    message: str


def short(sha: str) -> str:
    return sha[:7]


def pod_is_ready(pod: dict[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False  # terminating pods are being removed from the Service
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def assess(model_name: str, wanted_sha: str, sdep: dict[str, Any] | None, pods: list[dict[str, Any]]) -> Serving:
    """One status for the application from the SeldonDeployment and its pods."""
    if sdep is None:
        return Serving("waiting", f"waiting for SeldonDeployment {model_name} to be created")
    status = sdep.get("status") or {}
    state = status.get("state", "Creating")
    if state == "Failed":
        reason = status.get("description") or "no reason given"
        return Serving("blocked", f"SeldonDeployment failed: {reason}")
    serving = sorted({(p["metadata"].get("labels") or {}).get(SHA_LABEL, "") for p in pods if pod_is_ready(p)} - {""})
    wanted = wanted_sha[:16]
    if not serving:
        return Serving("waiting", f"waiting for model {short(wanted)} to be ready (Seldon: {state})")
    if serving == [wanted] and state == "Available":
        return Serving("active", f"serving {prefix(model_name)} sha {short(wanted)}")
    if wanted not in serving:
        old = ", ".join(short(s) for s in serving)
        return Serving(
            "waiting",
            f"rolling out {short(wanted)}, still serving {old}: a model that fails its "
            "sha256 check never gets ready (see kubectl logs)",
        )
    return Serving("waiting", f"rolling out: serving {', '.join(short(s) for s in serving)} (Seldon: {state})")


def gateway_missing(gateway: str, juju_model: str) -> Serving:
    """The Istio Gateway the VirtualService binds to does not exist: nothing reaches the model.

    istio-pilot creates it in its own model's namespace, so a different model name is the usual
    cause, and waiting will not fix that.
    """
    namespace = gateway.split("/")[0]
    if namespace == juju_model:
        return Serving("waiting", f"waiting for the Istio gateway {gateway} (istio-pilot creates it)")
    return Serving(
        "blocked",
        f"Istio gateway {gateway} not found: deploy into a Juju model named {namespace} "
        f"(this one is {juju_model}) or set gateway=<namespace>/<gateway>",
    )
