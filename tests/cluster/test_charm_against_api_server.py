"""The charm's reconcile against a real kube-apiserver: what it stores, and what the API refuses.

Each test drives the charm's events (ops.testing) with its client holding the token of a
ServiceAccount that has what Juju 3.6 grants the application, and reads back what the API server
really kept. The unit tests (tests/unit/test_charm.py) run the same events against
support/fake_k8s.py; test_same_scenario_on_fake_and_real_cluster.py compares the two directly.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from ops import testing

from cluster import Cluster, ClusterError
from manifests import render
from support.charm_harness import SHA1, SHA2, V1, V2
from support.kube_cluster import GATEWAY, NAMESPACE

APP = "scratch"
GATEWAY_REF = f"{NAMESPACE}/{GATEWAY}"


def live(plane, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    dyn = plane.dynamic()
    api = {"SeldonDeployment": "machinelearning.seldon.io/v1", "VirtualService": "networking.istio.io/v1beta1"}[kind]
    try:
        return dyn.get(dyn.resources.get(api_version=api, kind=kind), name=name, namespace=namespace).to_dict()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def missing_from(sent: Any, kept: Any, path: str = "") -> list[str]:
    """Paths of every field in ``sent`` that ``kept`` lacks or holds differently (defaults may be added)."""
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [path or "/"]
        out = []
        for key, value in sent.items():
            out += missing_from(value, kept.get(key), f"{path}.{key}") if key in kept else [f"{path}.{key}"]
        return out
    if isinstance(sent, list):
        if not isinstance(kept, list) or len(kept) != len(sent):
            return [path]
        return [p for i, (s, k) in enumerate(zip(sent, kept, strict=True)) for p in missing_from(s, k, f"{path}[{i}]")]
    return [] if sent == kept else [f"{path}: sent {sent!r}, kept {kept!r}"]


def test_every_rendered_field_is_kept_by_the_api_server(charm, control_plane):
    """No field render() writes is pruned or changed by the real CRDs' structural schemas."""
    charm.account(APP)
    charm.run("install", APP, V1)
    for obj in render(APP, charm.namespace, {**V1, "gateway": GATEWAY_REF}):
        kept = live(control_plane, charm.namespace, obj["kind"], obj["metadata"]["name"])
        assert kept is not None, f"{obj['kind']} {obj['metadata']['name']} was not created"
        assert missing_from(obj["spec"], kept["spec"]) == [], obj["kind"]
        assert obj["metadata"]["labels"].items() <= kept["metadata"]["labels"].items()


def test_a_canary_and_an_s3_model_are_accepted_strictly_too(control_plane, model):
    """render()'s other shapes, applied through the charm's client with fieldValidation=Strict."""
    cluster = Cluster(lambda: control_plane.dynamic())
    config = {
        **V1,
        "gateway": GATEWAY_REF,
        "canary-model-uri": V2["model-uri"],
        "canary-model-sha256": SHA2,
        "canary-weight": 30,
        "replicas": 2,
        "workers": 2,
    }
    objects = render(APP, model, config, canary_ready=True)
    assert [o["kind"] for o in objects] == ["SeldonDeployment", "SeldonDeployment", "VirtualService"]
    for obj in objects:
        cluster.apply(obj)
    s3 = render("s3model", model, {"model-uri": "s3://models/v1.onnx", "model-sha256": SHA1, "gateway": GATEWAY_REF})
    for obj in s3:
        cluster.apply(obj)
    vs = live(control_plane, model, "VirtualService", APP)
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [70, 30]


def test_a_field_the_cluster_does_not_know_is_refused_not_dropped(control_plane, model):
    """Server-side apply refuses a field the CRD lacks (with a 500), and the status names the field."""
    cluster = Cluster(lambda: control_plane.dynamic())
    vs = render(APP, model, {**V1, "gateway": GATEWAY_REF})[-1]
    vs["spec"]["http"][0]["mirrorPercentage"] = {"value": 10.0}  # known to Istio 1.17: accepted
    cluster.apply(vs)
    vs["spec"]["http"][0]["timeOut"] = "10s"  # a misspelling: no such field in Istio 1.17.3's CRD
    with pytest.raises(ClusterError) as refused:
        cluster.apply(vs)
    assert str(refused.value) == (
        "the cluster's CRD does not know a field this charm writes (.spec.http[0].timeOut): "
        "is the Istio or Seldon the bundle pins installed?"
    )


def ours(metadata: dict) -> list[dict]:
    """The charm's own managedFields entry: unchanged unless an apply changed one of its fields.

    (resourceVersion is no measure for a SeldonDeployment: Seldon's operator writes .status.)"""
    return [f for f in metadata["managedFields"] if f["manager"] == "onnx-model-charm"]


def test_applying_twice_changes_nothing(charm, control_plane):
    charm.account(APP)
    charm.run("install", APP, V1)
    before = {
        k: live(control_plane, charm.namespace, k, APP)["metadata"] for k in ("SeldonDeployment", "VirtualService")
    }
    charm.run("update_status", APP, V1)
    charm.run("config_changed", APP, V1)
    after = {
        k: live(control_plane, charm.namespace, k, APP)["metadata"] for k in ("SeldonDeployment", "VirtualService")
    }
    for kind in before:
        assert after[kind]["generation"] == before[kind]["generation"], kind
        assert ours(after[kind]) == ours(before[kind]), kind
    # Nothing else writes to the VirtualService: not even its resourceVersion moves.
    assert after["VirtualService"]["resourceVersion"] == before["VirtualService"]["resourceVersion"]


def test_a_new_model_updates_the_same_object_in_place(charm, control_plane):
    charm.account(APP)
    charm.run("install", APP, V1)
    first = live(control_plane, charm.namespace, "SeldonDeployment", APP)
    charm.run("config_changed", APP, V2)
    second = live(control_plane, charm.namespace, "SeldonDeployment", APP)
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    assert second["metadata"]["generation"] == first["metadata"]["generation"] + 1
    params = {p["name"]: p["value"] for p in second["spec"]["predictors"][0]["graph"]["parameters"]}
    assert params["model_sha256"] == SHA2


def test_removing_one_application_deletes_exactly_its_objects(charm, control_plane):
    charm.account("scratch")
    charm.run("install", "scratch", V1)
    charm.account("dents")
    charm.run("install", "dents", V2)
    dents_before = live(control_plane, charm.namespace, "SeldonDeployment", "dents")["metadata"]
    charm.account("scratch")
    charm.run("remove", "scratch", V1)
    assert live(control_plane, charm.namespace, "SeldonDeployment", "scratch") is None
    assert live(control_plane, charm.namespace, "VirtualService", "scratch") is None
    dents = live(control_plane, charm.namespace, "SeldonDeployment", "dents")
    assert (dents["metadata"]["generation"], ours(dents["metadata"])) == (
        dents_before["generation"],
        ours(dents_before),
    )
    assert live(control_plane, charm.namespace, "VirtualService", "dents") is not None


def test_two_applications_own_disjoint_objects(charm, control_plane):
    """Each object has one manager (the charm, by apply) and is touched only by its application."""
    for app, config in (("scratch", V1), ("dents", V2)):
        charm.account(app)
        charm.run("install", app, config)
    charm.account("scratch")
    dents = live(control_plane, charm.namespace, "VirtualService", "dents")["metadata"]["resourceVersion"]
    charm.run("config_changed", "scratch", V2)
    assert live(control_plane, charm.namespace, "VirtualService", "dents")["metadata"]["resourceVersion"] == dents
    for app in ("scratch", "dents"):
        for kind in ("SeldonDeployment", "VirtualService"):
            fields = live(control_plane, charm.namespace, kind, app)["metadata"]["managedFields"]
            appliers = {(f["manager"], f["operation"]) for f in fields if f["operation"] == "Apply"}
            assert appliers == {("onnx-model-charm", "Apply")}, (app, kind, fields)


def test_without_trust_the_api_answers_403_and_the_status_says_juju_trust(charm, control_plane):
    charm.account(APP, trusted=False)
    out = charm.run("install", APP, V1)
    assert out.unit_status == testing.BlockedStatus(
        f"cannot reach the Kubernetes API (403): run juju trust {APP} --scope=cluster"
    )
    assert live(control_plane, charm.namespace, "SeldonDeployment", APP) is None


def test_an_object_the_api_refuses_422_is_named_in_the_status(charm, control_plane):
    """A label value longer than 63 characters (an application name can be): the API's own words."""
    app = "scratch-" + "x" * 60
    charm.account(app)
    out = charm.run("install", app, {**V1, "model-name": "longname"})
    assert isinstance(out.unit_status, testing.WaitingStatus)
    message = out.unit_status.message
    assert "the API rejected the object (422)" in message
    assert "must be no more than 63 characters" in message
