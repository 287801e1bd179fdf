"""render(): the objects a model becomes, checked against the CRDs and what a user relies on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from manifests import NO_ENGINE, S3_KEYS, SERVICE_PORT, SHA_LABEL, render, route
from model_config import DEFAULT_MODEL_SHA256, DEFAULT_MODEL_URI
from support.crd_schema import CrdViolation, validate

ROOT = Path(__file__).resolve().parents[2]
SHA = "a" * 64
S3 = {"model-uri": "s3://models/scratch/v2.onnx", "model-sha256": SHA}
GW = {"gateway": "kubeflow/kubeflow-gateway"}  # what the charm passes: the option or gateway-info's


def sdep_and_vs(config: dict, name: str = "scratch", ns: str = "kubeflow"):
    sdep, vs = render(name, ns, {**GW, **config})
    assert (sdep["kind"], vs["kind"]) == ("SeldonDeployment", "VirtualService")
    return sdep, vs


def container(sdep: dict) -> dict:
    return sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]


def params(sdep: dict) -> dict:
    return {p["name"]: p["value"] for p in sdep["spec"]["predictors"][0]["graph"]["parameters"]}


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"model-uri": "https://models.example/scratch.onnx", "model-sha256": SHA, "replicas": 3},
        {**S3, "s3-endpoint": "http://minio.kubeflow:9000"},
        {"model-name": "dent", "cpu": "500m", "memory": "768Mi", "workers": 2, "input-size": 640},
        {"cpu-request": "1", "memory-request": "1Gi"},
    ],
)
def test_every_rendered_object_fits_its_crd(config):
    for obj in render("scratch", "kubeflow", {**GW, **config}):
        validate(obj)


def test_validation_catches_a_misspelt_field():
    sdep, vs = sdep_and_vs({})
    container(sdep)["readinessProbe"]["httpget"] = {"path": "/"}
    with pytest.raises(CrdViolation, match="httpget"):
        validate(sdep)
    vs["spec"]["http"][0]["timout"] = "3s"
    with pytest.raises(CrdViolation, match="timout"):
        validate(vs)


def test_default_serves_the_image_model_with_its_digest():
    sdep, _ = sdep_and_vs({})
    assert params(sdep)["model_uri"] == DEFAULT_MODEL_URI
    assert params(sdep)["model_sha256"] == DEFAULT_MODEL_SHA256


def test_default_model_digest_matches_the_shipped_model_card():
    card = yaml.safe_load((ROOT / "models/scratch-detector/model.yaml").read_text())
    variant = next(v for v in card["variants"] if DEFAULT_MODEL_URI.endswith(v["file"]))
    assert variant["sha256"] == DEFAULT_MODEL_SHA256


def test_graph_parameters_carry_the_model_and_thresholds():
    sdep, _ = sdep_and_vs(
        {
            "model-uri": "https://m.example/v2.onnx",
            "model-sha256": SHA,
            "confidence-threshold": 0.4,
            "iou-threshold": 0.6,
            "input-size": 320,
            "max-image-pixels": 1000,
        }
    )
    assert params(sdep) == {
        "model_uri": "https://m.example/v2.onnx",
        "model_sha256": SHA,
        "model_name": "scratch",
        "model_version": SHA[:12],
        "confidence_threshold": "0.4",
        "iou_threshold": "0.6",
        "input_size": "320",
        "max_pixels": "1000",
    }
    graph = sdep["spec"]["predictors"][0]["graph"]
    assert graph["type"] == "MODEL" and graph["name"] == container(sdep)["name"]
    assert "implementation" not in graph  # our own image, not a prepackaged server


def test_route_matches_only_its_own_prefix_and_rewrites_to_root():
    _, vs = sdep_and_vs({"model-name": "dent"}, name="app2", ns="factory")
    (route,) = vs["spec"]["http"]
    assert route["match"] == [{"uri": {"prefix": "/model/dent/"}}]
    assert route["rewrite"] == {"uri": "/"}
    # Seldon's predictor Service <sdep>-<predictor>; without the executor it listens on the
    # model's own http port (operator/controllers/seldondeployment_controller.go @ v1.17.1).
    assert route["route"][0]["destination"] == {
        "host": "dent-default.factory.svc.cluster.local",
        "port": {"number": 9000},
    }
    assert vs["spec"]["gateways"] == ["kubeflow/kubeflow-gateway"]


def test_gateway_is_what_the_charm_passes():
    _, vs = sdep_and_vs({"gateway": "istio-system/edge"})
    assert vs["spec"]["gateways"] == ["istio-system/edge"]


def test_no_gateway_is_an_error_naming_the_option_and_the_relation():
    with pytest.raises(ValueError, match="^gateway: .*gateway-info"):
        render("scratch", "kubeflow", {})


def test_the_model_runs_without_seldons_executor():
    """A single-node graph: Seldon v1.17.1 then adds no executor container and no executor requests."""
    sdep, _ = sdep_and_vs({})
    (predictor,) = sdep["spec"]["predictors"]
    assert predictor["annotations"] == {NO_ENGINE: "true"}  # on the predictor: where Seldon reads it
    assert "seldon.io/no-engine" not in sdep["spec"].get("annotations", {})
    assert predictor["graph"]["children"] == []  # the webhook refuses no-engine on larger graphs
    assert len(predictor["componentSpecs"][0]["spec"]["containers"]) == 1


def test_the_container_declares_its_own_ports_and_the_probes_use_them():
    """Seldon keeps declared http/grpc/metrics ports (defaults.go): no seldon-core charm option decides them."""
    c = container(sdep_and_vs({})[0])
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 9000, "grpc": 9500, "metrics": 6000}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] == "http"


def test_probes_make_ready_mean_verified_and_loaded():
    c = container(sdep_and_vs({})[0])
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/status"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/ping"
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 300


def test_resources_and_workers_come_from_config():
    config = {"cpu-request": "500m", "memory-request": "400Mi", "cpu": "2", "memory": "2Gi", "workers": 2}
    c = container(sdep_and_vs(config)[0])
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "400Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["GUNICORN_WORKERS"] == "2"


def test_pod_runs_non_root_with_read_only_root_filesystem():
    sdep, _ = sdep_and_vs({})
    pod = sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]
    c = container(sdep)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_model_pods_mount_no_service_account_token():
    """The server needs no Kubernetes API; a mounted token would be cluster-admin on a cluster
    without RBAC. The SeldonDeployment CRD (seldon-core 1.17/stable) knows the field as a boolean."""
    stable, canary, _ = render("scratch", "kubeflow", {**CANARY, "model-name": "dent"}, canary_ready=True)
    for sdep in (stable, canary):
        pod = sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]
        assert pod["automountServiceAccountToken"] is False
        validate(sdep)
    pod["automountServiceAccountToken"] = "no"
    with pytest.raises(CrdViolation, match="automountServiceAccountToken"):
        validate(canary)


def test_a_crash_leaves_its_last_log_lines_for_the_status_to_quote():
    # Without it kubelet keeps an empty termination message for a server that dies on start,
    # and the charm's CrashLoopBackOff status could give only the exit code.
    assert container(sdep_and_vs({})[0])["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_s3_credentials_are_referenced_never_inlined():
    sdep, _ = sdep_and_vs({**S3, "s3-endpoint": "http://minio:9000", "s3-credentials": "SECRET-OBJECT"})
    env = {e["name"]: e for e in container(sdep)["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "scratch-s3-credentials",
        "key": S3_KEYS[0],
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == S3_KEYS[1]
    assert env["S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert "SECRET-OBJECT" not in json.dumps(sdep)


def test_non_s3_models_get_no_credentials():
    env = {e["name"] for e in container(sdep_and_vs({})[0])["env"]}
    assert not env & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_pods_carry_the_model_digest_so_status_reports_what_serves():
    sdep, _ = sdep_and_vs({"model-uri": "file:///m.onnx", "model-sha256": SHA})
    assert sdep["spec"]["predictors"][0]["labels"][SHA_LABEL] == SHA[:16]


def test_objects_are_labelled_with_application_and_model():
    for obj in render("scratch", "factory", GW):
        assert obj["metadata"]["labels"]["app.juju.is/created-by"] == "scratch"
        assert obj["metadata"]["labels"]["app.juju.is/model"] == "factory"
        assert obj["metadata"]["namespace"] == "factory"


def test_render_is_deterministic_and_accepts_field_names():
    assert render("a", "b", {**GW, "model_uri": "file:///x.onnx", "model_sha256": SHA}) == render(
        "a", "b", {**GW, "model-uri": "file:///x.onnx", "model-sha256": SHA}
    )


@pytest.mark.parametrize(
    "config, option",
    [
        ({"model-name": "Has_Caps"}, "model-name"),
        ({"model-name": "x" * 41}, "model-name"),
        ({"model-uri": "ftp://host/m.onnx", "model-sha256": SHA}, "model-uri"),
        ({"model-uri": "https:///m.onnx", "model-sha256": SHA}, "model-uri"),
        ({"model-uri": "s3://bucket", "model-sha256": SHA}, "model-uri"),
        ({"model-uri": "file:///m.onnx "}, "model-uri"),
        ({"model-uri": "https://h/m.onnx"}, "model-sha256"),
        ({"model-uri": "https://h/m.onnx", "model-sha256": "abc"}, "model-sha256"),
        ({"model-uri": "https://h/m.onnx", "model-sha256": "A" * 64}, "model-sha256"),
        ({"model-sha256": SHA}, "model-sha256"),
        ({"model-uri": "file:///m.onnx", "model-sha256": SHA, "model-version": "v 2"}, "model-version"),
        ({"replicas": 0}, "replicas"),
        ({"replicas": 21}, "replicas"),
        ({"workers": 0}, "workers"),
        ({"confidence-threshold": 0.0}, "confidence-threshold"),
        ({"confidence-threshold": 1.5}, "confidence-threshold"),
        ({"iou-threshold": -0.1}, "iou-threshold"),
        ({"input-size": 300}, "input-size"),
        ({"input-size": 8192}, "input-size"),
        ({"max-image-pixels": 0}, "max-image-pixels"),
        ({"cpu": "lots"}, "cpu"),
        ({"cpu": "0"}, "cpu"),
        ({"memory": "1 GB"}, "memory"),
        ({"cpu-request": "1.5", "cpu": "1"}, "cpu-request"),
        ({"cpu-request": "0m"}, "cpu-request"),
        ({"memory-request": "2Gi"}, "memory-request"),
        ({"memory-request": 256}, "memory-request"),
        ({"server-image": ""}, "server-image"),
        ({"gateway": "kubeflow-gateway"}, "gateway"),
        ({"s3-endpoint": "minio:9000"}, "s3-endpoint"),
        ({"replica": 2}, "replica"),
    ],
)
def test_invalid_options_are_named_in_the_error(config, option):
    with pytest.raises(ValueError) as err:
        render("scratch", "kubeflow", config)
    assert str(err.value).startswith(f"{option}: ")


@pytest.mark.parametrize("name", ["9line", "3d-scratch", "scratch-"])
def test_a_model_name_that_no_service_may_bear_is_refused_naming_the_rule(name):
    """Seldon names the model's Service <model-name>-default, and a Service name is a DNS-1035
    label (a letter first): the API server would refuse it only after the charm applied it."""
    with pytest.raises(ValueError, match=f"^model-name: '{name}' must be a DNS-1035 label: .*starting with a letter"):
        render("scratch", "kubeflow", {**GW, "model-name": name})


def test_a_letter_first_model_name_is_a_valid_service_name():
    sdep, vs = sdep_and_vs({"model-name": "line3-scratch"})
    assert vs["spec"]["http"][0]["route"][0]["destination"]["host"].startswith("line3-scratch-default.")


def test_long_application_name_needs_a_model_name():
    with pytest.raises(ValueError, match="^model-name: "):
        render("a" * 45, "kubeflow", {})
    assert render("a" * 45, "kubeflow", {**GW, "model-name": "short"})[0]["metadata"]["name"] == "short"


# --- canary ----------------------------------------------------------------------------

CANARY_SHA = "c" * 64
CANARY = {
    **GW,
    "model-uri": "https://m.example/v1.onnx",
    "model-sha256": SHA,
    "canary-model-uri": "https://m.example/v2.onnx",
    "canary-model-sha256": CANARY_SHA,
    "canary-weight": 10,
}


def weights(vs: dict) -> dict[str, int]:
    return {d["destination"]["host"]: d["weight"] for d in vs["spec"]["http"][0]["route"]}


@pytest.mark.parametrize("ready", [False, True])
@pytest.mark.parametrize("extra", [{}, {"canary-model-uri": "s3://models/v2.onnx", "s3-endpoint": "http://minio:9000"}])
def test_every_object_with_a_canary_fits_its_crd(ready, extra):
    for obj in render("scratch", "kubeflow", {**CANARY, **extra}, canary_ready=ready):
        validate(obj)


def test_the_canary_is_its_own_seldondeployment_serving_its_own_file():
    stable, canary, vs = render("scratch", "kubeflow", CANARY, canary_ready=True)
    assert (stable["metadata"]["name"], canary["metadata"]["name"]) == ("scratch", "scratch-canary")
    assert params(canary)["model_uri"] == CANARY["canary-model-uri"]
    assert params(canary)["model_sha256"] == CANARY_SHA  # it verifies its own digest
    assert params(canary)["model_version"] == CANARY_SHA[:12]
    assert params(canary)["model_name"] == "scratch"  # answers name the same model; sha tells which
    assert canary["spec"]["predictors"][0]["labels"][SHA_LABEL] == CANARY_SHA[:16]
    assert params(stable)["model_sha256"] == SHA
    assert canary["metadata"]["labels"] == stable["metadata"]["labels"]  # pruned with the app


def test_adding_a_canary_leaves_the_stable_pods_untouched():
    """The stable predictor must not change, or adding a canary would restart the stable pods."""
    alone, _ = render("scratch", "kubeflow", {**GW, "model-uri": CANARY["model-uri"], "model-sha256": SHA})
    with_canary = render("scratch", "kubeflow", CANARY, canary_ready=True)[0]
    assert with_canary == alone
    s3_canary = render("scratch", "kubeflow", {**CANARY, "canary-model-uri": "s3://b/v2.onnx"}, canary_ready=True)[0]
    assert s3_canary == alone  # s3 credentials go to the canary's pods only


def test_a_ready_canary_gets_its_weight_of_the_route():
    vs = render("scratch", "kubeflow", CANARY, canary_ready=True)[-1]
    assert weights(vs) == {
        "scratch-default.kubeflow.svc.cluster.local": 90,
        "scratch-canary-default.kubeflow.svc.cluster.local": 10,
    }
    assert [r["destination"]["port"] for r in vs["spec"]["http"][0]["route"]] == [{"number": SERVICE_PORT}] * 2


def test_a_canary_that_is_not_ready_takes_no_request():
    vs = render("scratch", "kubeflow", CANARY, canary_ready=False)[-1]
    assert weights(vs) == {"scratch-default.kubeflow.svc.cluster.local": 100}
    assert vs == render("scratch", "kubeflow", {**GW, "model-uri": CANARY["model-uri"], "model-sha256": SHA})[-1]


@pytest.mark.parametrize(
    "weight, expected",
    [
        (0, {"scratch-default.kubeflow.svc.cluster.local": 100}),
        (100, {"scratch-canary-default.kubeflow.svc.cluster.local": 100}),
    ],
)
def test_a_zero_percent_destination_is_left_out_of_the_route(weight, expected):
    vs = render("scratch", "kubeflow", {**CANARY, "canary-weight": weight}, canary_ready=True)[-1]
    assert weights(vs) == expected


def test_the_canary_follows_the_model_name():
    _, canary, vs = render("app2", "factory", {**CANARY, "model-name": "dent"}, canary_ready=True)
    assert canary["metadata"]["name"] == "dent-canary"
    assert "dent-canary-default.factory.svc.cluster.local" in weights(vs)


def test_no_canary_renders_exactly_two_objects():
    assert [o["kind"] for o in render("scratch", "kubeflow", GW, canary_ready=True)] == [
        "SeldonDeployment",
        "VirtualService",
    ]


@pytest.mark.parametrize(
    "config, option, words",
    [
        ({"canary-model-uri": "https://h/v2.onnx", "canary-model-sha256": CANARY_SHA}, "canary-weight", "is required"),
        ({"canary-weight": 10}, "canary-model-uri", "no canary model"),
        ({"canary-model-sha256": CANARY_SHA, "canary-weight": 10}, "canary-model-sha256", "canary-model-uri is empty"),
        ({"canary-model-uri": "https://h/v2.onnx", "canary-weight": 10}, "canary-model-sha256", "is required"),
        ({**CANARY, "canary-model-sha256": "abc"}, "canary-model-sha256", "64 lowercase hex"),
        ({**CANARY, "canary-model-uri": "ftp://h/v2.onnx"}, "canary-model-uri", "scheme"),
        ({**CANARY, "canary-weight": 101}, "canary-weight", "must be in [0, 100], got 101"),
        ({**CANARY, "canary-weight": -1}, "canary-weight", "must be in [0, 100]"),
        ({**CANARY, "canary-weight": 2.5}, "canary-weight", "whole number"),
        ({**CANARY, "canary-weight": "ten"}, "canary-weight", "must be a number"),
    ],
)
def test_invalid_canary_options_are_named_in_the_error(config, option, words):
    with pytest.raises(ValueError) as err:
        render("scratch", "kubeflow", config)
    assert str(err.value).startswith(f"{option}: ")
    assert words in str(err.value)


def test_route_weights_must_add_up():
    with pytest.raises(ValueError, match="add up to 100"):
        route([("a", 60), ("b", 30)])


# --- shadow ----------------------------------------------------------------------------

SHADOW_SHA = "d" * 64
SHADOW = {
    **GW,
    "model-uri": "https://m.example/v1.onnx",
    "model-sha256": SHA,
    "shadow-model-uri": "https://m.example/v5.onnx",
    "shadow-model-sha256": SHADOW_SHA,
}


@pytest.mark.parametrize("extra", [{}, {"shadow-model-uri": "s3://models/v5.onnx", "s3-endpoint": "http://minio:9000"}])
def test_every_object_with_a_shadow_fits_its_crd(extra):
    objects = render("scratch", "kubeflow", {**SHADOW, **extra})
    assert [o["kind"] for o in objects] == ["SeldonDeployment", "SeldonDeployment", "VirtualService"]
    for obj in objects:
        validate(obj)


def test_the_shadow_is_its_own_seldondeployment_verifying_its_own_file():
    stable, shadow, _ = render("scratch", "kubeflow", {**SHADOW, "confidence-threshold": 0.3, "cpu": "2"})
    assert shadow["metadata"]["name"] == "scratch-shadow"
    assert params(shadow)["model_uri"] == SHADOW["shadow-model-uri"]
    assert params(shadow)["model_sha256"] == SHADOW_SHA  # the server refuses any other file
    assert params(shadow)["model_name"] == "scratch"  # same model; the answer's sha tells which
    assert params(shadow)["confidence_threshold"] == params(stable)["confidence_threshold"] == "0.3"
    assert shadow["spec"]["predictors"][0]["labels"][SHA_LABEL] == SHADOW_SHA[:16]
    # Same server and probes: it takes no request before its pods are Ready.
    assert container(shadow)["readinessProbe"] == container(stable)["readinessProbe"]
    assert container(shadow)["image"] == container(stable)["image"]
    assert container(shadow)["resources"] == container(stable)["resources"]
    assert shadow["metadata"]["labels"] == stable["metadata"]["labels"]  # pruned with the app


def test_adding_a_shadow_leaves_the_stable_model_and_the_line_route_untouched():
    plain = {**GW, "model-uri": SHADOW["model-uri"], "model-sha256": SHA}
    alone_sdep, alone_vs = render("scratch", "kubeflow", plain)
    stable, _, vs = render("scratch", "kubeflow", SHADOW)
    assert stable == alone_sdep  # the stable pods do not restart
    assert vs["spec"]["http"][1] == alone_vs["spec"]["http"][0]  # the line's route, unchanged


def test_the_shadow_route_comes_first_and_takes_all_of_its_path():
    """Istio uses the first matching http route; /model/scratch/ would also match the shadow's path."""
    vs = render("scratch", "kubeflow", SHADOW)[-1]
    shadow_route, main = vs["spec"]["http"]
    assert shadow_route["name"] == "scratch-shadow"
    assert shadow_route["match"] == [{"uri": {"prefix": "/model/scratch/shadow/"}}]
    assert shadow_route["rewrite"] == {"uri": "/"}
    assert shadow_route["route"] == [
        {
            "destination": {"host": "scratch-shadow-default.kubeflow.svc.cluster.local", "port": {"number": 9000}},
            "weight": 100,
        }
    ]
    assert shadow_route["timeout"] == main["timeout"]
    assert main["match"] == [{"uri": {"prefix": "/model/scratch/"}}]
    assert weights({"spec": {"http": [main]}}) == {"scratch-default.kubeflow.svc.cluster.local": 100}


def test_the_shadow_follows_the_model_name():
    _, shadow, vs = render("app2", "factory", {**SHADOW, "model-name": "dent"})
    assert shadow["metadata"]["name"] == "dent-shadow"
    assert vs["spec"]["http"][0]["match"][0]["uri"]["prefix"] == "/model/dent/shadow/"


@pytest.mark.parametrize(
    "config, option, words",
    [
        ({"shadow-model-uri": "https://h/v5.onnx"}, "shadow-model-sha256", "is required"),
        ({"shadow-model-sha256": SHADOW_SHA}, "shadow-model-sha256", "shadow-model-uri is empty"),
        ({**SHADOW, "shadow-model-sha256": "abc"}, "shadow-model-sha256", "64 lowercase hex"),
        ({**SHADOW, "shadow-model-uri": "ftp://h/v5.onnx"}, "shadow-model-uri", "scheme"),
        ({**SHADOW, "shadow-model-sha256": SHA}, "shadow-model-sha256", "nothing to compare"),
        (
            {"shadow-model-uri": "file:///opt/models/x.onnx", "shadow-model-sha256": DEFAULT_MODEL_SHA256},
            "shadow-model-sha256",
            "nothing to compare",
        ),
        ({**SHADOW, **{k: v for k, v in CANARY.items() if k.startswith("canary")}}, "shadow-model-uri", "--abort"),
    ],
)
def test_invalid_shadow_options_are_named_in_the_error(config, option, words):
    with pytest.raises(ValueError) as err:
        render("scratch", "kubeflow", {**GW, **config})
    assert str(err.value).startswith(f"{option}: ")
    assert words in str(err.value)
