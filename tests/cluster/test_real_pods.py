"""Real pods: the server image under a kubelet, behind Envoy -> Service -> pod, rolled by the charm.

The model is the bundle's own (the int8 scratch detector inside the image), deployed by the charm
against the real API server; Seldon's operator makes the Deployment, the kubelet runs its pod from
the imported image, kube-proxy routes the Service, and the gateway (support/cluster_gateway.py) is
configured from the VirtualService read back from the API server.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import pytest
import requests
from kubernetes import client, watch

from local_site import bundle as site_bundle  # noqa: E402  (scripts/ is on sys.path via conftest)
from manifests import SHA_LABEL
from support.charm_on_cluster import CharmOnCluster
from support.cluster_gateway import ClusterGateway
from support.kube_cluster import wait_for
from support.site_requests import ROOT
from support.steady_client import SteadyClient

APP = "scratch"
# the README's example photo: the served detector finds scratches on it
PHOTO = ROOT / "tests/data/metal-tags/images/image-2020-04-22-10-51-51-85-cropped-right-bottom.jpg"
BODY = json.dumps({"binData": base64.b64encode(PHOTO.read_bytes()).decode()})
RESULTS = ROOT / "build" / "cluster-measurements.json"


def bundle_options(*overlays: str) -> dict:
    (app,) = [a for a in site_bundle.load(ROOT / "bundle.yaml", [ROOT / o for o in overlays]) if a.name == APP]
    return dict(app.options)


# the other model a roll goes to: the fp32 variant, as its overlay names it
FP32 = {k: bundle_options("overlays/fp32.yaml")[k] for k in ("model-uri", "model-sha256")}


def record(key: str, value) -> None:
    """Measurements for the README: written to build/cluster-measurements.json and printed."""
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data[key] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"measured: {key} = {value}", flush=True)


def pods(plane, namespace: str, sdep: str = APP) -> list[client.V1Pod]:
    core = client.CoreV1Api(plane.api())
    return core.list_namespaced_pod(namespace, label_selector=f"seldon-deployment-id={sdep}").items


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def wait_serving(plane, namespace: str, sha: str, timeout: float = 300) -> client.V1Pod:
    """The one Ready pod of the model with ``sha`` (and no other pod left)."""

    def only_new():
        current = [p for p in pods(plane, namespace) if not p.metadata.deletion_timestamp]
        if len(current) == 1 and current[0].metadata.labels.get(SHA_LABEL) == sha[:16] and ready(current[0]):
            return current[0]
        return None

    return wait_for(only_new, timeout, f"a Ready pod serving {sha[:7]}", interval=0.5, check=plane.check)


def wait_pod_ready(plane, namespace: str, sdep: str, what: str) -> None:
    """Until a pod of SeldonDeployment ``sdep`` is Ready (its server verified and loaded the file)."""
    wait_for(lambda: [p for p in pods(plane, namespace, sdep) if ready(p)], 180, what, check=plane.check)


def predict(gateway: ClusterGateway, model: str = APP) -> requests.Response:
    return requests.post(
        f"{gateway.url}/model/{model}/api/v0.1/predictions",
        data=BODY,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


class PodEvents:
    """Every pod change of the namespace as the API reports it, with the time it was seen."""

    def __init__(self, plane, namespace: str) -> None:
        self.events: list[tuple[float, str, str, bool, bool]] = []  # t, type, pod, ready, deleting
        self._watch = watch.Watch()
        core = client.CoreV1Api(plane.api())
        self._thread = threading.Thread(target=self._run, args=(core, namespace), daemon=True)

    def _run(self, core, namespace: str) -> None:
        for event in self._watch.stream(core.list_namespaced_pod, namespace, timeout_seconds=600):
            pod = event["object"]
            self.events.append(
                (time.monotonic(), event["type"], pod.metadata.name, ready(pod), bool(pod.metadata.deletion_timestamp))
            )

    def __enter__(self) -> PodEvents:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._watch.stop()

    def first(self, pod: str, *, ready_: bool | None = None, deleting: bool | None = None) -> float | None:
        for t, _, name, is_ready, is_deleting in self.events:
            if name == pod and (ready_ is None or is_ready == ready_) and (deleting is None or is_deleting == deleting):
                return t
        return None


@pytest.fixture(scope="module")
def site(control_plane):
    """The bundle's scratch model serving in a real pod, in a namespace of this module, behind the gateway."""
    namespace = "edge-pods"
    control_plane.ensure_namespace(namespace)
    monkeypatch = pytest.MonkeyPatch()
    charm = CharmOnCluster(control_plane, namespace, monkeypatch)
    charm.account(APP)
    gateway = ClusterGateway(control_plane)
    try:
        yield charm, gateway
    finally:
        gateway.stop()
        monkeypatch.undo()
        control_plane.delete_namespace(namespace)


def test_the_bundles_model_comes_up_ready_in_a_real_pod_and_answers_through_the_gateway(site, control_plane):
    charm, gateway = site
    options = bundle_options()
    started = time.monotonic()
    charm.run("install", APP, options)
    pod = wait_serving(control_plane, charm.namespace, options["model-sha256"])
    ready_at = next(c.last_transition_time for c in pod.status.conditions if c.type == "Ready")
    record("pod_created_to_ready_s", round((ready_at - pod.metadata.creation_timestamp).total_seconds(), 1))
    record("install_to_ready_s", round(time.monotonic() - started, 1))
    assert pod.spec.containers[0].readiness_probe.http_get.path == "/health/status"

    out = charm.run("update_status", APP, options)
    assert out.unit_status.name == "active", out.unit_status
    assert out.unit_status.message == f"serving /model/{APP}/ sha {options['model-sha256'][:7]}"

    gateway.sync(charm.namespace)
    resp = predict(gateway)
    assert resp.status_code == 200, resp.text
    answer = resp.json()["jsonData"]
    assert answer["model"]["sha256"] == options["model-sha256"]
    assert answer["detections"], "the scratch detector found nothing on a photo with scratches"

    # The pod's real memory, from its cgroup (v1 here), against the request the README sizes.
    uid = pod.metadata.uid
    usage = list(Path("/sys/fs/cgroup/memory").glob(f"kubepods*/**/pod{uid}/memory.usage_in_bytes"))
    stat = usage[0].with_name("memory.stat").read_text().split("\n")
    rss = dict(line.split() for line in stat if line)["total_rss"]
    record("pod_memory_total_rss_mib", round(int(rss) / 2**20))
    record("pod_memory_usage_mib", round(int(usage[0].read_text()) / 2**20))


def test_a_new_model_rolls_out_under_load_with_no_failed_request(site, control_plane):
    charm, gateway = site
    options = bundle_options()
    old = wait_serving(control_plane, charm.namespace, options["model-sha256"])
    with PodEvents(control_plane, charm.namespace) as events, SteadyClient(lambda: predict(gateway)) as steady:
        started = time.monotonic()
        charm.run("config_changed", APP, {**options, **FP32})
        new = wait_serving(control_plane, charm.namespace, FP32["model-sha256"])
        steady.wait_for_run(FP32["model-sha256"], 20, timeout=120)
        rolled_s = time.monotonic() - started
    assert steady.failures == [], steady.failures[:5]
    assert set(steady.shas) == {options["model-sha256"], FP32["model-sha256"]}
    new_ready = events.first(new.metadata.name, ready_=True)
    old_leaving = events.first(old.metadata.name, deleting=True)
    assert new_ready is not None and old_leaving is not None, events.events
    assert new_ready <= old_leaving, "the old pod was told to go before the new one was Ready"
    record("rollout_config_to_new_answers_s", round(rolled_s, 1))
    record("rollout_requests_during", len(steady.shas))
    # The charm applies the same route; the gateway needs no change for a roll.
    out = charm.run("update_status", APP, {**options, **FP32})
    assert out.unit_status.message == f"serving /model/{APP}/ sha {FP32['model-sha256'][:7]}"


def test_a_tampered_model_never_becomes_ready_and_the_old_one_keeps_answering(site, control_plane):
    charm, gateway = site
    options = {**bundle_options(), **FP32}
    wait_serving(control_plane, charm.namespace, FP32["model-sha256"])
    tampered = {
        **options,
        "model-uri": "file:///opt/models/scratch-detector/model-int8.onnx",
    }  # a real model file under a sha that is not its own
    tampered["model-sha256"] = "0" * 64
    with SteadyClient(lambda: predict(gateway)) as steady:
        charm.run("config_changed", APP, tampered)

        def refused():
            out = charm.run("update_status", APP, tampered)
            return (
                out.unit_status if "sha256" in out.unit_status.message and out.unit_status.name == "blocked" else None
            )

        status = wait_for(
            refused, 180, "the charm to quote the server's refusal", interval=2, check=control_plane.check
        )
        steady.wait_for_answers(len(steady.shas) + 20, timeout=60)  # while the tampered pod exists
    assert steady.failures == [], steady.failures[:5]
    assert set(steady.shas) == {FP32["model-sha256"]}, "only the verified model answered"
    assert not any(
        ready(p) for p in pods(control_plane, charm.namespace) if p.metadata.labels.get(SHA_LABEL) == "0" * 16
    )
    print(f"status quoting the server: {status.message}")
    charm.run("config_changed", APP, options)
    wait_serving(control_plane, charm.namespace, FP32["model-sha256"])


def share(gateway, sha: str, n: int = 200) -> int:
    answers = [predict(gateway) for _ in range(n)]
    assert all(a.status_code == 200 for a in answers), [a.text[:200] for a in answers if a.status_code != 200][:3]
    return sum(a.json()["jsonData"]["model"]["sha256"] == sha for a in answers)


def within_binomial(count: int, n: int, p: float) -> bool:
    """count is within 4 standard deviations of n*p (a false alarm about 1 in 16 000 runs)."""
    return abs(count - n * p) <= 4 * (n * p * (1 - p)) ** 0.5


def start_canary(charm, control_plane, gateway, stable: dict, canary_options: dict, weight: int) -> dict:
    """A canary of ``canary_options``'s model at ``weight``%, Ready, routed by the charm and the gateway."""
    canary = {
        **stable,
        "canary-model-uri": canary_options["model-uri"],
        "canary-model-sha256": canary_options["model-sha256"],
        "canary-weight": weight,
    }
    charm.run("config_changed", APP, canary)
    wait_pod_ready(control_plane, charm.namespace, f"{APP}-canary", "the canary's pod Ready")
    status = wait_for(
        lambda: (st := charm.run("update_status", APP, canary).unit_status).message.endswith(f"at {weight}%") and st,
        60,
        f"the charm to route {weight}% to the canary",
    )
    print(f"canary status: {status.message}")
    gateway.sync(charm.namespace)
    return canary


def remove_canary(charm, control_plane, gateway, canary: dict) -> dict:
    """What ``roll-model --abort`` asks of the charm: weight 0 first (the route moves, the gateway
    with it), then, once no request can reach it, the canary's options go and its pods with them."""
    unrouted = {**canary, "canary-weight": 0}
    charm.run("config_changed", APP, unrouted)
    gateway.sync(charm.namespace)  # what istiod pushes when the VirtualService changes
    without = {k: v for k, v in canary.items() if not k.startswith("canary-")}
    charm.run("config_changed", APP, without)
    wait_for(lambda: not pods(control_plane, charm.namespace, f"{APP}-canary"), 120, "the canary's pods gone")
    gateway.sync(charm.namespace)
    return without


def test_a_canary_at_30_percent_answers_within_binomial_bounds_and_abort_drops_nothing(site, control_plane):
    """The long-lived gateway follows each route change in place (RDS), as Istio's gateway does."""
    charm, gateway = site
    stable = {**bundle_options(), **FP32}
    wait_serving(control_plane, charm.namespace, FP32["model-sha256"])
    int8 = bundle_options()
    canary = start_canary(charm, control_plane, gateway, stable, int8, 30)
    with SteadyClient(lambda: predict(gateway)) as steady:
        n = 200
        steady.wait_for_answers(n, timeout=300)
        count = steady.shas[:n].count(int8["model-sha256"])
        remove_canary(charm, control_plane, gateway, canary)
        after_removal = len(steady.shas)
        steady.wait_for_answers(after_removal + 30, timeout=60)
    record("canary_30_share_of_200", count)
    assert within_binomial(count, n, 0.30), f"{count}/{n} answers from the canary at 30%"
    assert steady.failures == [], steady.failures[:5]
    # once the canary's pods are gone, only the stable model answers
    assert set(steady.shas[after_removal:]) == {FP32["model-sha256"]}
    record("canary_abort_requests_during", after_removal - n)


def test_promoting_a_canary_under_load_drops_nothing(site, control_plane):
    """What ``roll-model --promote`` asks of the charm: the stable model rolls to the canary's
    (the canary keeps its share meanwhile), then the canary is removed as an abort removes it."""
    charm, gateway = site
    stable = {**bundle_options(), **FP32}
    wait_serving(control_plane, charm.namespace, FP32["model-sha256"])
    int8 = bundle_options()
    canary = start_canary(charm, control_plane, gateway, stable, int8, 30)
    with SteadyClient(lambda: predict(gateway)) as steady:
        steady.wait_for_answers(20, timeout=120)
        rolled = {**canary, "model-uri": int8["model-uri"], "model-sha256": int8["model-sha256"]}
        charm.run("config_changed", APP, rolled)
        wait_serving(control_plane, charm.namespace, int8["model-sha256"])
        gateway.sync(charm.namespace)
        remove_canary(charm, control_plane, gateway, rolled)
        steady.wait_for_run(int8["model-sha256"], 30, timeout=60)
    assert steady.failures == [], steady.failures[:5]
    # A terminating pod leaves the Service's endpoints a moment after it is told to go (kube-proxy
    # syncs its rules), so an answer or two from the old model may follow the new pod's Ready; once
    # the promoted model has answered 20 times in a row, the old one never answers again.
    shas = steady.shas
    settled = next(i for i in range(len(shas)) if shas[i : i + 20] == [int8["model-sha256"]] * 20)
    assert FP32["model-sha256"] not in shas[settled:], "the old model answered again after the promotion"
    out = charm.run("update_status", APP, {k: v for k, v in rolled.items() if not k.startswith("canary-")})
    assert out.unit_status.message == f"serving /model/{APP}/ sha {int8['model-sha256'][:7]}"
    record("canary_promote_requests_during", len(steady.shas))


def shadow_call(gateway: ClusterGateway) -> requests.Response:
    return requests.post(
        f"{gateway.url}/model/{APP}/shadow/api/v0.1/predictions",
        data=BODY,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def test_a_shadow_answers_on_its_own_path_and_a_refused_one_leaves_the_line_alone(site, control_plane):
    """The charm's shadow on real pods: its own SeldonDeployment, Ready only once its server verified
    the file, answering at /model/<name>/shadow/ while the line's path keeps the stable model; a
    tampered shadow is quoted as refused and never answers (the shadow before it does, until the
    options change again); unset, its pods go. All under load."""
    charm, gateway = site
    stable = bundle_options()  # what the promotion above left serving (int8)
    wait_serving(control_plane, charm.namespace, stable["model-sha256"])
    shadowed = {**stable, "shadow-model-uri": FP32["model-uri"], "shadow-model-sha256": FP32["model-sha256"]}
    tampered = {**shadowed, "shadow-model-sha256": "0" * 64}
    with SteadyClient(lambda: predict(gateway)) as steady:
        charm.run("config_changed", APP, shadowed)
        gateway.sync(charm.namespace)
        wait_pod_ready(control_plane, charm.namespace, f"{APP}-shadow", "the shadow's pod Ready")
        status = wait_for(
            lambda: (st := charm.run("update_status", APP, shadowed).unit_status).name == "active" and st,
            60,
            "the charm to report the shadow ready",
        )
        print(f"shadow status: {status.message}")
        assert f"shadow {FP32['model-sha256'][:7]} ready at /model/{APP}/shadow/" in status.message
        gateway.sync(charm.namespace)
        answer = shadow_call(gateway)
        assert answer.status_code == 200, answer.text[:300]
        assert answer.json()["jsonData"]["model"]["sha256"] == FP32["model-sha256"]

        charm.run("config_changed", APP, tampered)

        def refused():
            out = charm.run("update_status", APP, tampered).unit_status
            return out if "refused, the line is unaffected" in out.message else None

        status = wait_for(refused, 180, "the shadow's refusal quoted", interval=2, check=control_plane.check)
        print(f"refused shadow status: {status.message}")
        assert status.name == "blocked" and "sha256 mismatch" in status.message
        gateway.sync(charm.namespace)
        # Seldon rolls the shadow's Deployment like any other (maxUnavailable 0): the tampered pod
        # is never Ready, so the verified shadow before it keeps answering; never the refused file.
        answers = [shadow_call(gateway) for _ in range(5)]
        assert [(a.status_code, a.json()["jsonData"]["model"]["sha256"]) for a in answers] == [
            (200, FP32["model-sha256"])
        ] * 5

        charm.run("config_changed", APP, stable)
        wait_for(lambda: not pods(control_plane, charm.namespace, f"{APP}-shadow"), 120, "the shadow's pods gone")
        gateway.sync(charm.namespace)
        steady.wait_for_answers(len(steady.shas) + 10, timeout=60)
    assert steady.failures == [], steady.failures[:5]
    assert set(steady.shas) == {stable["model-sha256"]}, "the line only ever got the stable model"
    out = charm.run("update_status", APP, stable)
    assert out.unit_status.message == f"serving /model/{APP}/ sha {stable['model-sha256'][:7]}"


def test_the_scrape_targets_are_the_real_pods_and_each_answers(site, control_plane):
    from ops import testing

    charm, _ = site
    options = bundle_options()  # what the promotion above left serving (int8)
    relation = testing.Relation("metrics-endpoint", remote_app_name="grafana-agent")
    out = charm.run("update_status", APP, options, relations={relation})
    jobs = json.loads(out.get_relation(relation.id).local_app_data["scrape_jobs"])
    targets = [t for job in jobs for c in job["static_configs"] for t in c["targets"]]
    ips = {p.status.pod_ip for p in pods(control_plane, charm.namespace) if ready(p)}
    assert {t.rsplit(":", 1)[0] for t in targets} == ips and ips
    for target in targets:
        body = requests.get(f"http://{target}{jobs[0]['metrics_path']}", timeout=10).text
        assert "defect_images_total" in body, target


@pytest.mark.parametrize(
    "config, cause",
    [
        ({"server-image": "localhost/edge-site/no-such-image:1"}, "image"),
        ({"memory": "48Mi", "memory-request": "48Mi"}, "OOMKilled"),
        ({"cpu-request": "2100m", "cpu": "3"}, "Insufficient cpu"),  # more than the node's 2 CPUs
    ],
    ids=["image-not-on-the-node", "memory-limit-below-need", "request-over-free-cpu"],
)
def test_the_real_cause_reaches_the_status(charm, control_plane, config, cause):
    charm.account("broken")
    options = {**bundle_options(), "model-name": "broken", **config}
    charm.run("install", "broken", options)

    said: list[str] = []

    def explained():
        status = charm.run("update_status", "broken", options).unit_status
        said[:] = [status.message]
        return status if cause.lower() in status.message.lower() else None

    try:
        status = wait_for(explained, 180, f"the status to name {cause}", interval=2, check=control_plane.check)
    except Exception as exc:
        raise AssertionError(f"{exc}; the status said: {said}") from None
    print(f"{cause}: {status.name}: {status.message}")
    assert status.name in ("blocked", "waiting")
