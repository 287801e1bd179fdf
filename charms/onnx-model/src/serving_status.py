"""What the application is really serving, and why not, read from the cluster; pure, so it is tested alone.

The model version comes from the Ready pods (Ready means the server verified
and loaded that exact file), not from the spec the charm asked for. When the
wanted pods do not come up, the status names the cause and the fix, from what
the API already says about the pod (the shapes are k8s.io/api core/v1 types.go
at v0.28: ``PodStatus.conditions[]`` (``PodCondition``: type, status, reason,
message), ``PodStatus.containerStatuses[]`` (``ContainerStatus``: name, image,
ready, started, ``state``/``lastState`` holding ``waiting`` (reason, message)
or ``terminated`` (exitCode, reason, message))) and from the server's own
reason for refusing a model (``pod_health.py``). The reasons are those kubelet
and the runtime write:

- ``ErrImagePull``, ``ImagePullBackOff``, ``ErrImageNeverPull``,
  ``InvalidImageName``, ``RegistryUnavailable``, ``ImageInspectError``
  (kubernetes pkg/kubelet/images/types.go; the back-off message is
  ``Back-off pulling image "<image>"``, pkg/kubelet/images/image_manager.go);
- ``CrashLoopBackOff`` (pkg/kubelet/container/sync_result.go);
- ``OOMKilled`` / ``Error`` in ``terminated.reason`` (containerd
  pkg/cri/server/helpers.go ``oomExitReason``, ``errorExitReason``);
- ``PodScheduled=False`` with reason ``Unschedulable`` (core/v1
  ``PodReasonUnschedulable``) and the scheduler's message
  ``0/1 nodes are available: 1 Insufficient cpu. preemption: ...``
  (pkg/scheduler/framework/types.go ``FitError.Error``,
  plugins/noderesources/fit.go ``Insufficient <resource>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from capacity import Amount, container_requests, cpu_text, memory_text, pod_requests, quantity
from manifests import CONTAINER, SHA_LABEL, prefix, shadow_prefix

Kind = Literal["active", "waiting", "blocked"]

IMAGE_REASONS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "RegistryUnavailable",
    "ImageInspectError",
}
# What DefectModel says while it is still fetching and loading (seldon_model.py): not a problem.
STILL_LOADING = "model not loaded yet"
# ModelRejected(..., retryable=True) texts (models/server/defect_server/model_source.py): the server retries.
RETRIED = ("cannot download", "download of")
MESSAGE_MAX = 300


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


def assess(
    model_name: str,
    wanted_sha: str,
    sdep: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    *,
    app: str = "",
    server_reasons: dict[str, str] | None = None,
    room: dict[str, Amount] | None = None,
) -> Serving:
    """One status for the application from the SeldonDeployment and its pods.

    ``server_reasons``: pod name -> the model server's own not-ready reason (its
    /health/status); ``room``: each node's free CPU/memory, read only when a pod
    is unschedulable. Both are optional: without them the status is less precise.
    """
    if sdep is None:
        return Serving("waiting", f"waiting for SeldonDeployment {model_name} to be created")
    status = sdep.get("status") or {}
    state = status.get("state", "Creating")
    serving = sorted({(p["metadata"].get("labels") or {}).get(SHA_LABEL, "") for p in pods if pod_is_ready(p)} - {""})
    wanted = wanted_sha[:16]
    problem = first_problem([p for p in pods if _sha(p) == wanted], app or model_name, server_reasons or {}, room)
    failed = _seldon_failed(model_name, sdep) if state == "Failed" else None
    if not serving:
        if problem:
            return _one_line(problem)
        if failed:
            return _one_line(failed)
        return Serving("waiting", f"waiting for model {short(wanted)} to be ready (Seldon: {state})")
    if serving == [wanted] and state == "Available":
        return Serving("active", f"serving {prefix(model_name)} sha {short(wanted)}")
    if wanted not in serving:
        old = ", ".join(short(s) for s in serving)
        if problem:
            return _one_line(Serving(problem.kind, f"still serving {old}; {short(wanted)} fails: {problem.message}"))
        if failed:
            return _one_line(Serving("blocked", f"still serving {old}; {failed.message}"))
        return Serving("waiting", f"rolling out {short(wanted)}, still serving {old}: waiting for it to be ready")
    now = ", ".join(short(s) for s in serving)
    if problem:
        return _one_line(Serving(problem.kind, f"serving {now}; another {short(wanted)} pod fails: {problem.message}"))
    if failed:
        return _one_line(Serving("blocked", f"serving {now}; {failed.message}"))
    return Serving("waiting", f"rolling out: serving {now} (Seldon: {state})")


def _sha(pod: dict[str, Any]) -> str:
    return (pod["metadata"].get("labels") or {}).get(SHA_LABEL, "")


def _seldon_failed(model_name: str, sdep: dict[str, Any]) -> Serving:
    """Seldon's own verdict, ``status.state: Failed`` with ``status.description``.

    Seldon Core v1.17.1 (operator/controllers/seldondeployment_controller.go, ``Reconcile``
    and ``createDeployments``; values in operator/apis/machinelearning.seldon.io/v1/
    seldon_deployment_status.go) writes ``Failed`` in two cases: a component it could not
    create (``updateStatusForError``: the description is the API error), or a Deployment
    whose Progressing and Available conditions are both False, i.e. past its
    ``progressDeadlineSeconds`` (the description is then always "Deployment is no longer
    progressing and not available." and ``status.conditions[type=DeploymentsReady]``
    carries that Deployment's Available reason and message). The pods say more, so this
    is used only when they do not.
    """
    status = sdep.get("status") or {}
    reason = (status.get("description") or "no reason given").rstrip(".")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DeploymentsReady" and condition.get("status") == "False":
            if condition.get("message"):
                reason += f" ({condition['message'].rstrip('.')})"
            break
    namespace = sdep["metadata"].get("namespace", "")
    return Serving(
        "blocked",
        f"SeldonDeployment failed: {reason}: "
        f"see kubectl -n {namespace} describe pods -l seldon-deployment-id={model_name}",
    )


def _one_line(serving: Serving) -> Serving:
    """`juju status` shows one line: no newlines, long digests cut to 12 digits, a bounded length."""
    text = " ".join(serving.message.split())
    text = re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b", r"\1…", text)
    if len(text) > MESSAGE_MAX:
        text = text[: MESSAGE_MAX - 1] + "…"
    return Serving(serving.kind, text)


# --- why a pod does not come up --------------------------------------------------


def first_problem(
    pods: list[dict[str, Any]], app: str, server_reasons: dict[str, str], room: dict[str, Amount] | None
) -> Serving | None:
    """The first thing wrong with these pods (by name, so the status does not flap), with its fix."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if pod_is_ready(pod) or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        found = (
            _unschedulable(pod, app, room)
            or _container_problem(pod, app)
            or _refused(server_reasons.get(pod["metadata"]["name"], ""))
        )
        if found:
            return found
    return None


def is_unschedulable(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def pods_to_ask(pods: list[dict[str, Any]], wanted_sha: str, most: int = 2) -> list[dict[str, Any]]:
    """Pods worth asking for the server's reason: the wanted model's, server up (started), not Ready."""
    chosen = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if _sha(pod) != wanted_sha[:16] or pod_is_ready(pod) or pod["metadata"].get("deletionTimestamp"):
            continue
        status = _container_status(pod, CONTAINER)
        if (
            (pod.get("status") or {}).get("podIP")
            and status
            and status.get("started")
            and "running" in (status.get("state") or {})
        ):
            chosen.append(pod)
    return chosen[:most]


def _container_status(pod: dict[str, Any], name: str) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == name:
            return status
    return None


def _spec_container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == name:
            return container
    return {}


def _unschedulable(pod: dict[str, Any], app: str, room: dict[str, Amount] | None) -> Serving | None:
    if not is_unschedulable(pod):
        return None
    message = next(
        c.get("message", "")
        for c in pod["status"]["conditions"]
        if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
    )
    # "0/1 nodes are available: 1 Insufficient cpu. preemption: ..." -> the part before preemption.
    why = message.split(" preemption:")[0].strip().rstrip(".")
    lacking = [r for r in ("cpu", "memory") if f"Insufficient {r}" in message]
    if not lacking:
        return Serving(
            "blocked",
            f"pod cannot be scheduled: {why}: see kubectl -n {pod['metadata'].get('namespace', '')} "
            f"describe pod {pod['metadata']['name']}",
        )
    asked = pod_requests(pod)
    model = container_requests(_spec_container(pod, CONTAINER))
    free = max(room.values(), key=lambda a: (a.cpu_m, a.memory)) if room else None
    texts = {"cpu": cpu_text, "memory": memory_text}
    floors = {"cpu": 100, "memory": 256 * 2**20}  # below these the server does not run well
    wants, has, settings = [], [], []
    for resource in lacking:
        text = texts[resource]
        want = asked.cpu_m if resource == "cpu" else asked.memory
        wants.append(text(want) + (" CPU" if resource == "cpu" else ""))
        if free is None:
            continue
        left = free.cpu_m if resource == "cpu" else free.memory
        has.append(text(max(left, 0)))
        mine = model.cpu_m if resource == "cpu" else model.memory
        fits = mine - (want - left)  # the model container's request that would just fit
        if fits >= floors[resource]:
            # the scheduler counts requests, so the option to lower is the request, not the limit
            # (a real kube-scheduler in tox -e cluster showed the old advice named the limit)
            settings.append(f"{resource}-request={text(fits)}")
    said = f"requests {' and '.join(wants)}" + (f", the node has {' and '.join(has)} free" if has else "")
    if settings and len(settings) == len(lacking):
        fix = f"juju config {app} {' '.join(settings)}, or a bigger box"
    else:
        options = " and ".join(f"{r}-request" for r in lacking)
        fix = f"lower {options} (juju config {app} {lacking[0]}-request=...), or a bigger box"
    return Serving("blocked", f"pod cannot be scheduled ({why}): it {said}: {fix}")


def _container_problem(pod: dict[str, Any], app: str) -> Serving | None:
    namespace = pod["metadata"].get("namespace", "")
    name = pod["metadata"]["name"]
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        container = status.get("name", "")
        state = status.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or (status.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") in IMAGE_REASONS:
            return _image_problem(pod, status, waiting, app)
        if terminated.get("reason") == "OOMKilled":
            limit = ((_spec_container(pod, container).get("resources") or {}).get("limits") or {}).get("memory", "")
            if container == CONTAINER and limit:
                double = memory_text(int(quantity(limit)) * 2)
                fix = f"raise memory: juju config {app} memory={double}"
            else:
                fix = f"raise container {container}'s memory limit"
            return Serving("blocked", f"container {container} OOMKilled at its {limit or 'memory'} limit: {fix}")
        if waiting.get("reason") == "CrashLoopBackOff" or (terminated and state.get("terminated")):
            said = (terminated.get("message") or "").strip().splitlines()
            last = f": {said[-1]}" if said else ""
            exit_text = f"exit {terminated.get('exitCode', '?')} {terminated.get('reason', '')}".strip()
            return Serving(
                "blocked",
                f"container {container} keeps crashing ({exit_text}{last}): "
                f"kubectl -n {namespace} logs {name} -c {container} --previous",
            )
    return None


def _image_problem(pod: dict[str, Any], status: dict[str, Any], waiting: dict[str, Any], app: str) -> Serving:
    container = status.get("name", "")
    image = _spec_container(pod, container).get("image") or status.get("image", "")
    reason = waiting["reason"]
    detail = (waiting.get("message") or "").rsplit(": ", 1)[-1].strip()
    if reason == "ErrImagePull" and detail and len(detail) <= 60:
        reason = f"{reason}: {detail}"
    if waiting["reason"] == "InvalidImageName":
        fix = f"juju config {app} server-image=<image>" if container == CONTAINER else "fix the image name"
    elif container == CONTAINER:
        fix = (
            "load it: sudo scripts/bootstrap-edge-site, or microk8s ctr image import <archive>; "
            f"or juju config {app} server-image=<image>"
        )
    else:
        fix = "load it: microk8s ctr image import <archive>"
    return Serving("blocked", f"image {image} cannot be pulled ({reason}): {fix}")


def _refused(reason: str) -> Serving | None:
    """The model server's own reason (/health/status); nothing while it is still loading."""
    reason = reason.strip().removeprefix("not ready: ").strip()
    if not reason or reason == STILL_LOADING:
        return None
    if reason.startswith(RETRIED):
        return Serving("waiting", f"model server cannot get the model, retrying: {reason}")
    return Serving("blocked", f"model refused by the server: {reason}")


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


SHADOW_REPORT = "scripts/shadow-report"  # the line's watcher's figures; the charm never sees the answers


def with_shadow(
    stable: Serving,
    model_name: str,
    app: str,
    shadow_sha: str,
    sdep: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    problem: Serving | None,
) -> Serving:
    """The stable model's status plus the shadow's state: ready, starting, or refused (and why).

    ``problem``: first_problem() of the shadow's pods (the server's own refusal, a pod that
    cannot be scheduled...), quoted as the stable model's problems are. The shadow never
    decides anything for the line, so a refused one blocks the status (someone must act) but
    the message says the line is unaffected. How often the two models agree is measured by the
    line's watcher, which holds both answers; the status points to its report.
    """
    s = short(shadow_sha)
    path = shadow_prefix(model_name)
    status = (sdep or {}).get("status") or {}
    if canary_is_ready(shadow_sha, pods):  # Ready: it verified and loaded exactly this file
        kind: Kind = "active"
        part = f"shadow {s} ready at {path} (agreement: {SHADOW_REPORT} {app})"
    elif problem is not None and problem.kind == "waiting":  # e.g. a download being retried
        kind, part = "waiting", f"shadow {s} starting: {problem.message}"
    elif problem is not None:
        kind, part = "blocked", f"shadow {s} refused, the line is unaffected: {problem.message}"
    elif status.get("state") == "Failed":
        reason = (status.get("description") or "no reason given").rstrip(".")
        kind, part = "blocked", f"shadow {s} refused, the line is unaffected: SeldonDeployment failed: {reason}"
    else:
        kind = "waiting"
        part = f"shadow {s} starting (it takes no request before it verified its sha256: {path} answers 503)"
    worst = max(stable.kind, kind, key=_SEVERITY.__getitem__)
    return _one_line(Serving(worst, f"{stable.message}; {part}"))


def routed_weight(virtual_service: dict[str, Any] | None, host: str) -> int:
    """The percent of requests the live VirtualService sends to ``host`` (0 when it is not routed)."""
    total = 0
    for http in ((virtual_service or {}).get("spec") or {}).get("http") or []:
        for dest in http.get("route") or []:
            if dest.get("destination", {}).get("host") == host:
                total += int(dest.get("weight", 100))
    return total
