"""The charm's state transitions (ops.testing), against a fake at the Kubernetes client boundary.

Each test says what a user would see: which objects exist in the cluster
afterwards and what `juju status` says.
"""

from __future__ import annotations

import json
import logging

import pytest
from ops import testing

from charm import OnnxModelCharm
from model_config import DEFAULT_MODEL_SHA256
from support.charm_harness import APP, NS, SHA1, SHA2, V1, V2, gateway_info
from support.fake_k8s import FakeCluster, Timeout, api_error


def state(config: dict | None = None, leader: bool = True, **kw) -> testing.State:
    """The bundle's shape: related to istio-pilot's gateway-info (tests/unit/test_charm_gateway.py: without)."""
    relations = {gateway_info(), *kw.pop("relations", ())}
    return testing.State(leader=leader, config=config or {}, model=testing.Model(name=NS), relations=relations, **kw)


def sdep_params(k8s: FakeCluster, name: str = APP) -> dict:
    graph = k8s.of_kind("SeldonDeployment")[name]["spec"]["predictors"][0]["graph"]
    return {p["name"]: p["value"] for p in graph["parameters"]}


def snapshot(k8s: FakeCluster) -> str:
    return json.dumps({"/".join(k): v for k, v in k8s.objects.items()}, sort_keys=True)


def serving(k8s: FakeCluster, sha: str, name: str = APP) -> None:
    """What Seldon and the kubelet do once the model pod passes its readiness probe."""
    k8s.set_sdep_state(NS, name, "Available")
    k8s.add_pod(NS, name, sha, ready=True)


# --- the happy path ----------------------------------------------------------------


def test_install_applies_exactly_a_seldondeployment_and_a_virtualservice(ctx, k8s):
    out = ctx.run(ctx.on.install(), state())
    assert set(k8s.objects) == {("SeldonDeployment", NS, APP), ("VirtualService", NS, APP)}
    assert k8s.managers == {"onnx-model-charm"}
    assert out.unit_status == testing.WaitingStatus(
        f"waiting for model {DEFAULT_MODEL_SHA256[:7]} to be ready (Seldon: Creating)"
    )


def test_config_changed_serves_the_configured_model_once_ready(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(V1))
    assert sdep_params(k8s)["model_uri"] == V1["model-uri"]
    serving(k8s, SHA1)
    out = ctx.run(ctx.on.update_status(), state(V1))
    assert out.unit_status == testing.ActiveStatus(f"serving /model/{APP}/ sha {SHA1[:7]}")
    assert out.workload_version == SHA1[:12]


def test_reconcile_is_idempotent(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(V1))
    first = snapshot(k8s)
    ctx.run(ctx.on.update_status(), state(V1))
    ctx.run(ctx.on.upgrade_charm(), state(V1))
    assert snapshot(k8s) == first


@pytest.mark.parametrize("event", ["install", "config_changed", "upgrade_charm", "leader_elected", "update_status"])
def test_every_relevant_event_reconciles(ctx, k8s, event):
    ctx.run(getattr(ctx.on, event)(), state(V1))
    assert sdep_params(k8s)["model_sha256"] == SHA1


def test_update_status_repairs_drift(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(V1))
    del k8s.objects[("VirtualService", NS, APP)]
    k8s.objects[("SeldonDeployment", NS, APP)]["spec"]["predictors"][0]["replicas"] = 5
    ctx.run(ctx.on.update_status(), state(V1))
    assert ("VirtualService", NS, APP) in k8s.objects
    assert k8s.of_kind("SeldonDeployment")[APP]["spec"]["predictors"][0]["replicas"] == 1


def test_model_name_sets_the_url_segment(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state({"model-name": "tags"}))
    vs = k8s.of_kind("VirtualService")["tags"]
    assert vs["spec"]["http"][0]["match"][0]["uri"]["prefix"] == "/model/tags/"


# --- rollout -----------------------------------------------------------------------


def test_rollout_reports_the_version_actually_serving(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(V1))
    serving(k8s, SHA1)

    # The user rolls v2: the spec changes at once, the serving version does not.
    out = ctx.run(ctx.on.config_changed(), state(V2))
    assert sdep_params(k8s)["model_sha256"] == SHA2
    assert out.unit_status.name == "waiting"
    assert f"rolling out {SHA2[:7]}, still serving {SHA1[:7]}" in out.unit_status.message

    # The new pod becomes Ready while the old one still serves.
    k8s.set_sdep_state(NS, APP, "Creating")
    k8s.add_pod(NS, APP, SHA2, ready=True)
    out = ctx.run(ctx.on.update_status(), state(V2))
    assert out.unit_status == testing.WaitingStatus(f"rolling out: serving {SHA1[:7]}, {SHA2[:7]} (Seldon: Creating)")

    # The old pod is gone.
    k8s.remove_pods(NS, SHA1)
    k8s.set_sdep_state(NS, APP, "Available")
    out = ctx.run(ctx.on.update_status(), state(V2))
    assert out.unit_status == testing.ActiveStatus(f"serving /model/{APP}/ sha {SHA2[:7]}")


def test_a_model_not_ready_yet_leaves_the_old_one_serving_and_says_so(ctx, k8s):
    """A new pod with nothing wrong known (yet): the old one serves. Causes: test_charm_diagnosis.py."""
    ctx.run(ctx.on.config_changed(), state(V1))
    serving(k8s, SHA1)
    ctx.run(ctx.on.config_changed(), state(V2))
    k8s.add_pod(NS, APP, SHA2, ready=False)
    out = ctx.run(ctx.on.update_status(), state(V2))
    assert out.unit_status == testing.WaitingStatus(
        f"rolling out {SHA2[:7]}, still serving {SHA1[:7]}: waiting for it to be ready"
    )


def test_terminating_pods_do_not_count_as_serving(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(V1))
    k8s.set_sdep_state(NS, APP, "Available")
    k8s.add_pod(NS, APP, SHA1, ready=True, terminating=True)
    out = ctx.run(ctx.on.update_status(), state(V1))
    assert out.unit_status.name == "waiting"


# Seldon's Failed state, with what v1.17.1 really writes: test_charm_diagnosis.py.


# --- invalid config ----------------------------------------------------------------


@pytest.mark.parametrize(
    "config, option",
    [
        ({"model-uri": "https://h/m.onnx"}, "model-sha256"),
        ({"model-uri": "https://h/m.onnx", "model-sha256": "xyz"}, "model-sha256"),
        ({"model-uri": "gopher://h/m.onnx", "model-sha256": SHA1}, "model-uri"),
        ({"model-name": "Bad Name"}, "model-name"),
        ({"model-name": "9line"}, "model-name"),
        ({"replicas": 0}, "replicas"),
        ({"workers": 9}, "workers"),
        ({"confidence-threshold": 2.0}, "confidence-threshold"),
        ({"iou-threshold": 0.0}, "iou-threshold"),
        ({"input-size": 100}, "input-size"),
        ({"max-image-pixels": -1}, "max-image-pixels"),
        ({"cpu": "fast"}, "cpu"),
        ({"memory": "lots"}, "memory"),
        ({"server-image": "not an image"}, "server-image"),
        ({"gateway": "no-namespace"}, "gateway"),
        ({"cpu-request": "2", "cpu": "1"}, "cpu-request"),
        ({"memory-request": "2Gi"}, "memory-request"),
        ({"memory-request": "lots"}, "memory-request"),
        ({"s3-endpoint": "ftp://x"}, "s3-endpoint"),
        ({"model-version": "has space", **V1}, "model-version"),
    ],
)
def test_invalid_option_blocks_naming_it_and_applies_nothing(ctx, k8s, config, option):
    out = ctx.run(ctx.on.config_changed(), state(config))
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith(f"Invalid config: {option}: ")
    assert k8s.objects == {}


def test_invalid_config_keeps_the_running_model(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(V1))
    before = snapshot(k8s)
    ctx.run(ctx.on.config_changed(), state({"model-uri": V2["model-uri"]}))  # sha forgotten
    assert snapshot(k8s) == before


# --- leadership, trust and API errors ----------------------------------------------


def test_only_the_leader_writes(ctx, k8s):
    out = ctx.run(ctx.on.config_changed(), state(V1, leader=False))
    assert k8s.objects == {}
    assert out.unit_status.name == "waiting"


def test_non_leader_reports_what_the_leader_applied(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(V1))
    serving(k8s, SHA1)
    out = ctx.run(ctx.on.update_status(), state(V1, leader=False))
    assert out.unit_status == testing.ActiveStatus(f"serving /model/{APP}/ sha {SHA1[:7]}")


def test_forbidden_asks_for_juju_trust(ctx, k8s):
    k8s.fail[("apply", "*")] = api_error(403, "seldondeployments is forbidden")
    out = ctx.run(ctx.on.install(), state())
    assert out.unit_status == testing.BlockedStatus(
        f"cannot reach the Kubernetes API (403): run juju trust {APP} --scope=cluster"
    )


@pytest.mark.parametrize(
    "error, words",
    [
        (api_error(500, "etcdserver: request timed out"), "the API server failed (500)"),
        (api_error(409, "Operation cannot be fulfilled"), "conflict (409)"),
        (api_error(422, "spec.predictors: Required value"), "rejected the object (422)"),
        (
            api_error(500, 'Internal error occurred: failed calling webhook "v1.vseldondeployment.kb.io"'),
            "is seldon-controller-manager running?",
        ),
        (Timeout("Read timed out. (read timeout=60)"), "Timeout"),
    ],
)
def test_api_errors_wait_and_a_later_event_completes_the_reconcile(ctx, k8s, error, words):
    # The VirtualService write fails after the SeldonDeployment went through.
    k8s.fail[("apply", "VirtualService")] = error
    k8s.fail_times[("apply", "VirtualService")] = 1
    out = ctx.run(ctx.on.config_changed(), state(V1))
    assert out.unit_status.name == "waiting"
    assert words in out.unit_status.message and "retrying" in out.unit_status.message

    out = ctx.run(ctx.on.update_status(), state(V1))
    assert set(k8s.objects) == {("SeldonDeployment", NS, APP), ("VirtualService", NS, APP)}
    assert "retrying" not in out.unit_status.message


def test_missing_seldon_crd_says_what_to_deploy(ctx, k8s):
    k8s.served.discard(("machinelearning.seldon.io/v1", "SeldonDeployment"))
    out = ctx.run(ctx.on.install(), state())
    assert out.unit_status.name == "waiting"
    assert "deploy seldon-core first" in out.unit_status.message


def test_serving_but_no_gateway_yet_waits_for_istio(ctx, k8s):
    k8s.existing.clear()
    ctx.run(ctx.on.config_changed(), state(V1))
    serving(k8s, SHA1)
    out = ctx.run(ctx.on.update_status(), state(V1))
    assert out.unit_status == testing.WaitingStatus(
        "waiting for the Istio gateway kubeflow/kubeflow-gateway (istio-pilot creates it)"
    )


# --- pruning and removal -----------------------------------------------------------


def test_renamed_model_prunes_the_old_objects(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(V1))
    ctx.run(ctx.on.config_changed(), state({**V1, "model-name": "tags"}))
    assert set(k8s.objects) == {("SeldonDeployment", NS, "tags"), ("VirtualService", NS, "tags")}


def test_remove_deletes_everything_of_this_application_only(ctx, k8s):
    other = testing.Context(OnnxModelCharm, app_name="dents")
    other.run(other.on.config_changed(), state(V2))
    ctx.run(ctx.on.config_changed(), state(V1))
    ctx.run(ctx.on.remove(), state(V1))
    assert set(k8s.objects) == {("SeldonDeployment", NS, "dents"), ("VirtualService", NS, "dents")}


def test_remove_in_an_api_outage_says_what_is_left_and_the_command_that_removes_it(ctx, k8s, caplog):
    other = testing.Context(OnnxModelCharm, app_name="dents")
    other.run(other.on.config_changed(), state(V2))
    ctx.run(ctx.on.config_changed(), state(V1))
    k8s.fail[("delete", "*")] = api_error(503, "unavailable")
    out = ctx.run(ctx.on.remove(), state(V1))  # no crash: Juju would otherwise retry forever
    assert out.unit_status.name == "blocked"
    message = out.unit_status.message
    assert message.startswith(f"could not delete what serves /model/{APP}/ (")
    assert message in caplog.text  # in juju debug-log too
    command = message.split("Remove it with: ", 1)[1]
    assert command.startswith(f"microk8s kubectl -n {NS} delete seldondeployments.machinelearning.seldon.io,")
    # The command's label selector picks exactly this application's objects, not the neighbour's.
    selector = dict(pair.split("=", 1) for pair in command.split(" -l ", 1)[1].split(","))
    left = {key for key, obj in k8s.objects.items() if selector.items() <= obj["metadata"]["labels"].items()}
    assert left == {("SeldonDeployment", NS, APP), ("VirtualService", NS, APP)}


# --- s3 credentials from a Juju secret ---------------------------------------------

CREDS = {"access-key-id": "AKIAEDGESITE", "secret-access-key": "very-secret-value-123"}
S3 = {"model-uri": "s3://models/scratch/v3.onnx", "model-sha256": SHA2, "s3-endpoint": "http://minio:9000"}


def test_s3_credentials_reach_the_pod_as_a_kubernetes_secret_only(ctx, k8s, caplog):
    caplog.set_level(logging.DEBUG)
    secret = testing.Secret(tracked_content=CREDS)
    out = ctx.run(ctx.on.config_changed(), state({**S3, "s3-credentials": secret.id}, secrets={secret}))
    stored = k8s.of_kind("Secret")[f"{APP}-s3-credentials"]
    assert stored["stringData"] == CREDS
    sdep = json.dumps(k8s.of_kind("SeldonDeployment")[APP])
    assert "secretKeyRef" in sdep
    for value in CREDS.values():
        assert value not in sdep
        assert value not in out.unit_status.message
        assert value not in caplog.text


def test_rotated_secret_is_applied_on_secret_changed(ctx, k8s):
    secret = testing.Secret(tracked_content=CREDS, latest_content={**CREDS, "secret-access-key": "rotated"})
    ctx.run(ctx.on.secret_changed(secret), state({**S3, "s3-credentials": secret.id}, secrets={secret}))
    assert k8s.of_kind("Secret")[f"{APP}-s3-credentials"]["stringData"]["secret-access-key"] == "rotated"


def test_s3_uri_without_credentials_blocks(ctx, k8s):
    out = ctx.run(ctx.on.config_changed(), state(S3))
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith("s3-credentials: ")
    assert k8s.objects == {}


def test_ungranted_secret_blocks_with_the_grant_command(ctx, k8s):
    out = ctx.run(ctx.on.config_changed(), state({**S3, "s3-credentials": "secret:cu0nbsnvumvvj5u5s1b0"}))
    assert out.unit_status == testing.BlockedStatus(
        f"s3-credentials: secret not found or not granted: juju grant-secret <id> {APP}"
    )


def test_secret_with_missing_keys_blocks(ctx, k8s):
    secret = testing.Secret(tracked_content={"access-key-id": "x"})
    out = ctx.run(ctx.on.config_changed(), state({**S3, "s3-credentials": secret.id}, secrets={secret}))
    assert out.unit_status == testing.BlockedStatus("s3-credentials: the secret lacks the key(s) secret-access-key")


def test_moving_off_s3_prunes_the_credentials(ctx, k8s):
    secret = testing.Secret(tracked_content=CREDS)
    ctx.run(ctx.on.config_changed(), state({**S3, "s3-credentials": secret.id}, secrets={secret}))
    ctx.run(ctx.on.config_changed(), state({**V1, "s3-credentials": secret.id}, secrets={secret}))
    assert k8s.of_kind("Secret") == {}


# --- canary ------------------------------------------------------------------------

CANARY = {
    **V1,
    "canary-model-uri": V2["model-uri"],
    "canary-model-sha256": SHA2,
    "canary-weight": 10,
}
CANARY_HOST = f"{APP}-canary-default.{NS}.svc.cluster.local"
STABLE_HOST = f"{APP}-default.{NS}.svc.cluster.local"


def routed(k8s: FakeCluster) -> dict[str, int]:
    return {
        d["destination"]["host"]: d["weight"] for d in k8s.of_kind("VirtualService")[APP]["spec"]["http"][0]["route"]
    }


def test_a_canary_gets_its_share_only_once_its_pods_are_ready(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(V1))
    serving(k8s, SHA1)
    out = ctx.run(ctx.on.config_changed(), state(CANARY))
    assert set(k8s.of_kind("SeldonDeployment")) == {APP, f"{APP}-canary"}
    assert routed(k8s) == {STABLE_HOST: 100}  # no Ready canary pod yet: no request for it
    assert out.unit_status.name == "waiting"
    assert out.unit_status.message.startswith(f"serving /model/{APP}/ sha {SHA1[:7]}; canary {SHA2[:7]} not Ready")

    serving(k8s, SHA2, name=f"{APP}-canary")
    out = ctx.run(ctx.on.update_status(), state(CANARY))
    assert routed(k8s) == {STABLE_HOST: 90, CANARY_HOST: 10}
    assert out.unit_status == testing.ActiveStatus(f"serving /model/{APP}/ sha {SHA1[:7]}, canary {SHA2[:7]} at 10%")
    assert out.workload_version == SHA1[:12]


def test_a_refused_canary_never_takes_traffic_and_the_status_says_why(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(V1))
    serving(k8s, SHA1)
    ctx.run(ctx.on.config_changed(), state(CANARY))
    k8s.add_pod(NS, f"{APP}-canary", SHA2, ready=False)  # sha256 mismatch: readiness never passes
    k8s.set_sdep_state(NS, f"{APP}-canary", "Failed", "Deployment is no longer progressing and not available.")
    out = ctx.run(ctx.on.update_status(), state(CANARY))
    assert routed(k8s) == {STABLE_HOST: 100}
    assert out.unit_status == testing.BlockedStatus(
        f"serving /model/{APP}/ sha {SHA1[:7]}; canary {SHA2[:7]} refused (SeldonDeployment failed: "
        "Deployment is no longer progressing and not available.), its 10% stays with the stable model"
    )


def test_a_canary_pod_that_stops_being_ready_loses_its_share(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(CANARY))
    serving(k8s, SHA1)
    serving(k8s, SHA2, name=f"{APP}-canary")
    ctx.run(ctx.on.update_status(), state(CANARY))
    assert routed(k8s)[CANARY_HOST] == 10
    k8s.remove_pods(NS, SHA2)
    k8s.add_pod(NS, f"{APP}-canary", SHA2, ready=False)
    ctx.run(ctx.on.update_status(), state(CANARY))
    assert routed(k8s) == {STABLE_HOST: 100}


def test_canary_weight_zero_keeps_it_running_without_traffic(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state({**CANARY, "canary-weight": 0}))
    serving(k8s, SHA1)
    serving(k8s, SHA2, name=f"{APP}-canary")
    out = ctx.run(ctx.on.update_status(), state({**CANARY, "canary-weight": 0}))
    assert routed(k8s) == {STABLE_HOST: 100}
    assert f"{APP}-canary" in k8s.of_kind("SeldonDeployment")
    assert out.unit_status == testing.ActiveStatus(f"serving /model/{APP}/ sha {SHA1[:7]}, canary {SHA2[:7]} at 0%")


def test_a_removed_canary_loses_its_share_before_its_pods_go(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(CANARY))
    serving(k8s, SHA1)
    serving(k8s, SHA2, name=f"{APP}-canary")
    ctx.run(ctx.on.update_status(), state(CANARY))
    assert routed(k8s)[CANARY_HOST] == 10

    # juju config --reset canary-*: first the route goes back to the stable model alone...
    out = ctx.run(ctx.on.config_changed(), state(V1))
    assert routed(k8s) == {STABLE_HOST: 100}
    assert f"{APP}-canary" in k8s.of_kind("SeldonDeployment")
    assert out.unit_status == testing.ActiveStatus(f"serving /model/{APP}/ sha {SHA1[:7]}")
    # ...then, at the next event, the canary's SeldonDeployment (and with it its pods) goes.
    ctx.run(ctx.on.update_status(), state(V1))
    assert set(k8s.of_kind("SeldonDeployment")) == {APP}


def test_a_canary_at_zero_percent_goes_at_once(ctx, k8s):
    """What roll-model --abort does: weight 0 first, then the canary options go."""
    ctx.run(ctx.on.config_changed(), state({**CANARY, "canary-weight": 0}))
    ctx.run(ctx.on.config_changed(), state(V1))
    assert set(k8s.of_kind("SeldonDeployment")) == {APP}


def test_promotion_keeps_the_canary_share_until_the_stable_pods_serve_it(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(CANARY))
    serving(k8s, SHA1)
    serving(k8s, SHA2, name=f"{APP}-canary")
    ctx.run(ctx.on.update_status(), state(CANARY))
    promoted = {**CANARY, **V2}
    out = ctx.run(ctx.on.config_changed(), state(promoted))
    assert routed(k8s) == {STABLE_HOST: 90, CANARY_HOST: 10}
    assert sdep_params(k8s)["model_sha256"] == SHA2
    assert out.unit_status.name == "waiting" and "rolling out" in out.unit_status.message
    k8s.remove_pods(NS, SHA1)
    k8s.add_pod(NS, APP, SHA2, ready=True)
    out = ctx.run(ctx.on.update_status(), state(promoted))
    assert out.unit_status == testing.ActiveStatus(f"serving /model/{APP}/ sha {SHA2[:7]}, canary {SHA2[:7]} at 10%")


def test_canary_pods_are_scraped_with_their_own_sha(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(CANARY))
    serving(k8s, SHA1)
    serving(k8s, SHA2, name=f"{APP}-canary")
    relation = testing.Relation("metrics-endpoint")
    out = ctx.run(ctx.on.update_status(), state(CANARY, relations={relation}))
    jobs = json.loads(out.get_relation(relation.id).local_app_data["scrape_jobs"])
    shas = {c["labels"]["model_sha256"] for c in jobs[0]["static_configs"]}
    assert shas == {SHA1[:16], SHA2[:16]}


@pytest.mark.parametrize(
    "config, option",
    [
        ({**V1, "canary-model-uri": V2["model-uri"], "canary-model-sha256": SHA2}, "canary-weight"),
        ({**V1, "canary-weight": 10}, "canary-model-uri"),
        ({**CANARY, "canary-weight": 101}, "canary-weight"),
        ({**CANARY, "canary-model-sha256": "nope"}, "canary-model-sha256"),
    ],
)
def test_invalid_canary_options_block_naming_them_and_apply_nothing(ctx, k8s, config, option):
    out = ctx.run(ctx.on.config_changed(), state(config))
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith(f"Invalid config: {option}: ")
    assert k8s.objects == {}


# --- shadow ------------------------------------------------------------------------

SHADOW = {**V1, "shadow-model-uri": V2["model-uri"], "shadow-model-sha256": SHA2}
SHADOW_HOST = f"{APP}-shadow-default.{NS}.svc.cluster.local"


def http_routes(k8s: FakeCluster) -> list[tuple[str, str, list[str]]]:
    """(name, prefix, hosts) of each http route of the live VirtualService, in order."""
    return [
        (h["name"], h["match"][0]["uri"]["prefix"], [d["destination"]["host"] for d in h["route"]])
        for h in k8s.of_kind("VirtualService")[APP]["spec"]["http"]
    ]


def test_a_shadow_gets_its_own_path_and_the_status_says_when_it_is_ready(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(V1))
    serving(k8s, SHA1)
    out = ctx.run(ctx.on.config_changed(), state(SHADOW))
    assert set(k8s.of_kind("SeldonDeployment")) == {APP, f"{APP}-shadow"}
    assert http_routes(k8s) == [
        (f"{APP}-shadow", f"/model/{APP}/shadow/", [SHADOW_HOST]),
        (APP, f"/model/{APP}/", [STABLE_HOST]),  # the line's route: the stable model alone
    ]
    assert out.unit_status == testing.WaitingStatus(
        f"serving /model/{APP}/ sha {SHA1[:7]}; shadow {SHA2[:7]} starting (it takes no request before it "
        f"verified its sha256: /model/{APP}/shadow/ answers 503)"
    )

    serving(k8s, SHA2, name=f"{APP}-shadow")
    out = ctx.run(ctx.on.update_status(), state(SHADOW))
    assert out.unit_status == testing.ActiveStatus(
        f"serving /model/{APP}/ sha {SHA1[:7]}; shadow {SHA2[:7]} ready at /model/{APP}/shadow/ "
        f"(agreement: scripts/shadow-report {APP})"
    )
    assert out.workload_version == SHA1[:12]  # the version the line gets


def test_a_shadow_refused_by_seldon_blocks_saying_the_line_is_unaffected(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(SHADOW))
    serving(k8s, SHA1)
    k8s.add_pod(NS, f"{APP}-shadow", SHA2, ready=False)
    k8s.set_sdep_state(NS, f"{APP}-shadow", "Failed", "Deployment is no longer progressing and not available.")
    out = ctx.run(ctx.on.update_status(), state(SHADOW))
    assert out.unit_status == testing.BlockedStatus(
        f"serving /model/{APP}/ sha {SHA1[:7]}; shadow {SHA2[:7]} refused, the line is unaffected: "
        "SeldonDeployment failed: Deployment is no longer progressing and not available"
    )
    assert [hosts for _, _, hosts in http_routes(k8s)][-1] == [STABLE_HOST]


def test_unsetting_the_shadow_prunes_it_and_its_route(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(SHADOW))
    serving(k8s, SHA1)
    serving(k8s, SHA2, name=f"{APP}-shadow")
    out = ctx.run(ctx.on.config_changed(), state(V1))  # juju config --reset shadow-model-uri shadow-model-sha256
    assert set(k8s.of_kind("SeldonDeployment")) == {APP}
    assert http_routes(k8s) == [(APP, f"/model/{APP}/", [STABLE_HOST])]
    assert out.unit_status == testing.ActiveStatus(f"serving /model/{APP}/ sha {SHA1[:7]}")


def test_shadow_pods_are_scraped_with_their_own_sha(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state(SHADOW))
    serving(k8s, SHA1)
    serving(k8s, SHA2, name=f"{APP}-shadow")
    relation = testing.Relation("metrics-endpoint")
    out = ctx.run(ctx.on.update_status(), state(SHADOW, relations={relation}))
    jobs = json.loads(out.get_relation(relation.id).local_app_data["scrape_jobs"])
    assert {c["labels"]["model_sha256"] for c in jobs[0]["static_configs"]} == {SHA1[:16], SHA2[:16]}


@pytest.mark.parametrize(
    "config, option, words",
    [
        ({**V1, "shadow-model-uri": V2["model-uri"]}, "shadow-model-sha256", "is required"),
        ({**V1, "shadow-model-uri": V2["model-uri"], "shadow-model-sha256": SHA1}, "shadow-model-sha256", "nothing"),
        ({**SHADOW, **{k: v for k, v in CANARY.items() if k.startswith("canary")}}, "shadow-model-uri", "canary"),
    ],
)
def test_invalid_shadow_options_block_naming_them_and_apply_nothing(ctx, k8s, config, option, words):
    out = ctx.run(ctx.on.config_changed(), state(config))
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith(f"Invalid config: {option}: ")
    assert words in out.unit_status.message
    assert k8s.objects == {}
