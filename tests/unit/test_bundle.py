"""Static checks of bundle.yaml and every overlay merged over it, as Juju would take them."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import yaml

from model_config import ModelConfig

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from local_site import bundle as site_bundle  # noqa: E402
from local_site.translate import IMAGE_MODEL_ROOT  # noqa: E402

BUNDLE = yaml.safe_load((ROOT / "bundle.yaml").read_text())
OVERLAYS = sorted((ROOT / "overlays").glob("*.yaml"))
CHARMCRAFT = yaml.safe_load((ROOT / "charms/onnx-model/charmcraft.yaml").read_text())

# Recorded from the Charmed Kubeflow 1.8 bundle (canonical/bundle-kubeflow releases/1.8/stable)
# and the charms' config: the channels, the endpoints used in relations, the options set here.
CHARMHUB = {
    "istio-pilot": {
        "channel": "1.17/stable",
        "endpoints": {"istio-pilot", "ingress", "ingress-auth", "gateway-info"},
        "options": {"default-gateway", "image-configuration"},
    },
    "istio-gateway": {
        "channel": "1.17/stable",
        "endpoints": {"istio-pilot"},
        "options": {"kind", "gateway_service_type", "proxy-image"},
    },
    "seldon-core": {
        "channel": "1.17/stable",
        "endpoints": {"metrics-endpoint", "grafana-dashboard", "gateway-info"},
        "options": {"executor-container-image-and-version"},
    },
    "dex-auth": {
        "channel": "2.36/stable",
        "endpoints": {"ingress", "oidc-client"},
        "options": {"static-username", "static-password", "public-url"},
    },
    "oidc-gatekeeper": {
        "channel": "ckf-1.8/stable",
        "endpoints": {"ingress", "ingress-auth", "oidc-client"},
        "options": {"public-url"},
    },
    # COS: the agent only scrapes and forwards, so it needs no trust.
    "grafana-agent-k8s": {
        "channel": "latest/stable",
        "trust": False,
        "endpoints": {
            "metrics-endpoint",
            "grafana-dashboards-consumer",
            "send-remote-write",
            "grafana-dashboards-provider",
        },
        "options": set(),
    },
}
# The COS Lite offers (cos-lite bundle in model `cos`, `juju offer cos.<app>:<endpoint>`).
OFFERS = {
    "admin/cos.prometheus": {"receive-remote-write"},
    "admin/cos.grafana": {"grafana-dashboard"},
}
OURS = {
    "endpoints": set(CHARMCRAFT.get("provides", {})) | set(CHARMCRAFT.get("requires", {})),
    "options": set(CHARMCRAFT["config"]["options"]),
}


def merged(overlay: Path | None) -> dict:
    base = dict(BUNDLE)
    return site_bundle.merge(base, yaml.safe_load(overlay.read_text())) if overlay else base


CASES = [None, *OVERLAYS]
IDS = ["bundle", *(o.name for o in OVERLAYS)]


@pytest.mark.parametrize("overlay", CASES, ids=IDS)
def test_applications_channels_and_trust(overlay):
    bundle = merged(overlay)
    assert bundle["bundle"] == "kubernetes"
    for name, app in bundle["applications"].items():
        if site_bundle.is_ours(app):
            assert app.get("trust") is True, f"{name}: writes to the Kubernetes API"
            assert Path(app["charm"]).name == "onnx-model.charm"
        else:
            known = CHARMHUB[app["charm"]]
            assert bool(app.get("trust")) is known.get("trust", True), f"{name}: trust as the charm needs it"
            assert app["channel"] == known["channel"], f"{name}: channel outside the tested set"
            assert set(app.get("options") or {}) <= known["options"], name


@pytest.mark.parametrize("source", [ROOT / "bundle.yaml", *OVERLAYS], ids=IDS)
def test_local_charm_paths_name_the_packed_charm(source):
    """Juju resolves a local charm path relative to the file that names it (juju/charm v12
    overlay.go resolveRelativeCharmPath): from an overlay in overlays/, ./build is overlays/build."""
    for app, spec in (yaml.safe_load(source.read_text()).get("applications") or {}).items():
        charm = str((spec or {}).get("charm", ""))
        if charm.startswith("."):
            assert (source.parent / charm).resolve() == ROOT / "build" / "onnx-model.charm", app


@pytest.mark.parametrize("overlay", CASES, ids=IDS)
def test_relation_endpoints_exist(overlay):
    bundle = merged(overlay)
    for relation in bundle.get("relations") or []:
        for end in relation:
            app, _, endpoint = end.partition(":")
            assert endpoint, f"{relation}: name the endpoint, the charms have several of one interface"
            if app in (bundle.get("saas") or {}):
                endpoints = OFFERS[bundle["saas"][app]["url"]]
            elif site_bundle.is_ours(bundle["applications"][app]):
                endpoints = OURS["endpoints"]
            else:
                endpoints = CHARMHUB[bundle["applications"][app]["charm"]]["endpoints"]
            assert endpoint in endpoints, f"{end}: no such endpoint"


@pytest.mark.parametrize("overlay", CASES, ids=IDS)
def test_our_options_exist_and_are_valid(overlay):
    bundle = merged(overlay)
    for name, app in bundle["applications"].items():
        if site_bundle.is_ours(app):
            options = app.get("options") or {}
            assert set(options) <= OURS["options"], name
            ModelConfig.from_options(options)  # raises naming the option


@pytest.mark.parametrize("overlay", CASES, ids=IDS)
def test_every_model_sha256_matches_the_file_it_names(overlay):
    for app in merged(overlay)["applications"].values():
        options = app.get("options") or {}
        uri = options.get("model-uri", "")
        if site_bundle.is_ours(app) and uri.startswith("file://" + IMAGE_MODEL_ROOT):
            path = ROOT / "models" / uri.removeprefix("file://" + IMAGE_MODEL_ROOT)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == options["model-sha256"], uri


def test_observability_scrapes_every_model_and_forwards_to_cos():
    bundle = merged(ROOT / "overlays/observability.yaml")
    relations = {tuple(r) for r in bundle["relations"]}
    for name, app in bundle["applications"].items():
        if site_bundle.is_ours(app):
            assert (f"{name}:metrics-endpoint", "grafana-agent:metrics-endpoint") in relations
            assert (f"{name}:grafana-dashboard", "grafana-agent:grafana-dashboards-consumer") in relations
    assert ("grafana-agent:send-remote-write", "prometheus:receive-remote-write") in relations


def test_airgapped_points_every_image_option_at_the_local_registry():
    bundle = merged(ROOT / "overlays/airgapped.yaml")
    image_options = {
        "istio-pilot": "image-configuration",
        "istio-ingressgateway": "proxy-image",
        "seldon-controller-manager": "executor-container-image-and-version",
    }
    for app, option in image_options.items():
        value = bundle["applications"][app]["options"][option]
        assert "docker.io" not in value and "localhost:32000/" in value, app
    # Ours run the charm's default server image, which air-gapped sites import into containerd.
    default = CHARMCRAFT["config"]["options"]["server-image"]["default"]
    for name, app in bundle["applications"].items():
        if site_bundle.is_ours(app):
            assert app["options"].get("server-image", default) == default == "localhost/defect-server:0.2.0", name


def test_the_gateway_is_a_nodeport_ingress_named_kubeflow_gateway():
    apps = BUNDLE["applications"]
    assert apps["istio-pilot"]["options"]["default-gateway"] == "kubeflow-gateway"
    assert apps["istio-ingressgateway"]["options"] == {"kind": "ingress", "gateway_service_type": "NodePort"}
    assert ["istio-pilot:istio-pilot", "istio-ingressgateway:istio-pilot"] in BUNDLE["relations"]
    # No model name is assumed: the charm takes the gateway from the relation unless told.
    assert CHARMCRAFT["config"]["options"]["gateway"]["default"] == ""
    assert CHARMCRAFT["requires"]["gateway-info"]["interface"] == "istio-gateway-info"


@pytest.mark.parametrize("overlay", CASES, ids=IDS)
def test_every_model_learns_its_gateway_from_istio_pilot(overlay):
    """Without gateway-info (or the gateway option) the charm stays blocked and serves nothing."""
    bundle = merged(overlay)
    relations = {frozenset(r) for r in bundle["relations"]}
    for name, app in bundle["applications"].items():
        if site_bundle.is_ours(app) and not (app.get("options") or {}).get("gateway"):
            assert frozenset({f"{name}:gateway-info", "istio-pilot:gateway-info"}) in relations, name
    # Related, the seldon-core charm turns on Seldon's own Istio VirtualServices (ISTIO_ENABLED).
    assert not any("seldon-controller-manager:gateway-info" in r for r in relations)


@pytest.mark.parametrize("overlay", CASES, ids=IDS)
def test_the_local_site_accepts_it(overlay):
    apps = site_bundle.load(ROOT / "bundle.yaml", [overlay] if overlay else [])
    assert "scratch" in {a.name for a in apps}


# --- charmcraft.yaml ---------------------------------------------------------------------


def _pins(lines: list[str]) -> dict[str, str]:
    """name -> version of `name==version` lines (names as pip compares them: case-insensitive)."""
    pins = {}
    for line in lines:
        name, sep, version = line.split("#")[0].strip().partition("==")
        if name:
            assert sep, f"{line!r} is not pinned with =="
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_binary_packages_are_pinned_to_the_versions_the_requirements_pin():
    """charmcraft 3 installs charm-binary-python-packages first, then requirements.txt from
    source: a binary package at any other version is rebuilt from source (charm_builder.py)."""
    (part,) = CHARMCRAFT["parts"].values()
    binary = _pins(part["charm-binary-python-packages"])
    required = _pins((ROOT / "charms/onnx-model/requirements.txt").read_text().splitlines())
    assert binary and {name: required.get(name) for name in binary} == binary


def test_the_charm_is_built_for_the_one_architecture_the_site_runs_on():
    from edge_site.bootstrap import SITE_ARCHES

    assert set(CHARMCRAFT["platforms"]) == {"amd64"}
    assert "amd64" in SITE_ARCHES
