"""When the model's pods do not come up, `juju status` names the cause and the fix.

The pods are API JSON as kubelet and the scheduler write it (tests/data/k8s-pods,
see tests/support/pods.py); the charm reads them through the fake client, and a
stand-in for the model server answers /health/status on loopback exactly as the
Seldon wrapper does. Each test asserts the one line a user reads in `juju status`.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
from ops import testing

from capacity import Amount, quantity, room
from support import pods
from support.charm_harness import APP, NS, SHA1, SHA2, V1, V2, gateway_info
from support.fake_k8s import FakeCluster, api_error

TAMPERED = (
    "sha256 mismatch for https://models.example/v2.onnx: expected "
    + SHA2
    + ", got "
    + "e" * 64
    + "; refusing to load it"
)


def state(config: dict, leader: bool = True) -> testing.State:
    """The bundle's shape: related to istio-pilot's gateway-info."""
    return testing.State(leader=leader, config=config, model=testing.Model(name=NS), relations={gateway_info()})


def rolled(ctx: testing.Context, k8s: FakeCluster, config: dict) -> None:
    """The charm applied `config`; Seldon created the SeldonDeployment and is waiting for its pods."""
    ctx.run(ctx.on.config_changed(), state(config))
    k8s.set_sdep_state(NS, APP, "Creating")


def status(ctx: testing.Context, config: dict) -> testing.StatusBase:
    return ctx.run(ctx.on.update_status(), state(config)).unit_status


def edge_box(k8s: FakeCluster) -> None:
    """The 2-CPU node and what else runs there (requests as the upstream charms and add-ons set them)."""
    k8s.put(pods.load("node-edge-01"))
    for namespace, name, cpu, memory in (
        ("kube-system", "calico-node-7xk2p", "250m", "0"),
        ("kube-system", "coredns-864597b5fd-5tq9w", "100m", "70Mi"),
        (NS, "istiod-6b7d9c8f5-k2m4x", "500m", "2Gi"),
        (NS, "istio-ingressgateway-workload-7c9f5d6b8-2lq7n", "10m", "40Mi"),
    ):
        k8s.put(pods.other_pod(namespace, name, cpu, memory))


class Server:
    """Answers GET /health/status as the Seldon wrapper does for DefectModel.health_status().

    seldon-core v1.17.1 python/seldon_core/wrapper.py ``handle_invalid_usage`` and flask_utils.py
    ``SeldonMicroserviceException.to_dict``: HTTP 503 and
    ``{"status": {"status": 1, "info": ..., "code": -1, "reason": "MODEL_NOT_READY"}}``.
    """

    def __init__(self, info: str, delay: float = 0.0) -> None:
        self.info, self.delay, self.asked = info, delay, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.asked.append(self.path)
                time.sleep(outer.delay)
                body = json.dumps(
                    {"status": {"status": 1, "info": outer.info, "code": -1, "reason": "MODEL_NOT_READY"}}
                )
                try:
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(body.encode())
                except (BrokenPipeError, ConnectionResetError):
                    # The charm's probe gave up first (the slow-server tests); a traceback printed
                    # from this thread would land in whichever test runs next.
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_says():
    started = []

    def start(info: str, delay: float = 0.0) -> Server:
        started.append(Server(info, delay))
        return started[-1]

    yield start
    for server in started:
        server.stop()


# --- a healthy rollout still reads as before ------------------------------------------


def test_a_healthy_rollout_reads_as_before_and_ends_active_serving(ctx, k8s, server_says):
    rolled(ctx, k8s, V1)
    k8s.put(pods.model_pod("ready", SHA1, "old01"))
    k8s.set_sdep_state(NS, APP, "Available")
    assert status(ctx, V1) == testing.ActiveStatus(f"serving /model/{APP}/ sha {SHA1[:7]}")

    rolled(ctx, k8s, V2)
    loading = server_says("not ready: model not loaded yet")  # DefectModel while it fetches and loads
    k8s.put(pods.model_pod("running-unready", SHA2, "new01", health_port=loading.port))
    assert status(ctx, V2) == testing.WaitingStatus(
        f"rolling out {SHA2[:7]}, still serving {SHA1[:7]}: waiting for it to be ready"
    )
    assert loading.asked == ["/health/status"]

    k8s.put(pods.model_pod("ready", SHA2, "new01"))
    k8s.remove_pods(NS, SHA1)
    k8s.set_sdep_state(NS, APP, "Available")
    out = ctx.run(ctx.on.update_status(), state(V2))
    assert out.unit_status == testing.ActiveStatus(f"serving /model/{APP}/ sha {SHA2[:7]}")
    assert out.workload_version == SHA2[:12]


# --- image cannot be pulled -----------------------------------------------------------


@pytest.mark.parametrize(
    "fixture, reason",
    [("err-image-pull", "ErrImagePull: not found"), ("image-pull-backoff", "ImagePullBackOff")],
)
def test_an_image_that_cannot_be_pulled_is_named_with_how_to_load_it(ctx, k8s, fixture, reason):
    rolled(ctx, k8s, V1)
    k8s.put(pods.model_pod(fixture, SHA1))
    assert status(ctx, V1) == testing.BlockedStatus(
        f"image localhost/defect-server:0.2.0 cannot be pulled ({reason}): load it: "
        "sudo scripts/bootstrap-edge-site, or microk8s ctr image import <archive>; "
        f"or juju config {APP} server-image=<image>"
    )


# --- unschedulable --------------------------------------------------------------------


def test_an_unschedulable_pod_says_what_it_asks_what_is_free_and_a_value_that_fits(ctx, k8s):
    rolled(ctx, k8s, V1)
    edge_box(k8s)
    k8s.put(pods.model_pod("unschedulable-cpu", SHA1))
    # A second model holds 1 CPU: 2000m allocatable - 860m (the site) - 1000m = 140m free.
    k8s.put(pods.other_pod(NS, "second-default-0-model-5c8d7f6b9-x2v4n", "1", "512Mi"))
    out = status(ctx, V1)
    assert out == testing.BlockedStatus(
        "pod cannot be scheduled (0/1 nodes are available: 1 Insufficient cpu): it requests 1 CPU, "
        f"the node has 140m free: juju config {APP} cpu-request=140m, or a bigger box"
    )


def test_a_rollout_that_does_not_fit_beside_the_old_pod_says_both(ctx, k8s):
    """The surge pod of a roll needs room while the old one still holds its requests."""
    rolled(ctx, k8s, V1)
    k8s.put(pods.model_pod("ready", SHA1, "old01"))
    k8s.set_sdep_state(NS, APP, "Available")
    edge_box(k8s)
    rolled(ctx, k8s, V2)
    k8s.put(pods.model_pod("unschedulable-cpu-memory", SHA2, "new01"))
    out = status(ctx, V2)
    # free: 2000m - 860m - 1000m (old pod) = 140m; 3910988Ki - 2158Mi - 1Gi = 637Mi.
    assert out == testing.BlockedStatus(
        f"still serving {SHA1[:7]}; {SHA2[:7]} fails: pod cannot be scheduled (0/1 nodes are available: "
        "1 Insufficient cpu, 1 Insufficient memory): it requests 1 CPU and 1Gi, the node has 140m and 637Mi "
        f"free: juju config {APP} cpu-request=140m memory-request=637Mi, or a bigger box"
    )


def test_unschedulable_without_cluster_scope_trust_still_says_what_it_asks(ctx, k8s):
    rolled(ctx, k8s, V1)
    k8s.fail[("get", "Node")] = api_error(403, 'nodes is forbidden: User "system:serviceaccount:kubeflow:scratch"')
    k8s.put(pods.model_pod("unschedulable-cpu", SHA1))
    assert status(ctx, V1) == testing.BlockedStatus(
        "pod cannot be scheduled (0/1 nodes are available: 1 Insufficient cpu): it requests 1 CPU: "
        f"lower cpu-request (juju config {APP} cpu-request=...), or a bigger box"
    )


# --- crashes --------------------------------------------------------------------------


def test_oomkilled_says_raise_memory_with_a_value(ctx, k8s):
    rolled(ctx, k8s, V1)
    k8s.put(pods.model_pod("oomkilled", SHA1))
    assert status(ctx, V1) == testing.BlockedStatus(
        f"container model OOMKilled at its 1Gi limit: raise memory: juju config {APP} memory=2Gi"
    )


def test_crashloop_says_the_last_exit_and_where_the_logs_are(ctx, k8s):
    rolled(ctx, k8s, V1)
    pod = pods.model_pod("crashloop-error", SHA1)
    k8s.put(pod)
    assert status(ctx, V1) == testing.BlockedStatus(
        "container model keeps crashing (exit 1 Error: ModuleNotFoundError: No module named 'defect_server'): "
        f"kubectl -n {NS} logs {pod['metadata']['name']} -c model --previous"
    )


# --- a model the server refused -------------------------------------------------------


def test_a_refused_model_shows_the_servers_own_reason(ctx, k8s, server_says):
    rolled(ctx, k8s, V2)
    server = server_says(f"not ready: {TAMPERED}")
    k8s.put(pods.model_pod("running-unready", SHA2, health_port=server.port))
    out = status(ctx, V2)
    assert server.asked == ["/health/status"]  # the readiness probe's own path, from the pod spec
    assert out == testing.BlockedStatus(
        "model refused by the server: sha256 mismatch for https://models.example/v2.onnx: "
        f"expected {SHA2[:12]}…, got {'e' * 12}…; refusing to load it"
    )


def test_a_failing_new_pod_while_the_old_still_serves_says_both(ctx, k8s, server_says):
    rolled(ctx, k8s, V1)
    k8s.put(pods.model_pod("ready", SHA1, "old01"))
    k8s.set_sdep_state(NS, APP, "Available")
    rolled(ctx, k8s, V2)
    server = server_says(f"not ready: {TAMPERED}")
    k8s.put(pods.model_pod("running-unready", SHA2, "new01", health_port=server.port))
    out = status(ctx, V2)
    assert out.name == "blocked"
    assert out.message.startswith(
        f"still serving {SHA1[:7]}; {SHA2[:7]} fails: model refused by the server: sha256 mismatch for "
    )
    assert "\n" not in out.message and len(out.message) <= 300


def test_a_download_the_server_retries_is_waiting_not_blocked(ctx, k8s, server_says):
    rolled(ctx, k8s, V2)
    server = server_says("not ready: cannot download https://models.example/v2.onnx: ConnectionError: refused")
    k8s.put(pods.model_pod("running-unready", SHA2, health_port=server.port))
    assert status(ctx, V2) == testing.WaitingStatus(
        "model server cannot get the model, retrying: cannot download https://models.example/v2.onnx: "
        "ConnectionError: refused"
    )


def test_a_server_that_does_not_answer_in_time_does_not_hold_the_hook(ctx, k8s, server_says):
    rolled(ctx, k8s, V2)
    server = server_says(f"not ready: {TAMPERED}", delay=10)
    k8s.put(pods.model_pod("running-unready", SHA2, health_port=server.port))
    began = time.monotonic()
    out = status(ctx, V2)
    assert time.monotonic() - began < 5
    assert out == testing.WaitingStatus(f"waiting for model {SHA2[:7]} to be ready (Seldon: Creating)")


# --- Seldon gave up -------------------------------------------------------------------


def seldon_gave_up(k8s: FakeCluster) -> None:
    """What seldon-core v1.17.1 operator/controllers/seldondeployment_controller.go writes once the
    Deployment is neither Progressing nor Available: state Failed, this fixed description, and the
    Deployment's Available condition copied into the DeploymentsReady condition (status.conditions,
    knative duckv1.Status inlined in SeldonDeploymentStatus, operator/apis/.../seldon_deployment_status.go)."""
    sdep = k8s.objects[("SeldonDeployment", NS, APP)]
    sdep["status"] = {
        "state": "Failed",
        "description": "Deployment is no longer progressing and not available.",
        "conditions": [
            {
                "type": "DeploymentsReady",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "message": "Deployment does not have minimum availability.",
                "lastTransitionTime": "2026-03-02T09:24:06Z",
            },
            {"type": "Ready", "status": "False", "reason": "MinimumReplicasUnavailable"},
        ],
        "deploymentStatus": {"scratch-default-0-model": {"replicas": 1}},
        "replicas": 1,
    }


def test_seldon_failed_with_no_pod_cause_quotes_seldon_and_where_to_look(ctx, k8s):
    rolled(ctx, k8s, V1)
    seldon_gave_up(k8s)
    k8s.put(pods.model_pod("running-unready", SHA1))  # unready, no reason reachable
    assert status(ctx, V1) == testing.BlockedStatus(
        "SeldonDeployment failed: Deployment is no longer progressing and not available "
        "(Deployment does not have minimum availability): "
        f"see kubectl -n {NS} describe pods -l seldon-deployment-id={APP}"
    )


def test_seldon_failed_because_of_a_pod_names_the_pods_cause(ctx, k8s):
    rolled(ctx, k8s, V1)
    seldon_gave_up(k8s)
    k8s.put(pods.model_pod("image-pull-backoff", SHA1))
    out = status(ctx, V1)
    assert out.name == "blocked"
    assert out.message.startswith("image localhost/defect-server:0.2.0 cannot be pulled (ImagePullBackOff)")


# --- the arithmetic behind "free" -----------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [("250m", 0.25), ("1", 1), ("1.5", 1.5), ("3910988Ki", 3910988 * 1024), ("1Gi", 2**30), ("129e6", 129e6)],
)
def test_quantities_read_as_kubernetes_writes_them(text, value):
    assert float(quantity(text)) == pytest.approx(value)


def test_room_ignores_finished_pods_and_pods_on_other_nodes():
    node = pods.load("node-edge-01")
    done = pods.other_pod("kube-system", "job-x", "1", "1Gi")
    done["status"]["phase"] = "Succeeded"
    elsewhere = pods.other_pod("kube-system", "other-y", "1", "1Gi", node="edge-02")
    running = pods.other_pod("kube-system", "calico-node-7xk2p", "250m", "0")
    assert room([node], [done, elsewhere, running]) == {"edge-01": Amount(1750, 3910988 * 1024)}


# --- a shadow's pods are diagnosed like the stable model's ------------------------------

SHADOW = {**V1, "shadow-model-uri": "https://models.example/v2.onnx", "shadow-model-sha256": SHA2}


def shadow_pod(fixture: str, suffix: str, health_port: int | None = None) -> dict:
    """A pod of the shadow's SeldonDeployment (<app>-shadow), labelled as Seldon labels it."""
    pod = pods.model_pod(fixture, SHA2, suffix, health_port=health_port)
    sdep = f"{APP}-shadow"
    pod["metadata"]["labels"].update({"seldon-deployment-id": sdep, "seldon-app": f"{sdep}-default"})
    pod["metadata"]["name"] = f"{sdep}-default-0-model-{suffix}"
    return pod


def serving_with_a_shadow(ctx: testing.Context, k8s: FakeCluster) -> None:
    rolled(ctx, k8s, SHADOW)
    k8s.put(pods.model_pod("ready", SHA1, "old01"))
    k8s.set_sdep_state(NS, APP, "Available")
    k8s.set_sdep_state(NS, f"{APP}-shadow", "Creating")


def test_a_tampered_shadow_is_quoted_and_the_stable_model_keeps_serving(ctx, k8s, server_says):
    serving_with_a_shadow(ctx, k8s)
    server = server_says(f"not ready: {TAMPERED}")
    k8s.put(shadow_pod("running-unready", "sh01", health_port=server.port))
    out = status(ctx, SHADOW)
    assert server.asked == ["/health/status"]
    assert out == testing.BlockedStatus(
        f"serving /model/{APP}/ sha {SHA1[:7]}; shadow {SHA2[:7]} refused, the line is unaffected: model "
        "refused by the server: sha256 mismatch for https://models.example/v2.onnx: "
        f"expected {SHA2[:12]}…, got {'e' * 12}…; refusing to load it"
    )


def test_a_shadow_still_downloading_is_starting(ctx, k8s, server_says):
    serving_with_a_shadow(ctx, k8s)
    server = server_says("not ready: cannot download https://models.example/v2.onnx: ConnectionError: refused")
    k8s.put(shadow_pod("running-unready", "sh01", health_port=server.port))
    out = status(ctx, SHADOW)
    assert out.name == "waiting"
    assert out.message.startswith(
        f"serving /model/{APP}/ sha {SHA1[:7]}; shadow {SHA2[:7]} starting: model server cannot get the model, "
        "retrying: cannot download"
    )


def test_a_shadow_that_does_not_fit_the_box_says_so(ctx, k8s):
    """A shadow is one more model pod (README "Sizing"): where it does not fit, its pod stays Pending."""
    serving_with_a_shadow(ctx, k8s)
    edge_box(k8s)
    k8s.put(shadow_pod("unschedulable-cpu-memory", "sh01"))
    out = status(ctx, SHADOW)
    assert out.name == "blocked"
    assert out.message.startswith(
        f"serving /model/{APP}/ sha {SHA1[:7]}; shadow {SHA2[:7]} refused, the line is unaffected: pod cannot "
        "be scheduled (0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory): it requests 1 CPU"
    )
    assert f"juju config {APP} " in out.message
