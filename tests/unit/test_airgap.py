"""scripts/airgap-images with fake juju, snap, skopeo, buildah and microk8s on PATH, and the overlay it serves."""

from __future__ import annotations

import json
import subprocess
import tarfile
import zipfile

import pytest
import yaml

from edge_site import airgap, server_image
from edge_site.shell import ROOT

SELDON_OPERATOR = "charmedkubeflow/seldon-core-operator:1.17.1-c95840c"  # seldon-core track/1.17 metadata.yaml


@pytest.fixture
def connected(host):
    """A connected machine: juju installed (snap, skopeo and buildah are the fakes on PATH)."""
    host.set(snaps={"juju": {"channel": "3.6/stable"}})
    return host


def export(tmp_path, overlays=()) -> tuple[int, list[str]]:
    """Export as a connected machine would, with a packed charm in build/."""
    charm = tmp_path / "build" / "onnx-model.charm"
    if not charm.exists():
        charm.parent.mkdir(parents=True)
        charm.write_bytes(b"packed onnx-model")
    said: list[str] = []
    return airgap.export(tmp_path / "airgap", list(overlays), say=said.append, charm=charm), said


def listed(folder) -> dict[str, list[str]]:
    manifest = json.loads((folder / "images.json").read_text())
    return {kind: [e["image"] for e in entries] for kind, entries in manifest.items()}


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


def test_export_carries_microk8s_own_images_under_their_own_names(connected, tmp_path):
    export(tmp_path)
    containerd = listed(tmp_path / "airgap")["containerd"]
    for image in (
        "docker.io/calico/node:v3.25.1",
        "registry.k8s.io/pause:3.7",
        "docker.io/coredns/coredns:1.10.1",
        "docker.io/cdkbot/hostpath-provisioner:1.4.2",
        "docker.io/library/registry:2.8.1",  # the registry add-on cannot start without it
    ):
        assert image in containerd


def test_export_builds_the_server_image_and_never_pulls_it(connected, tmp_path):
    export(tmp_path)
    reference = server_image.reference()
    assert reference in listed(tmp_path / "airgap")["containerd"]
    assert any(c.startswith("buildah bud") and "/models/server/Containerfile" in c for c in connected.calls())
    assert not any(reference in c for c in connected.calls() if c.startswith("skopeo"))
    with tarfile.open(tmp_path / "airgap" / airgap.archive_name(reference)) as tar:
        assert json.load(tar.extractfile("manifest.json"))[0]["RepoTags"] == [reference]


def test_export_pushes_juju_and_charm_images_to_the_registry_under_local_names(connected, tmp_path):
    export(tmp_path)
    registry = listed(tmp_path / "airgap")["registry"]
    assert all(image.startswith("localhost:32000/") for image in registry)
    for needed in (
        f"localhost:32000/{SELDON_OPERATOR}",  # read from the charm itself
        "localhost:32000/seldonio/seldon-core-executor:1.17.1",
        "localhost:32000/jujusolutions/jujud-operator:3.6.4",  # the juju client's version
        "localhost:32000/jujusolutions/charm-base:ubuntu-20.04",  # the Charmhub charms' base
        "localhost:32000/jujusolutions/charm-base:ubuntu-24.04",  # ours and Juju's controller charm
    ):
        assert needed in registry
    copies = [c.split() for c in connected.calls() if c.startswith("skopeo copy")]
    archives = {c[3].split(":", 2)[2] for c in copies}
    assert set(registry) | set(airgap.MICROK8S_IMAGES) == archives
    assert not any(c.startswith("docker") for c in connected.calls())


def test_export_writes_an_overlay_deploying_the_local_charms_with_local_resources(connected, tmp_path):
    export(tmp_path)
    apps = yaml.safe_load((tmp_path / "airgap/charms.yaml").read_text())["applications"]
    assert set(apps) == {"istio-pilot", "istio-ingressgateway", "seldon-controller-manager"}
    assert apps["seldon-controller-manager"]["charm"] == "./charms/seldon-core.charm"  # the folder moves
    assert apps["seldon-controller-manager"]["resources"] == {"oci-image": f"localhost:32000/{SELDON_OPERATOR}"}


def test_export_brings_the_snaps_and_the_packed_charm(connected, tmp_path):
    export(tmp_path)
    assert (tmp_path / "airgap/onnx-model.charm").read_bytes() == b"packed onnx-model"
    for name in ("microk8s", "juju"):
        snap, assertion = airgap.local_snap(tmp_path / "airgap", name)
        assert snap.exists() and assertion.exists()
    assert "snap download microk8s --channel=1.28/stable" in " ".join(connected.calls())


def test_export_without_a_packed_charm_says_to_pack_it(connected, tmp_path):
    with pytest.raises(airgap.StepFailed, match="pack the charm"):
        airgap.export(tmp_path / "airgap", [], charm=tmp_path / "nothing.charm")


def test_export_again_downloads_and_builds_nothing_again(connected, tmp_path):
    export(tmp_path)
    copies = len([c for c in connected.calls() if c.startswith("skopeo")])
    export(tmp_path)
    assert len([c for c in connected.calls() if c.startswith("juju download")]) == 3
    assert len([c for c in connected.calls() if c.startswith("snap download")]) == 2
    assert len([c for c in connected.calls() if c.startswith("skopeo")]) == copies
    assert connected.state()["builds"] == 1


def test_export_overlays_add_their_charms(connected, tmp_path):
    export(tmp_path, [ROOT / "overlays/auth.yaml"])
    downloaded = {c.split()[2] for c in connected.calls() if c.startswith("juju download")}
    assert {"dex-auth", "oidc-gatekeeper"} <= downloaded


def test_export_stops_with_the_failing_command(connected, tmp_path):
    connected.set(fail="skopeo copy", fail_message="toomanyrequests: rate limit")
    with pytest.raises(airgap.StepFailed, match="skopeo copy .* toomanyrequests"):
        export(tmp_path)
    assert not list((tmp_path / "airgap/images").glob("*.tar"))  # no half-written archive counts as done


def test_import_loads_everything_without_docker_on_a_moved_folder(connected, tmp_path, registry):
    export(tmp_path)
    moved = tmp_path / "edge" / "airgap"  # carried to another machine, another path
    moved.parent.mkdir()
    (tmp_path / "airgap").rename(moved)
    connected.set(snaps={"microk8s": {"channel": "1.28/stable", "classic": True}}, addons=["registry"], online=False)
    (tmp_path / "calls.log").write_text("")  # the edge machine's calls only
    said: list[str] = []
    assert airgap.import_(moved, say=said.append) == 0
    state, everything = connected.state(), listed(moved)
    assert set(state["images"]) >= set(everything["containerd"]) | set(everything["registry"])
    assert set(state["pushed"]) == set(everything["registry"])
    assert airgap.not_side_loaded(moved) == [] and airgap.not_pushed(moved) == []
    apps = yaml.safe_load((moved / "charms.yaml").read_text())["applications"]
    assert apps["istio-pilot"]["charm"] == str((moved / "charms/istio-pilot.charm").resolve())
    assert "--overlay overlays/airgapped.yaml" in said[-1]
    assert not any(c.startswith(("docker", "skopeo", "buildah")) for c in connected.calls())


def test_import_without_the_registry_says_how_to_enable_it(connected, tmp_path, registry):
    export(tmp_path)
    connected.set(snaps={"microk8s": {"channel": "1.28/stable", "classic": True}}, online=False)
    with pytest.raises(airgap.StepFailed, match="microk8s enable registry"):
        airgap.import_(tmp_path / "airgap")
    assert connected.state()["pushed"] == []


def test_fake_ctr_push_needs_the_registry_pod_and_plain_http(connected, tmp_path):
    connected.set(snaps={"microk8s": {"channel": "1.28/stable", "classic": True}}, addons=["registry"], online=False)
    connected.set(images=["localhost:32000/x:1"])
    out = subprocess.run(
        ["microk8s", "ctr", "image", "push", "--plain-http", "localhost:32000/x:1"], capture_output=True, text=True
    )
    assert "connection refused" in out.stderr  # registry:2.8.1 was never side-loaded: its pod cannot start
    connected.set(images=["localhost:32000/x:1", "docker.io/library/registry:2.8.1", *airgap.MICROK8S_IMAGES])
    out = subprocess.run(["microk8s", "ctr", "image", "push", "localhost:32000/x:1"], capture_output=True, text=True)
    assert "server gave HTTP response to HTTPS client" in out.stderr


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
    }


def test_the_overlay_names_only_images_that_are_exported(connected, tmp_path):
    export(tmp_path)
    assert overlay_images() <= set(listed(tmp_path / "airgap")["registry"])


def test_the_imported_server_image_is_the_one_the_charm_defaults_to():
    charmcraft = yaml.safe_load((ROOT / "charms/onnx-model/charmcraft.yaml").read_text())
    assert charmcraft["config"]["options"]["server-image"]["default"] == server_image.reference()
