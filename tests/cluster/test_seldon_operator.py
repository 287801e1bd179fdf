"""What Seldon's real operator makes of the SeldonDeployment render() writes.

The README and the VirtualService assume: a Deployment of our pod with our probes, ports, env and
security context, rolling with maxUnavailable 0 / maxSurge 25%; a Service `<name>-default` on
port 9000 selecting those pods; a canary with its own of both. Here the operator (built from
source, see tests/support/kube_binaries.py) shows what it really does.
"""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from ops import testing

from manifests import CONTAINER, GRPC_PORT, METRICS_PORT, MODEL_PORT, SHA_LABEL, render, service_host
from serving_status import assess
from support.charm_harness import SHA1, SHA2, V1, V2
from support.kube_binaries import SELDON_OPERATOR_VERSION
from support.kube_cluster import GATEWAY, NAMESPACE, wait_for

APP = "scratch"
GATEWAY_REF = f"{NAMESPACE}/{GATEWAY}"


def deployment(plane, namespace: str, sdep: str) -> client.V1Deployment:
    apps = client.AppsV1Api(plane.api())

    def made():
        items = apps.list_namespaced_deployment(namespace, label_selector=f"seldon-deployment-id={sdep}").items
        return items[0] if items else None

    return wait_for(made, 60, f"the operator's Deployment for {sdep}", check=plane.check)


def service(plane, namespace: str, name: str) -> client.V1Service:
    core = client.CoreV1Api(plane.api())
    return wait_for(lambda: core.read_namespaced_service(name, namespace), 60, f"Service {name}", check=plane.check)


def sdep_state(plane, namespace: str, name: str) -> dict:
    custom = client.CustomObjectsApi(plane.api())
    return custom.get_namespaced_custom_object("machinelearning.seldon.io", "v1", namespace, "seldondeployments", name)


def test_the_operator_makes_our_pod_and_the_service_the_route_names(charm, control_plane):
    charm.account(APP)
    charm.run("install", APP, V1)
    dep = deployment(control_plane, charm.namespace, APP)
    assert dep.metadata.name == f"{APP}-default-0-{CONTAINER}"
    (container,) = dep.spec.template.spec.containers  # no executor container: seldon.io/no-engine
    rendered = render(APP, charm.namespace, {**V1, "gateway": GATEWAY_REF})[0]
    want = rendered["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]

    assert container.name == CONTAINER and container.image == want["image"]
    assert {(p.name, p.container_port) for p in container.ports} == {
        ("http", MODEL_PORT),
        ("grpc", GRPC_PORT),
        ("metrics", METRICS_PORT),
    }
    assert container.readiness_probe.http_get.path == "/health/status"
    assert container.readiness_probe.http_get.port == "http"
    assert container.liveness_probe.http_get.path == "/health/ping"
    assert container.startup_probe.failure_threshold == 60
    assert container.resources.requests == want["resources"]["requests"]
    assert container.resources.limits == want["resources"]["limits"]
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.capabilities.drop == ["ALL"]
    assert container.termination_message_policy == "FallbackToLogsOnError"
    # The server needs no API access: no service-account token in its pods (RBAC is on here too).
    assert dep.spec.template.spec.automount_service_account_token is False
    env = {e.name: e.value for e in container.env}
    assert env["GUNICORN_WORKERS"] == "1"
    # Seldon adds the unit's own settings: the ports our declared ones gave it, the graph parameters
    assert env["PREDICTIVE_UNIT_HTTP_SERVICE_PORT"] == str(MODEL_PORT)
    assert env["PREDICTIVE_UNIT_GRPC_SERVICE_PORT"] == str(GRPC_PORT)
    assert SHA1 in env["PREDICTIVE_UNIT_PARAMETERS"]

    # The README's rollout: a new pod must be Ready before an old one goes, one surge pod.
    assert dep.spec.strategy.type == "RollingUpdate"
    assert dep.spec.strategy.rolling_update.max_unavailable == 0
    assert dep.spec.strategy.rolling_update.max_surge == "25%"
    assert dep.spec.template.metadata.labels[SHA_LABEL] == SHA1[:16]

    svc = service(control_plane, charm.namespace, f"{APP}-default")
    assert {(p.name, p.port, p.target_port) for p in svc.spec.ports} >= {("http", MODEL_PORT, MODEL_PORT)}
    assert svc.spec.selector == {"seldon-app": f"{APP}-default"}
    assert dep.spec.template.metadata.labels["seldon-app"] == f"{APP}-default"
    # The VirtualService's destination is that Service, on that port.
    vs = client.CustomObjectsApi(control_plane.api()).get_namespaced_custom_object(
        "networking.istio.io", "v1beta1", charm.namespace, "virtualservices", APP
    )
    (route,) = vs["spec"]["http"][0]["route"]
    assert route["destination"] == {
        "host": service_host(APP, charm.namespace),
        "port": {"number": MODEL_PORT},
    }
    assert route["destination"]["host"] == f"{svc.metadata.name}.{charm.namespace}.svc.cluster.local"


def test_the_pod_security_context_as_this_operator_version_treats_it(charm, control_plane):
    """Seldon 1.16.0 replaces the pod's securityContext with {runAsUser: DEFAULT_USER_ID} (8888 from
    the seldon-core charm); 1.17.1, which the site runs, keeps ours (operator/controllers/
    seldondeployment_controller.go createDeploymentWithoutEngine: `if ...SecurityContext == nil`).
    The container's own securityContext is kept by both, and the image runs as uid 10001 itself."""
    charm.account(APP)
    charm.run("install", APP, V1)
    pod_sc = deployment(control_plane, charm.namespace, APP).spec.template.spec.security_context
    if SELDON_OPERATOR_VERSION == "v1.16.0":
        assert pod_sc.run_as_user == 8888 and pod_sc.run_as_non_root is None
    else:
        assert pod_sc.run_as_user == 10001 and pod_sc.run_as_non_root is True


def test_a_canary_gets_its_own_deployment_and_service(charm, control_plane):
    charm.account(APP)
    canary = {**V1, "canary-model-uri": V2["model-uri"], "canary-model-sha256": SHA2, "canary-weight": 30}
    charm.run("install", APP, canary)
    stable = deployment(control_plane, charm.namespace, APP)
    can = deployment(control_plane, charm.namespace, f"{APP}-canary")
    assert can.metadata.name == f"{APP}-canary-default-0-{CONTAINER}"
    assert can.spec.template.metadata.labels[SHA_LABEL] == SHA2[:16]
    assert stable.spec.template.metadata.labels[SHA_LABEL] == SHA1[:16]
    svc = service(control_plane, charm.namespace, f"{APP}-canary-default")
    assert svc.spec.selector == {"seldon-app": f"{APP}-canary-default"}


def test_the_status_follows_the_state_the_operator_writes(charm, control_plane):
    charm.account(APP)
    out = charm.run("install", APP, V1)
    state = wait_for(
        lambda: sdep_state(control_plane, charm.namespace, APP).get("status", {}).get("state"),
        60,
        "the operator's first status",
        check=control_plane.check,
    )
    assert state == "Creating"  # its pod cannot be Ready before a kubelet runs it
    out = charm.run("update_status", APP, V1)
    assert out.unit_status == testing.WaitingStatus(f"waiting for model {SHA1[:7]} to be ready (Seldon: Creating)")


def test_a_name_a_service_cannot_take_makes_the_operator_fail_and_the_status_says_why(control_plane, model):
    """Seldon names the Service after the SeldonDeployment: a name starting with a digit is not a
    DNS-1035 label, the API refuses the Service, and the operator marks the deployment Failed."""
    (sdep,) = [o for o in render(APP, model, {**V1, "gateway": GATEWAY_REF}) if o["kind"] == "SeldonDeployment"]
    sdep["metadata"]["name"] = sdep["spec"]["name"] = "1scratch"
    control_plane.apply_yaml(sdep)
    live = wait_for(
        lambda: (s := sdep_state(control_plane, model, "1scratch")).get("status", {}).get("state") == "Failed" and s,
        60,
        "the operator to mark 1scratch Failed",
        check=control_plane.check,
    )
    description = live["status"]["description"]
    assert "1scratch-default" in description and "DNS-1035" in description
    verdict = assess("1scratch", SHA1, live, [], app=APP)
    assert verdict.kind == "blocked"
    assert "DNS-1035" in verdict.message


def test_the_webhook_refuses_no_engine_on_a_graph_of_two(control_plane, model):
    """Seldon's validating webhook, registered as the seldon-core charm registers it, answers before
    storage: seldon.io/no-engine is only valid for a single-node graph (seldondeployment_webhook.go)."""
    (sdep,) = [o for o in render(APP, model, {**V1, "gateway": GATEWAY_REF}) if o["kind"] == "SeldonDeployment"]
    graph = sdep["spec"]["predictors"][0]["graph"]
    graph["children"] = [{"name": "second", "type": "MODEL", "endpoint": {"type": "REST"}, "children": []}]
    with pytest.raises(ApiException) as refused:
        control_plane.apply_yaml(sdep)
    assert refused.value.status in (400, 422)
    body = refused.value.body.decode() if isinstance(refused.value.body, bytes) else refused.value.body
    assert "Running without engine only valid for single element graphs" in body
    assert "admission webhook" in body
