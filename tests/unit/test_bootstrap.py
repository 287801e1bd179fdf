"""scripts/bootstrap-edge-site with fake snap/microk8s/juju/charmcraft on PATH that record their calls."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from conftest import FRESH  # noqa: E402
from edge_site import airgap  # noqa: E402


def test_a_fresh_host_gets_every_step_in_order(host):
    code, said = host.bootstrap()
    assert code == 0, "\n".join(said)
    assert host.mutating() == [
        "snap install microk8s --classic --channel=1.28/stable",
        "microk8s enable dns",
        "microk8s enable hostpath-storage",
        "snap install juju --channel=3.6/stable",
        "juju bootstrap microk8s edge-microk8s",
        "juju add-model kubeflow -c edge-microk8s",
        "snap install charmcraft --classic",
        "charmcraft pack",
        f"juju deploy -m edge-microk8s:kubeflow {ROOT / 'bundle.yaml'} --trust",
        'juju wait-for model kubeflow --query forEach(applications, app => app.status == "active") --timeout 45m',
    ]
    assert host.charm.read_bytes() == b"charm"
    assert not list((ROOT / "charms/onnx-model").glob("onnx-model_*.charm"))
    assert "curl -s http://127.0.0.1:31380/model/scratch/api/v0.1/predictions" in said[-1]


def test_a_second_run_changes_nothing_and_says_so(host):
    assert host.bootstrap()[0] == 0
    before = len(host.mutating())
    code, said = host.bootstrap()
    assert code == 0
    assert len(host.mutating()) == before
    assert all(line.startswith("ok ") for line in said[:-2])
    assert "nothing to change: the site was already up" in said


def test_overlays_are_passed_to_the_deploy(host):
    code, _ = host.bootstrap(overlays=[ROOT / "overlays/second-model.yaml"])
    assert code == 0
    deploy = next(c for c in host.calls() if c.startswith("juju deploy"))
    assert deploy.endswith(f"--overlay {ROOT / 'overlays/second-model.yaml'}")
    assert "scratch-int8" in host.state()["apps"]


@pytest.fixture
def exported(host, tmp_path):
    """A folder made by `airgap-images export` on a connected machine, then a fresh edge host."""
    charm = tmp_path / "packed" / "onnx-model.charm"
    charm.parent.mkdir()
    charm.write_bytes(b"packed onnx-model")
    host.set(snaps=["juju"])
    airgap.export(tmp_path / "airgap", [], say=lambda _: None, charm=charm)
    (tmp_path / "calls.log").write_text("")
    host.set(**FRESH)  # the edge machine: nothing installed, nothing reachable but the folder
    return tmp_path / "airgap"


def test_an_airgapped_host_installs_everything_from_the_export(host, registry, exported):
    code, said = host.bootstrap(airgap=exported)
    assert code == 0, "\n".join(said)
    mutating = host.mutating()
    # snaps from the downloaded files, after acknowledging their assertions; never the store
    assert f"snap install {exported / 'snaps/microk8s_42.snap'} --classic" in mutating
    assert f"snap ack {exported / 'snaps/juju_42.assert'}" in host.calls()
    assert not any(c.startswith("snap install microk8s") or c == "snap install charmcraft --classic" for c in mutating)
    # the registry is up and holds every image before Juju needs its own from it
    assert "microk8s enable registry" in mutating
    pushed = host.state()["pushed"]
    assert pushed == (exported / "images.txt").read_text().split()
    bootstrap = "juju bootstrap microk8s edge-microk8s --config caas-image-repo=localhost:32000/jujusolutions"
    assert host.calls().index(bootstrap) > max(host.calls().index(f"docker push {image}") for image in pushed)
    # our charm comes from the folder (charmcraft cannot fetch its build dependencies offline)
    assert "charmcraft pack" not in mutating
    assert host.charm.read_bytes() == b"packed onnx-model"
    deploy = next(c for c in mutating if c.startswith("juju deploy"))
    assert deploy.endswith(f"--overlay {ROOT / 'overlays/airgapped.yaml'} --overlay {exported / 'charms.yaml'}")


def test_an_airgapped_second_run_changes_nothing(host, registry, exported):
    assert host.bootstrap(airgap=exported)[0] == 0
    before = len(host.mutating())
    code, said = host.bootstrap(airgap=exported)
    assert code == 0
    assert len(host.mutating()) == before
    assert "nothing to change: the site was already up" in said


@pytest.mark.parametrize(
    "fail, step, hint",
    [
        ("juju bootstrap", "controller edge-microk8s", "usermod -a -G microk8s"),
        ("charmcraft pack", "onnx-model charm packed", "lxd init --auto"),
        ("juju deploy", "bundle deployed", "juju debug-log"),
        ("microk8s enable hostpath-storage", "addons dns hostpath-storage", "microk8s inspect"),
    ],
)
def test_a_failing_step_stops_with_what_to_do(host, fail, step, hint):
    host.set(fail=fail, fail_message="something broke")
    code, said = host.bootstrap()
    assert code == 1
    failure = next(line for line in said if line.startswith("FAILED"))
    assert failure.startswith(f"FAILED   {step}: `{fail}")
    assert "something broke" in failure and hint in failure
    later = {"bundle deployed": "juju wait-for", "controller edge-microk8s": "juju add-model"}
    if step in later:
        assert not any(c.startswith(later[step]) for c in host.calls())


def test_a_stale_charm_is_packed_again(host):
    assert host.bootstrap()[0] == 0
    os.utime(host.charm, (1, 1))  # older than the charm's sources
    host.bootstrap()
    assert host.mutating().count("charmcraft pack") == 2
