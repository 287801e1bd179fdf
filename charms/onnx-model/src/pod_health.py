"""The model server's own reason for not being ready, asked of the pod over HTTP.

Why the charm asks the pod's ``/health/status`` rather than reading the
container's termination message: a model the server refuses (sha256
mismatch, not ONNX, too big) never ends the container. ``DefectModel.load()``
stays up unready on purpose, so the old pods keep serving during a roll
(models/server/defect_server/seldon_model.py), and a termination message only
exists once a container has exited (core/v1 ``ContainerStateTerminated.message``).
Kubelet does not keep the probe's answer either: an HTTP probe failure becomes
only ``HTTP probe failed with statuscode: 503`` in an Event (kubernetes
pkg/probe/http/http.go). The reason lives in one place, the answer of
``/health/status``, where the Seldon wrapper turns the server's
``SeldonMicroserviceException`` into
``{"status": {"status": 1, "info": "not ready: <reason>", "code": -1, "reason": "MODEL_NOT_READY"}}``
with HTTP 503 (SeldonIO/seldon-core v1.17.1 python/seldon_core/flask_utils.py
``to_dict``, wrapper.py ``handle_invalid_usage``).

The hook must not hang on it: only pods whose server is up but not Ready are
asked (at most two, chosen by serving_status.pods_to_ask), each with a 1 s
connect and 2 s read timeout, and any failure just means "no reason known"
(the status then falls back to what the API says).
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from manifests import CONTAINER, MODEL_PORT

log = logging.getLogger(__name__)

TIMEOUT = (1.0, 2.0)  # (connect, read) seconds


def health_url(pod: dict[str, Any]) -> str | None:
    """http://<podIP>:<port><path> of the model container's readiness probe (what kubelet asks)."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") != CONTAINER:
            continue
        probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
        port = probe.get("port", MODEL_PORT)
        if not isinstance(port, int):  # a named port: look it up among the container's ports
            port = next((p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port), MODEL_PORT)
        host = f"[{ip}]" if ":" in ip else ip
        return f"http://{host}:{port}{probe.get('path', '/health/status')}"
    return None


def not_ready_reason(pod: dict[str, Any], session: Any = requests) -> str | None:
    """The server's ``status.info`` when it answers not-ready; None when Ready, silent or unreadable."""
    url = health_url(pod)
    if url is None:
        return None
    try:
        resp = session.get(url, timeout=TIMEOUT)
    except requests.RequestException as exc:
        log.info("no answer from %s: %s", url, exc)
        return None
    if resp.status_code == 200:
        return None
    try:
        info = resp.json()["status"]["info"]
    except (ValueError, KeyError, TypeError):
        return None
    return info if isinstance(info, str) else None


def ask(pods: list[dict[str, Any]]) -> dict[str, str]:
    """Pod name -> the server's reason, for the pods that gave one."""
    reasons = {}
    for pod in pods:
        reason = not_ready_reason(pod)
        if reason:
            reasons[pod["metadata"]["name"]] = reason
    return reasons
