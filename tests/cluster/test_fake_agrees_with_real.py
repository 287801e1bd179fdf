"""The unit tests' fake cluster (support/fake_k8s.py) and the real API server, on the same scenarios.

The fake stays for speed (hundreds of unit tests in seconds); this file is what keeps it honest:
each scenario runs the charm against both and asserts the same outcome a user would see.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import cluster as cluster_module
from support import kube_binaries
from support.charm_harness import SHA2, V1
from support.fake_k8s import FakeCluster, api_error
from support.kube_cluster import ControlPlane

APP = "scratch"
CANARY = {**V1, "canary-model-uri": "https://models.example/v2.onnx", "canary-model-sha256": SHA2, "canary-weight": 0}


class Fake:
    name = "fake"

    def __init__(self, monkeypatch, namespace: str) -> None:
        self.k8s = FakeCluster()
        monkeypatch.setattr(cluster_module, "connect", self.k8s.client)
        self.namespace = namespace

    def untrusted(self, app: str) -> None:
        self.k8s.fail[("apply", "*")] = api_error(403, "seldondeployments is forbidden")

    def objects(self) -> set[tuple[str, str]]:
        return {(kind, name) for (kind, ns, name) in self.k8s.objects if ns == self.namespace}


class Real:
    name = "real"

    def __init__(self, charm) -> None:
        self.charm = charm
        self.namespace = charm.namespace

    def untrusted(self, app: str) -> None:
        self.charm.account(app, trusted=False)

    def objects(self) -> set[tuple[str, str]]:
        dyn = self.charm.plane.dynamic()
        found = set()
        for api, kind in (
            ("machinelearning.seldon.io/v1", "SeldonDeployment"),
            ("networking.istio.io/v1beta1", "VirtualService"),
            ("v1", "Secret"),
        ):
            listing = dyn.get(
                dyn.resources.get(api_version=api, kind=kind),
                namespace=self.namespace,
                label_selector="app.kubernetes.io/managed-by=onnx-model-charm",
            )
            found |= {(kind, item.metadata.name) for item in listing.items}
        return found


@pytest.fixture(params=["fake", "real"])
def backend(request, monkeypatch):
    charm = request.getfixturevalue("charm")
    if request.param == "fake":
        return charm, Fake(monkeypatch, charm.namespace)
    charm.account(APP)
    return charm, Real(charm)


def test_install_makes_the_same_objects(backend):
    charm, side = backend
    charm.run("install", APP, V1)
    assert side.objects() == {("SeldonDeployment", APP), ("VirtualService", APP)}, side.name


def test_removing_the_canary_prunes_it_on_both(backend):
    charm, side = backend
    charm.run("install", APP, CANARY)
    assert ("SeldonDeployment", f"{APP}-canary") in side.objects(), side.name
    charm.run("config_changed", APP, V1)
    assert side.objects() == {("SeldonDeployment", APP), ("VirtualService", APP)}, side.name


def test_without_trust_both_say_juju_trust(backend):
    charm, side = backend
    side.untrusted(APP)
    out = charm.run("install", APP, V1)
    assert out.unit_status.name == "blocked", side.name
    assert out.unit_status.message == f"cannot reach the Kubernetes API (403): run juju trust {APP} --scope=cluster"
    assert side.objects() == set()


@pytest.fixture(scope="module")
def bare_api_server() -> Iterator[ControlPlane]:
    """etcd and kube-apiserver with Istio's CRDs but not Seldon's: seldon-core not deployed yet."""
    workdir = Path(tempfile.mkdtemp(prefix="edge-bare-"))
    plane = ControlPlane(workdir, kube_binaries.all_binaries(build_missing=False), node_cpu="2", node_memory="4Gi")
    try:
        plane.start(crds=False)
        plane.load_crds(files=("istio-1.17.3.yaml",))
        yield plane
    finally:
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("side", ["fake", "real"])
def test_a_missing_seldon_crd_says_deploy_seldon_core_on_both(side, bare_api_server, monkeypatch):
    from ops import testing

    from charm import OnnxModelCharm
    from support.charm_harness import gateway_info

    if side == "fake":
        fake = FakeCluster()
        fake.served.discard(("machinelearning.seldon.io/v1", "SeldonDeployment"))
        monkeypatch.setattr(cluster_module, "connect", fake.client)
    else:
        monkeypatch.setattr(cluster_module, "connect", lambda: bare_api_server.dynamic())
    ctx = testing.Context(OnnxModelCharm, app_name=APP)
    state = testing.State(leader=True, config=V1, model=testing.Model(name="kubeflow"), relations={gateway_info()})
    out = ctx.run(ctx.on.install(), state)
    assert out.unit_status.name == "waiting", side
    assert "SeldonDeployment (machinelearning.seldon.io/v1) is not served by the cluster: deploy seldon-core first" in (
        out.unit_status.message
    ), side
