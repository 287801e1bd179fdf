"""Pods and a Node as the Kubernetes API returns them (tests/data/k8s-pods/*.json), relabelled per test.

The fixtures follow k8s.io/api core/v1 types.go (v0.28): ``PodStatus`` with
``conditions[]`` (``PodCondition``) and ``containerStatuses[]`` (``ContainerStatus``:
``state``/``lastState`` of ``ContainerStateWaiting``/``Running``/``Terminated``),
filled in as kubelet and the scheduler fill them for a Seldon predictor pod of
the `scratch` model in the `kubeflow` namespace on a 2-CPU / 4 GiB MicroK8s node.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "k8s-pods"
SHA_LABEL = "onnx-model.juju.is/model-sha256"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def model_pod(fixture: str, sha: str, suffix: str = "", health_port: int | None = None) -> dict[str, Any]:
    """A pod of the model with ``sha`` in the state the fixture records."""
    pod = load(fixture)
    pod["metadata"]["labels"][SHA_LABEL] = sha[:16]
    if suffix:
        pod["metadata"]["name"] = pod["metadata"]["generateName"] + suffix
    if health_port is not None:  # where a test's stand-in for the server listens
        pod["status"]["podIP"] = "127.0.0.1"
        pod["status"]["podIPs"] = [{"ip": "127.0.0.1"}]
        pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = health_port
    return pod


def other_pod(namespace: str, name: str, cpu: str, memory: str, node: str = "edge-01") -> dict[str, Any]:
    """Another Running pod on the node (calico, CoreDNS, istiod...) requesting cpu/memory."""
    pod = copy.deepcopy(load("ready"))
    pod["metadata"] = {"name": name, "namespace": namespace, "labels": {"app": name.split("-")[0]}}
    pod["spec"]["nodeName"] = node
    pod["spec"]["containers"][0]["name"] = name.split("-")[0]
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": cpu, "memory": memory}}
    return pod
