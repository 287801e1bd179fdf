"""The README's sizing, decided by the real kube-scheduler on a node sized like the reference box.

The rest of the site (MicroK8s' add-ons, Istio, Juju's pods, one charm pod per model
application) is there as pause containers with the requests tests/data/site-requests.yaml
records for them; the models are deployed through the charm and Seldon's operator, and run.
The largest number of models that support/site_requests.py says fits at a rollout peak must
all be scheduled, surge pod included; one more model must stay Pending with the scheduler's own
message, and the charm's status must quote it.
"""

from __future__ import annotations

import re

from kubernetes import client

from support import site_requests as sr
from support.kube_cluster import NODE_NAME, wait_for
from support.kube_node import PAUSE_IMAGE

PLATFORM_NS = "site-platform"


def placement(plane, namespace: str, sdep: str) -> list[tuple[str, str]]:
    """(pod, node or the scheduler's message) for each pod of one model."""
    core = client.CoreV1Api(plane.api())
    out = []
    for pod in core.list_namespaced_pod(namespace, label_selector=f"seldon-deployment-id={sdep}").items:
        if pod.spec.node_name:
            out.append((pod.metadata.name, pod.spec.node_name))
            continue
        for cond in pod.status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False":
                out.append((pod.metadata.name, cond.message))
    return out


def settled(plane, namespace: str, sdep: str, pods: int) -> list[tuple[str, str]]:
    """Wait until ``pods`` pods of the model exist and the scheduler has decided on each."""
    return wait_for(
        lambda: (p := placement(plane, namespace, sdep)) and len(p) == pods and p,
        90,
        f"{pods} pod(s) of {sdep} placed or refused",
        check=plane.check,
    )


def placeholder(plane, name: str, cpu: str, memory: str) -> None:
    """A pause container holding ``cpu``/``memory`` of requests on the node, as that pod would."""
    client.CoreV1Api(plane.api()).create_namespaced_pod(
        PLATFORM_NS,
        {
            "metadata": {"name": re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:60]},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "placeholder",
                        "image": PAUSE_IMAGE,
                        "imagePullPolicy": "Never",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}},
                    }
                ],
            },
        },
    )


def platform_pods(plane) -> None:
    """One pod per table row and count, with that row's requests: the rest of the site."""
    plane.ensure_namespace(PLATFORM_NS)
    core = client.CoreV1Api(plane.api())
    wait_for(lambda: core.read_namespaced_service_account("default", PLATFORM_NS), 60, "default ServiceAccount")
    for row in sr.table()["pods"]:
        for i in range(int(row["count"])):
            placeholder(plane, f"{row['name'][:50]}-{i}", str(row["cpu"]), str(row["memory"]))
    wait_for(
        lambda: all(p.spec.node_name for p in core.list_namespaced_pod(PLATFORM_NS).items),
        60,
        "the platform's pods scheduled",
        check=plane.check,
    )


def models_that_fit() -> int:
    """The README's table: the most one-replica models whose rollout peak fits the box."""
    pod = sr.model_pod(sr.bundle_models()[0])
    box = sr.reference_box()
    n = 0
    while sr.smallest_box(n + 1, pod).fits(box):
        n += 1
    return n


def test_n_models_schedule_at_a_rollout_peak_and_one_more_stays_pending(charm, control_plane):
    fit = models_that_fit()
    assert fit >= 1, "the reference box does not take a single model"
    platform_pods(control_plane)
    try:
        apps = [f"model{i}" for i in range(1, fit + 1)]
        charm_pod = sr.table()["charm_pod"]
        for app in apps:
            # Juju's pod for the application (the charm runs here under ops.testing, not in it)
            placeholder(control_plane, f"charm-{app}", str(charm_pod["cpu"]), str(charm_pod["memory"]))
            charm.account(app)
            charm.run("install", app)
            ((_, node),) = settled(control_plane, charm.namespace, app, 1)
            assert node == NODE_NAME, f"{app}: {node}"
        # A rollout of the last model: a surge pod beside the old one (maxUnavailable 0).
        charm.account(apps[-1])
        charm.run("config_changed", apps[-1], {"model-uri": "https://models.example/v2.onnx", "model-sha256": "2" * 64})
        placed = settled(control_plane, charm.namespace, apps[-1], 2)
        assert [node for _, node in placed] == [NODE_NAME, NODE_NAME], placed

        # One model more does not fit: the scheduler says why, and the charm quotes it.
        extra = f"model{fit + 1}"
        placeholder(control_plane, f"charm-{extra}", str(charm_pod["cpu"]), str(charm_pod["memory"]))
        charm.account(extra)
        charm.run("install", extra)
        ((_, message),) = settled(control_plane, charm.namespace, extra, 1)
        assert message.startswith("0/1 nodes are available: 1 Insufficient "), message
        out = charm.run("update_status", extra)
        assert out.unit_status.name == "blocked", out.unit_status
        assert "Insufficient" in out.unit_status.message or "does not fit" in out.unit_status.message
    finally:
        control_plane.delete_namespace(PLATFORM_NS)
