"""scripts/airgap-images with fake juju and docker on PATH, and the air-gapped overlay it serves."""

from __future__ import annotations

import zipfile

import pytest
import yaml

from edge_site import airgap
from edge_site.shell import ROOT

SELDON_OPERATOR = "docker.io/charmedkubeflow/seldon-core-operator:v1.17.1_22.04_1"


@pytest.fixture
def connected(host):
    """A connected machine: juju and docker installed; Charmhub's seldon-core has an OCI resource."""
    host.set(snaps=["juju", "docker"], charm_resources={"seldon-core": {"oci-image": SELDON_OPERATOR}})
    return host


def export(tmp_path, overlays=()) -> tuple[int, list[str]]:
    """Export as a connected machine would, with a packed charm in build/."""
    charm = tmp_path / "build" / "onnx-model.charm"
    if not charm.exists():
        charm.parent.mkdir(parents=True)
        charm.write_bytes(b"packed onnx-model")
    said: list[str] = []
    return airgap.export(tmp_path / "airgap", list(overlays), say=said.append, charm=charm), said


def test_export_downloads_every_charmhub_charm_of_the_bundle(connected, tmp_path):
    code, _ = export(tmp_path)
    assert code == 0
    downloads = [c for c in connected.calls() if c.startswith("juju download")]
    assert sorted(c.split()[2:5] for c in downloads) == [
        ["istio-gateway", "--channel", "1.17/stable"],
        ["istio-pilot", "--channel", "1.17/stable"],
        ["seldon-core", "--channel", "1.17/stable"],
    ]
    assert all(zipfile.is_zipfile(tmp_path / f"airgap/charms/{c}.charm") for c in ("istio-pilot", "seldon-core"))


def test_export_saves_every_image_under_its_local_name(connected, tmp_path):
    export(tmp_path)
    listed = (tmp_path / "airgap/images.txt").read_text().split()
    assert set(connected.state()["saved"]) == set(listed)
    assert all(image.startswith("localhost:32000/") for image in listed)
    for needed in (
        "localhost:32000/charmedkubeflow/seldon-core-operator:v1.17.1_22.04_1",  # read from the charm itself
        "localhost:32000/seldonio/seldon-core-executor:1.17.1",
        "localhost:32000/edge-mlops/defect-server:0.1.0",
        "localhost:32000/jujusolutions/jujud-operator:3.6.4",  # the juju client's version
    ):
        assert needed in listed
    pulls = {c.split()[2] for c in connected.calls() if c.startswith("docker pull")}
    tags = {tuple(c.split()[2:4]) for c in connected.calls() if c.startswith("docker tag")}
    assert {airgap.local_name(p) for p in pulls} == set(listed)
    assert all((p, airgap.local_name(p)) in tags for p in pulls)


def test_export_writes_an_overlay_deploying_the_local_charms_with_local_resources(connected, tmp_path):
    export(tmp_path)
    apps = yaml.safe_load((tmp_path / "airgap/charms.yaml").read_text())["applications"]
    assert set(apps) == {"istio-pilot", "istio-ingressgateway", "seldon-controller-manager"}
    assert apps["seldon-controller-manager"]["charm"] == "./charms/seldon-core.charm"  # the folder moves
    assert apps["seldon-controller-manager"]["resources"] == {
        "oci-image": "localhost:32000/charmedkubeflow/seldon-core-operator:v1.17.1_22.04_1"
    }


def test_export_brings_the_snaps_and_the_packed_charm(connected, tmp_path):
    export(tmp_path)
    assert (tmp_path / "airgap/onnx-model.charm").read_bytes() == b"packed onnx-model"
    for name in ("microk8s", "juju"):
        snap, assertion = airgap.local_snap(tmp_path / "airgap", name)
        assert snap.exists() and assertion.exists()
    assert "snap download microk8s --channel=1.28/stable" in " ".join(connected.calls())


def test_export_without_a_packed_charm_says_to_pack_it(connected, tmp_path):
    with pytest.raises(airgap.StepFailed, match="charmcraft pack"):
        airgap.export(tmp_path / "airgap", [], charm=tmp_path / "nothing.charm")


def test_export_again_downloads_nothing_again(connected, tmp_path):
    export(tmp_path)
    export(tmp_path)
    assert len([c for c in connected.calls() if c.startswith("juju download")]) == 3
    assert len([c for c in connected.calls() if c.startswith("snap download")]) == 2


def test_export_overlays_add_their_charms(connected, tmp_path):
    export(tmp_path, [ROOT / "overlays/auth.yaml"])
    downloaded = {c.split()[2] for c in connected.calls() if c.startswith("juju download")}
    assert {"dex-auth", "oidc-gatekeeper"} <= downloaded


def test_export_stops_with_the_failing_command(connected, tmp_path):
    connected.set(fail="docker pull", fail_message="toomanyrequests: rate limit")
    with pytest.raises(airgap.StepFailed, match="docker pull .* toomanyrequests"):
        export(tmp_path)


def test_import_pushes_every_exported_image(connected, tmp_path, registry):
    export(tmp_path)
    moved = tmp_path / "edge" / "airgap"  # carried to another machine, another path
    moved.parent.mkdir()
    (tmp_path / "airgap").rename(moved)
    assert airgap.missing_images(moved) == (moved / "images.txt").read_text().split()
    said: list[str] = []
    assert airgap.import_(moved, say=said.append) == 0
    assert connected.state()["pushed"] == (moved / "images.txt").read_text().split()
    assert airgap.missing_images(moved) == []
    apps = yaml.safe_load((moved / "charms.yaml").read_text())["applications"]
    assert apps["istio-pilot"]["charm"] == str((moved / "charms/istio-pilot.charm").resolve())
    assert "--overlay overlays/airgapped.yaml" in said[-1]


def test_import_without_the_registry_says_how_to_enable_it(connected, tmp_path, monkeypatch):
    export(tmp_path)
    monkeypatch.setattr(airgap, "REGISTRY_API", "http://127.0.0.1:9/v2/")  # nothing listens there
    with pytest.raises(airgap.StepFailed, match="microk8s enable registry"):
        airgap.import_(tmp_path / "airgap")
    assert "pushed" not in connected.state()


def test_import_of_an_empty_folder_says_to_export_first(tmp_path):
    with pytest.raises(airgap.StepFailed, match="airgap-images export"):
        airgap.import_(tmp_path)


def overlay_images() -> set[str]:
    """Every image reference the air-gapped overlay sets, the way each charm reads its option."""
    apps = yaml.safe_load((ROOT / "overlays/airgapped.yaml").read_text())["applications"]
    istio = yaml.safe_load(apps["istio-pilot"]["options"]["image-configuration"])
    hub, tag = istio["global-hub"], istio["global-tag"]
    return {
        f"{hub}/{istio['pilot-image']}:{tag}",
        f"{hub}/{istio['global-proxy-image']}:{tag}",
        f"{hub}/{istio['global-proxy-init-image']}:{tag}",
        istio["grpc-bootstrap-init"],
        apps["istio-ingressgateway"]["options"]["proxy-image"],
        apps["seldon-controller-manager"]["options"]["executor-container-image-and-version"],
        apps["scratch"]["options"]["server-image"],
    }


def test_the_overlay_names_only_images_that_are_mirrored():
    assert overlay_images() == set(airgap.option_images().values())


def test_the_mirrored_server_image_is_the_one_the_charm_defaults_to():
    charmcraft = yaml.safe_load((ROOT / "charms/onnx-model/charmcraft.yaml").read_text())
    default = charmcraft["config"]["options"]["server-image"]["default"]
    assert default in airgap.UPSTREAM_IMAGES
