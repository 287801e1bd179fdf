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


_SEVERITY = {"active": 0, "waiting": 1, "blocked": 2}


def canary_is_ready(canary_sha: str, pods: list[dict[str, Any]]) -> bool:
    """A canary pod passed its readiness probe: it verified and loaded exactly this file."""
    wanted = canary_sha[:16]
    return any(pod_is_ready(p) and (p["metadata"].get("labels") or {}).get(SHA_LABEL) == wanted for p in pods)


def with_canary(
    stable: Serving,
    canary_sha: str,
    weight: int,
    routed: int,
    sdep: dict[str, Any] | None,
    pods: list[dict[str, Any]],
) -> Serving:
    """The stable model's status plus the canary's: ``weight`` configured, ``routed`` what the live route gives it.

    A canary that is not Ready gets no traffic (render() leaves it out of the route), so its
    share stays with the stable model; the status says so, and why when Seldon gave up on it.
    """
    c = short(canary_sha)
    status = (sdep or {}).get("status") or {}
    if canary_is_ready(canary_sha, pods):
        if routed == weight:
            kind, message = "active", f"{stable.message}, canary {c} at {weight}%"
        else:
            kind, message = "waiting", f"{stable.message}, canary {c} at {routed}% (moving to {weight}%)"
    elif status.get("state") == "Failed":
        reason = status.get("description") or "no reason given"
        kind, message = (
            "blocked",
            f"{stable.message}; canary {c} refused (SeldonDeployment failed: {reason}), "
            f"its {weight}% stays with the stable model",
        )
    else:
        kind, message = (
            "waiting",
            f"{stable.message}; canary {c} not Ready, its {weight}% stays with the stable model until it is "
            "(a model that fails its sha256 check never gets ready, see kubectl logs)",
        )
    worst = max(stable.kind, kind, key=_SEVERITY.__getitem__)
    return Serving(worst, message)


def routed_weight(virtual_service: dict[str, Any] | None, host: str) -> int:
    """The percent of requests the live VirtualService sends to ``host`` (0 when it is not routed)."""
    total = 0
    for http in ((virtual_service or {}).get("spec") or {}).get("http") or []:
        for dest in http.get("route") or []:
            if dest.get("destination", {}).get("host") == host:
                total += int(dest.get("weight", 100))
    return total
