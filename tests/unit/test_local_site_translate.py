"""The local site's pure parts: bundle + overlays + --set, and objects -> Envoy routes and processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from manifests import SERVICE_PORT, render

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from local_site import bundle  # noqa: E402
from local_site.envoy_proxy import cluster  # noqa: E402
from local_site.translate import (  # noqa: E402
    Untranslatable,
    cluster_name,
    envoy_duration,
    envoy_routes,
    local_uri,
    server_spec,
)

SHA = "b" * 64


def vs_and_served(config: dict | None = None, name: str = "scratch"):
    sdep, vs = render(name, "kubeflow", {"gateway": "kubeflow/istio-gateway", **(config or {})})
    spec = server_spec(sdep, ROOT / "models")
    return vs, {(spec.service_host, SERVICE_PORT)}, spec


def test_virtualservice_becomes_a_prefix_route_with_rewrite_timeout_and_retries():
    vs, served, spec = vs_and_served()
    (route,) = envoy_routes([vs], served)
    assert route["match"] == {"prefix": "/model/scratch/"}
    assert route["route"]["prefix_rewrite"] == "/"
    assert route["route"]["cluster"] == cluster_name(spec.service_host, SERVICE_PORT)
    assert route["route"]["timeout"] == "30.000s"
    assert route["route"]["retry_policy"] == {
        "retry_on": "connect-failure,refused-stream,reset,unavailable",
        "num_retries": 2,
        "per_try_timeout": "15.000s",
    }


def test_weighted_destinations_become_weighted_clusters():
    vs, served, spec = vs_and_served()
    other = ("canary-default.kubeflow.svc.cluster.local", SERVICE_PORT)
    vs["spec"]["http"][0]["route"] = [
        {"destination": {"host": spec.service_host, "port": {"number": SERVICE_PORT}}, "weight": 90},
        {"destination": {"host": other[0], "port": {"number": SERVICE_PORT}}, "weight": 10},
    ]
    (route,) = envoy_routes([vs], served | {other})
    assert route["route"]["weighted_clusters"]["clusters"] == [
        {"name": cluster_name(spec.service_host, SERVICE_PORT), "weight": 90},
        {"name": cluster_name(*other), "weight": 10},
    ]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda vs: vs["spec"]["http"][0]["match"][0].update(headers={"x": {"exact": "1"}}), "match[0].headers"),
        (lambda vs: vs["spec"]["http"][0]["match"][0]["uri"].update(regex="/m.*"), "match[0].uri.regex"),
        (lambda vs: vs["spec"]["http"][0].update(mirror={"host": "x"}), "spec.http[0].mirror"),
        (lambda vs: vs["spec"]["http"][0].update(fault={"abort": {}}), "spec.http[0].fault"),
        (
            lambda vs: vs["spec"]["http"][0]["retries"].update(retryRemoteLocalities=True),
            "retries.retryRemoteLocalities",
        ),
        (lambda vs: vs["spec"].update(tcp=[{}]), "spec.tcp"),
        (lambda vs: vs["spec"].update(hosts=["models.factory.example"]), "spec.hosts"),
        (lambda vs: vs["spec"]["http"][0].update(timeout="soon"), "spec.http[0].timeout"),
        (lambda vs: vs["spec"]["http"][0]["route"][0]["destination"].update(host="elsewhere"), "route[0].destination"),
    ],
)
def test_what_envoy_here_cannot_express_is_an_error_naming_the_field(mutate, field):
    vs, served, _ = vs_and_served()
    mutate(vs)
    with pytest.raises(Untranslatable) as err:
        envoy_routes([vs], served)
    assert field in str(err.value)
    assert "VirtualService scratch" in str(err.value)


def test_longest_prefix_wins_whatever_the_order():
    a, served_a, _ = vs_and_served(name="scratch")
    b, served_b, _ = vs_and_served({"model-name": "scratch-fp32"}, name="fp32")
    routes = envoy_routes([a, b], served_a | served_b)
    assert [r["match"]["prefix"] for r in routes] == ["/model/scratch-fp32/", "/model/scratch/"]


@pytest.mark.parametrize(
    "value, seconds",
    [("30s", "30.000s"), ("500ms", "0.500s"), ("1m30s", "90.000s"), ("1h", "3600.000s"), ("1.5s", "1.500s")],
)
def test_istio_durations(value, seconds):
    assert envoy_duration(value, "x") == seconds


def test_server_spec_carries_parameters_workers_and_the_pods_cpu_as_threads():
    _, _, spec = vs_and_served(
        {"model-uri": "https://m/x.onnx", "model-sha256": SHA, "workers": 2, "cpu": "2", "confidence-threshold": 0.4}
    )
    assert spec.params["model_uri"] == "https://m/x.onnx"
    assert spec.params["confidence_threshold"] == 0.4
    assert spec.workers == 2
    assert spec.params["threads"] == 1  # 2 CPUs / 2 workers
    assert spec.service_host == "scratch-default.kubeflow.svc.cluster.local"


def test_the_image_model_is_the_file_under_models():
    assert local_uri("file:///opt/models/scratch-detector/model-int8.onnx", ROOT / "models") == (
        (ROOT / "models/scratch-detector/model-int8.onnx").as_uri()
    )
    assert local_uri("https://h/m.onnx", ROOT / "models") == "https://h/m.onnx"


# --- bundle, overlays, --set ---------------------------------------------------------------


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_bundle_has_one_model_app_named_scratch():
    (app,) = bundle.load(ROOT / "bundle.yaml")
    assert app.name == "scratch"


def test_overlays_merge_options_add_and_remove_applications(tmp_path):
    base = write(
        tmp_path / "b.yaml",
        {
            "applications": {
                "a": {"charm": "./build/onnx-model.charm", "options": {"replicas": 1, "cpu": "1"}},
                "istio-pilot": {"charm": "istio-pilot"},
            }
        },
    )
    over = write(
        tmp_path / "o.yaml",
        {
            "applications": {
                "a": {"options": {"replicas": 2}},
                "b": {"charm": "onnx-model"},
                "c": {"charm": "./x/onnx-model_amd64.charm"},
            }
        },
    )
    apps = {a.name: a.options for a in bundle.load(base, [over])}
    assert apps == {"a": {"replicas": 2, "cpu": "1"}, "b": {}, "c": {}}
    gone = write(tmp_path / "g.yaml", {"applications": {"b": None}})
    assert [a.name for a in bundle.load(base, [over, gone])] == ["a", "c"]


def test_set_is_typed_like_juju_config(tmp_path):
    base = write(tmp_path / "b.yaml", {"applications": {"a": {"charm": "onnx-model"}}})
    (app,) = bundle.load(base, sets=["a.replicas=3", "a.confidence-threshold=0.5", "a.model-uri=file:///m.onnx"])
    assert app.options == {"replicas": 3, "confidence-threshold": 0.5, "model-uri": "file:///m.onnx"}


@pytest.mark.parametrize(
    "sets, words",
    [
        (["a.replicas=three"], "replicas: 'three' is not a valid int"),
        (["a.confidence-threshold=high"], "is not a valid float"),
        (["b.replicas=1"], "no onnx-model application 'b'"),
        (["a.colour=red"], "--set a.colour=red: colour is not an option of the onnx-model charm"),
        (["replicas=1"], "expected <application>.<option>=<value>"),
        (["a.s3-credentials=secret:x"], "Juju secrets do not exist on the local site"),
    ],
)
def test_bad_set_says_what_is_wrong(tmp_path, sets, words):
    base = write(tmp_path / "b.yaml", {"applications": {"a": {"charm": "onnx-model"}}})
    with pytest.raises(bundle.BundleError, match=words):
        bundle.load(base, sets=sets)


def test_unreadable_bundle_is_a_clear_error(tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("applications: [unclosed")
    with pytest.raises(bundle.BundleError, match="not valid YAML"):
        bundle.load(bad)
    with pytest.raises(bundle.BundleError, match="No such file"):
        bundle.load(tmp_path / "missing.yaml")


# --- canary: two model servers behind one weighted route -------------------------------------

CANARY_SETS = [
    "a.model-uri=file:///stable.onnx",
    f"a.model-sha256={'1' * 64}",
    "a.canary-model-uri=file:///canary.onnx",
    f"a.canary-model-sha256={'2' * 64}",
    "a.canary-weight=30",
]


def test_a_canary_is_a_second_server_and_a_weighted_envoy_route(tmp_path):
    base = write(tmp_path / "b.yaml", {"applications": {"a": {"charm": "onnx-model"}}})
    (app,) = bundle.load(base, sets=CANARY_SETS)
    assert app.options["canary-weight"] == 30  # typed as the charm's int option
    stable, canary, vs = render(
        "a", "kubeflow", {**app.options, "gateway": "kubeflow/kubeflow-gateway"}, canary_ready=True
    )
    specs = [server_spec(stable, tmp_path), server_spec(canary, tmp_path)]
    assert [s.params["model_sha256"] for s in specs] == ["1" * 64, "2" * 64]
    (r,) = envoy_routes([vs], {(s.service_host, SERVICE_PORT) for s in specs})
    assert r["route"]["weighted_clusters"]["clusters"] == [
        {"name": cluster_name(specs[0].service_host, SERVICE_PORT), "weight": 70},
        {"name": cluster_name(specs[1].service_host, SERVICE_PORT), "weight": 30},
    ]


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"promote": "a"}, {"model-uri": "file:///canary.onnx", "model-sha256": "2" * 64}),
        ({"abort": "a"}, {"model-uri": "file:///stable.onnx", "model-sha256": "1" * 64}),
        (
            {"reset": "a.canary-weight"},
            None,
        ),
    ],
)
def test_promote_abort_and_reset_change_the_options_like_roll_model_and_juju(tmp_path, change, expected):
    base = write(tmp_path / "b.yaml", {"applications": {"a": {"charm": "onnx-model"}}})
    if expected is None:  # a canary without a weight: the charm refuses it, naming the option
        (app,) = bundle.load(base, sets=[*CANARY_SETS, change])
        assert "canary-weight" not in app.options
        with pytest.raises(ValueError, match="^canary-weight: is required"):
            render("a", "kubeflow", app.options)
        return
    (app,) = bundle.load(base, sets=[*CANARY_SETS, change])
    assert app.options == expected


def test_promote_without_a_canary_is_a_clear_error(tmp_path):
    base = write(tmp_path / "b.yaml", {"applications": {"a": {"charm": "onnx-model"}}})
    with pytest.raises(bundle.BundleError, match="--promote a: a has no canary"):
        bundle.load(base, sets=[{"promote": "a"}])
    with pytest.raises(bundle.BundleError, match="no onnx-model application 'b'"):
        bundle.load(base, sets=[{"abort": "b"}])


# --- the gateway, as the charm takes it from istio-pilot's gateway-info -------------------------


def test_the_bundle_relates_every_model_to_istio_pilots_gateway():
    apps = bundle.load(ROOT / "bundle.yaml", [ROOT / "overlays" / "second-model.yaml"])
    assert {a.name: a.istio_gateway for a in apps} == {
        "scratch": "kubeflow-gateway",
        "scratch-fp32": "kubeflow-gateway",
    }


def test_a_model_without_gateway_info_is_refused_with_the_charms_words(tmp_path):
    from local_site.site import NAMESPACE, SiteError, route_gateway

    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"applications": {"other": {"charm": "./build/onnx-model.charm"}}}))
    apps = {a.name: a for a in bundle.load(ROOT / "bundle.yaml", [overlay])}
    assert route_gateway(apps["scratch"]) == f"{NAMESPACE}/kubeflow-gateway"
    with pytest.raises(SiteError, match="juju integrate other istio-pilot:gateway-info"):
        route_gateway(apps["other"])
    explicit = bundle.ModelApp("other", {"gateway": "istio-system/edge"})
    assert route_gateway(explicit) == "istio-system/edge"


def test_a_shadow_is_a_second_server_on_its_own_prefix_ahead_of_the_line():
    config = {
        "gateway": "kubeflow/istio-gateway",
        "shadow-model-uri": "file:///opt/models/scratch-detector/model-int8.onnx",
        "shadow-model-sha256": SHA,
    }
    stable, shadow, vs = render("scratch", "kubeflow", config)
    specs = [server_spec(sdep, ROOT / "models") for sdep in (stable, shadow)]
    assert specs[1].service_host == "scratch-shadow-default.kubeflow.svc.cluster.local"
    assert specs[1].params["model_sha256"] == SHA
    first, second = envoy_routes([vs], {(s.service_host, SERVICE_PORT) for s in specs})
    assert first["match"] == {"prefix": "/model/scratch/shadow/"}
    assert first["route"]["cluster"] == cluster_name(specs[1].service_host, SERVICE_PORT)
    assert first["route"]["prefix_rewrite"] == "/"
    assert "retry_policy" not in first["route"]
    assert second["match"] == {"prefix": "/model/scratch/"}
    assert second["route"]["cluster"] == cluster_name(specs[0].service_host, SERVICE_PORT)
    # A shadow that does not run is a cluster without endpoints: Envoy answers 503 on its path.
    assert cluster("c", None)["load_assignment"]["endpoints"] == [{"lb_endpoints": []}]
