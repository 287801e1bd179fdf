"""scripts/bootstrap-edge-site against fakes that refuse what the real tools refuse (tests/support/fake_cli.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from conftest import FRESH, USER  # noqa: E402
from edge_site import airgap, bootstrap, server_image  # noqa: E402

SERVER = server_image.reference()
WAIT = 'juju wait-for model kubeflow --query forEach(applications, app => app.status == "active") --timeout 45m'


def fake(host, *cmd: str, user: str | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    """Call a fake directly, as root or (through the fake sudo) as ``user``."""
    full = ("sudo", "-u", user, "-H", "--", *cmd) if user else cmd
    return subprocess.run(full, capture_output=True, text=True, input=stdin)


# --- the whole run ------------------------------------------------------------------------


def test_a_fresh_host_gets_every_step_in_order(host):
    host.without_builder()  # a fresh Ubuntu has no buildah
    code, said = host.bootstrap()
    assert code == 0, "\n".join(said)
    steps = host.mutating()
    (build,) = [i for i, c in enumerate(steps) if c.startswith("buildah bud")]
    # the recipe that tox -e image proves: models/server/Containerfile, tagged with the reference
    assert "/models/server/Containerfile" in steps[build] and f" -t {SERVER} " in steps[build]
    steps[build] = "buildah bud (the server image)"
    assert steps == [
        "snap install microk8s --classic --channel=1.28/stable",
        f"usermod -a -G microk8s {USER}",
        "microk8s enable dns",
        "microk8s enable hostpath-storage",
        "microk8s enable rbac",
        "snap install juju --channel=3.6/stable",
        "juju add-k8s edge-microk8s --client",
        "juju bootstrap edge-microk8s edge-microk8s --config mongo-memory-profile=low",
        "juju add-model kubeflow -c edge-microk8s",
        "apt-get install -y " + " ".join(server_image.builder_packages()),
        "buildah bud (the server image)",
        f"microk8s ctr image import {host.server_archive}",
        "snap install charmcraft --classic --channel=3.x/stable",
        "charmcraft pack --destructive-mode",  # this host is the charm's base, ubuntu@24.04
        f"chown -R {USER}: {host.stage}",
        f"juju deploy -m edge-microk8s:kubeflow {host.stage / 'bundle.yaml'} --trust",
        WAIT,
    ]
    assert host.charm.read_bytes() == b"charm"
    assert not list((ROOT / "charms/onnx-model").glob("onnx-model_*.charm"))
    assert "curl -s http://127.0.0.1:31380/model/scratch/api/v0.1/predictions" in said[-1]


def test_the_invoking_user_owns_the_controller_not_root(host):
    assert host.bootstrap()[0] == 0
    clients = host.state()["clients"]
    assert set(clients) == {USER}  # root's own Juju store was never used
    assert "edge-microk8s" in clients[USER]["controllers"]
    assert (host.home / ".local/share").is_dir()
    # that user's `juju status` sees the site; root's does not
    status = fake(host, "juju", "status", "-m", "edge-microk8s:kubeflow", "--format", "json", user=USER)
    assert status.returncode == 0 and "scratch" in json.loads(status.stdout)["applications"]
    assert "not found" in fake(host, "juju", "status", "-m", "edge-microk8s:kubeflow").stderr


def test_the_server_image_is_imported_before_the_deploy_and_is_what_the_pods_run(host):
    assert host.bootstrap()[0] == 0
    state, calls = host.state(), host.calls()
    assert SERVER in state["images"]
    assert calls.index(f"microk8s ctr image import {host.server_archive}") < next(
        i for i, c in enumerate(calls) if c.startswith("juju deploy")
    )
    # every image any deployed pod runs is one this run imported or a public one the host pulls
    local = {i for images in state["apps"].values() for i in images if i.startswith("localhost")}
    assert local == {SERVER} and set(state["images"]) == {SERVER}


def test_a_second_run_changes_nothing_and_says_so(host):
    assert host.bootstrap()[0] == 0
    before, builds = len(host.mutating()), host.state()["builds"]
    code, said = host.bootstrap()
    assert code == 0
    assert len(host.mutating()) == before
    assert host.state()["builds"] == builds == 1  # nothing rebuilt, nothing re-imported
    assert all(line.startswith("ok ") for line in said[:-2])
    assert "nothing to change: the site was already up" in said


def test_a_lost_import_is_reimported_without_rebuilding(host):
    assert host.bootstrap()[0] == 0
    host.set(images=[])  # e.g. `microk8s reset`
    assert host.bootstrap()[0] == 0
    assert host.state()["builds"] == 1
    assert host.mutating().count(f"microk8s ctr image import {host.server_archive}") == 2


def test_a_prebuilt_archive_is_imported_instead_of_building(host, tmp_path):
    archive = tmp_path / "prebuilt.tar"
    host.set(built=[SERVER])
    subprocess.run(["buildah", "push", SERVER, f"docker-archive:{archive}:{SERVER}"], check=True)
    host.set(built=[])
    code, said = host.bootstrap(server_archive=archive)
    assert code == 0, "\n".join(said)
    assert f"microk8s ctr image import {archive}" in host.mutating()
    assert not any(c.startswith(("buildah bud", "apt-get")) for c in host.calls())


def test_an_archive_without_the_reference_stops_before_the_deploy(host, tmp_path):
    archive = tmp_path / "other.tar"
    host.set(built=["localhost/defect-server:0.0.1"])
    subprocess.run(["buildah", "push", "localhost/defect-server:0.0.1", f"docker-archive:{archive}:x/y:1"], check=True)
    code, said = host.bootstrap(server_archive=archive)
    assert code == 1
    failure = next(line for line in said if line.startswith("FAILED"))
    assert failure.startswith(f"FAILED   server image {SERVER}") and f"must hold {SERVER}" in failure
    assert not any(c.startswith("juju deploy") for c in host.calls())


def test_overlays_are_passed_to_the_deploy(host):
    code, _ = host.bootstrap(overlays=[ROOT / "overlays/second-model.yaml"])
    assert code == 0
    deploy = next(c for c in host.calls() if c.startswith("juju deploy"))
    assert deploy.endswith(f"--overlay {host.stage / 'overlays/1-second-model.yaml'}")
    assert "scratch-fp32" in host.state()["apps"]


def test_another_ubuntu_packs_in_lxd_it_sets_up_itself(host):
    host.release('ID=ubuntu\nVERSION_ID="22.04"\n')
    code, said = host.bootstrap()
    assert code == 0, "\n".join(said)
    mutating = host.mutating()
    assert mutating.index("snap install lxd") < mutating.index("lxd init --auto") < mutating.index("charmcraft pack")
    assert "charmcraft pack --destructive-mode" not in mutating


def test_juju_reads_only_copies_its_user_owns_under_their_home(host):
    """The checkout (here the repository, outside the user's home) and the charm root packed are
    out of the strictly confined juju snap's reach; the staged copies are not."""
    assert host.bootstrap()[0] == 0
    deploy = next(c for c in host.calls() if c.startswith("juju deploy")).split()
    read = [Path(deploy[4]), *(Path(deploy[i + 1]) for i, a in enumerate(deploy) if a == "--overlay")]
    assert all(host.stage in p.parents for p in read)
    staged_charm = Path(yaml.safe_load(read[0].read_text())["applications"]["scratch"]["charm"])
    assert staged_charm.read_bytes() == host.charm.read_bytes() and host.stage in staged_charm.parents
    owners = fake(host, "stat", "-c", "%U", *map(str, [*read, staged_charm])).stdout.split()
    assert owners == [USER] * (len(read) + 1)
    # what a bootstrap without the stage would have handed it
    unstaged = fake(host, "juju", "deploy", "-m", "edge-microk8s:kubeflow", str(ROOT / "bundle.yaml"), user=USER)
    assert unstaged.returncode == 1 and "permission denied" in unstaged.stderr


def test_a_changed_or_foreign_stage_is_staged_again(host):
    assert host.bootstrap()[0] == 0
    (host.stage / "bundle.yaml").write_text("applications: {}\n")  # edited by hand
    code, said = host.bootstrap()
    assert (
        code == 0
        and f"done     bundle, overlays and charms staged in ~{USER}/edge-site-deploy, owned by {USER}" in said
    )
    host.set(owners={})  # e.g. copied back as root
    assert host.bootstrap()[0] == 0
    assert host.mutating().count(f"chown -R {USER}: {host.stage}") == 3


def test_a_home_outside_home_dirs_stops_at_the_first_juju_step(host, tmp_path):
    host.set(homes={USER: str(tmp_path / "opt" / USER)})  # e.g. useradd -d /opt/edge
    (tmp_path / "opt" / USER).mkdir(parents=True)
    code, said = host.bootstrap()
    assert code == 1
    failure = "\n".join(said[next(i for i, line in enumerate(said) if line.startswith("FAILED")) :])
    assert "home directories outside of /home needs configuration" in failure
    assert not any(c.startswith("juju bootstrap") for c in host.calls())


def test_rbac_is_enforced_before_juju_bootstraps(host):
    assert host.bootstrap()[0] == 0
    calls = host.calls()
    assert calls.index("microk8s enable rbac") < next(i for i, c in enumerate(calls) if c.startswith("juju bootstrap"))
    probe = fake(host, "microk8s", "kubectl", *bootstrap.RBAC_PROBE)
    assert (probe.returncode, probe.stdout.strip()) == (1, "no")


def test_the_controller_database_is_capped(host):
    assert host.bootstrap()[0] == 0
    assert host.state()["clients"][USER]["controllers"]["edge-microk8s"]["mongo-memory-profile"] == "low"


@pytest.mark.parametrize(
    "installed, refused, fix",
    [
        (
            {"microk8s": {"channel": "1.30/stable", "classic": True}},
            "microk8s v1.30.15 (classic, tracking 1.30/stable) is installed; the site needs microk8s 1.28.x",
            "sudo snap remove --purge microk8s && sudo snap install microk8s --classic --channel=1.28/stable",
        ),
        (
            {"microk8s": {"channel": "1.28-strict/stable", "classic": False}},
            "the site needs the classic microk8s",
            "sudo snap remove --purge microk8s && sudo snap install microk8s --classic --channel=1.28/stable",
        ),
        (
            {"juju": {"channel": "2.9/stable", "classic": True}},
            "juju 2.9.0 (classic, tracking 2.9/stable) is installed; the site needs juju 3.6.x",
            "sudo snap refresh juju --channel=3.6/stable (or rerun bootstrap with --refresh-snaps)",
        ),
        (
            {"charmcraft": {"channel": "2.x/stable", "classic": True}},
            "charmcraft 2.7.1 (classic, tracking 2.x/stable) is installed; the site needs charmcraft 3.x",
            "sudo snap refresh charmcraft --channel=3.x/stable (or rerun bootstrap with --refresh-snaps)",
        ),
    ],
    ids=["microk8s 1.30", "strict microk8s", "juju 2.9", "charmcraft 2"],
)
def test_an_installed_snap_of_the_wrong_release_stops_the_run_with_its_fix(host, installed, refused, fix):
    host.set(snaps=installed, unix_groups=["microk8s", "snap_microk8s"])
    code, said = host.bootstrap()
    assert code == 1
    failure = next(line for line in said if line.startswith("FAILED"))
    assert refused in failure and f"Fix: {fix}" in failure
    assert not any(c.startswith(("snap refresh", "snap remove", "juju deploy")) for c in host.calls())


def test_refresh_snaps_refreshes_the_juju_client_and_charmcraft_but_never_microk8s(host):
    host.set(snaps={"juju": {"channel": "2.9/stable", "classic": True}, "charmcraft": {"channel": "2.x/stable"}})
    code, said = host.bootstrap(refresh_snaps=True)
    assert code == 0, "\n".join(said)
    assert {"snap refresh juju --channel=3.6/stable", "snap refresh charmcraft --channel=3.x/stable"} <= set(
        host.mutating()
    )
    host.set(snaps={**host.state()["snaps"], "microk8s": {"channel": "1.30/stable", "classic": True}})
    code, said = host.bootstrap(refresh_snaps=True)
    assert code == 1 and "sudo snap remove --purge microk8s" in next(x for x in said if x.startswith("FAILED"))


# --- the fakes refuse what the real tools refuse ------------------------------------------


def test_fake_juju_cannot_bootstrap_the_builtin_cloud_on_classic_microk8s(host):
    host.set(snaps={"microk8s": {"channel": "1.28/stable", "classic": True}, "juju": {"channel": "3.6/stable"}})
    (host.home / ".local/share").mkdir(parents=True)
    out = fake(host, "juju", "bootstrap", "microk8s", "c", user=USER)
    assert out.returncode == 1 and "can only work with strictly confined microk8s" in out.stderr


def test_fake_juju_reads_only_what_the_home_interface_allows(host, tmp_path):
    """snapd interfaces/builtin/home.go: owned by the user, under their home, not in ~/.x or ~/snap."""
    host.set(snaps={"juju": {"channel": "3.6/stable"}})
    host.set(clients={USER: {"clouds": [], "controllers": {"c": {"repo": "r"}}, "models": ["c:m"]}})
    (host.home / ".local/share").mkdir(parents=True)
    places = {
        "outside the home": tmp_path / "opt/edge-site/bundle.yaml",
        "a hidden folder": host.home / ".cache/edge-site/bundle.yaml",
        "~/snap": host.home / "snap/edge-site/bundle.yaml",
        "root's file in the home": host.home / "root-owned/bundle.yaml",
        "the user's file": host.home / "edge-site/bundle.yaml",
    }
    for path in places.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("applications: {}\n")
        if path.parent.name != "root-owned":
            host.set(owners={**host.state()["owners"], str(path.parent): USER})
    results = {what: fake(host, "juju", "deploy", "-m", "c:m", str(p), user=USER) for what, p in places.items()}
    assert {what: r.returncode for what, r in results.items()} == {**dict.fromkeys(places, 1), "the user's file": 0}
    assert all("permission denied" in r.stderr for what, r in results.items() if what != "the user's file")
    # a local charm the bundle names is read the same way, relative to the bundle's folder
    places["the user's file"].write_text("applications: {a: {charm: ../root-owned/x.charm}}\n")
    (host.home / "root-owned/x.charm").write_bytes(b"charm")
    assert (
        "belongs to root" in fake(host, "juju", "deploy", "-m", "c:m", str(places["the user's file"]), user=USER).stderr
    )


def test_fake_snap_list_reports_version_tracking_and_confinement(host):
    host.set(snaps={"microk8s": {"channel": "1.28/stable", "classic": True}, "juju": {"channel": "3.6/stable"}})
    header, row = fake(host, "snap", "list", "microk8s").stdout.splitlines()
    assert header.split() == ["Name", "Version", "Rev", "Tracking", "Publisher", "Notes"]
    assert row.split()[1:4:2] == ["v1.28.15", "1.28/stable"] and row.split()[-1] == "classic"
    assert fake(host, "snap", "list", "juju").stdout.splitlines()[1].split()[-1] == "-"


def test_fake_microk8s_lets_everyone_in_until_rbac_is_enabled(host):
    host.set(snaps={"microk8s": {"channel": "1.28/stable", "classic": True}})
    assert fake(host, "microk8s", "kubectl", *bootstrap.RBAC_PROBE).stdout.strip() == "yes"
    fake(host, "microk8s", "enable", "rbac")
    assert fake(host, "microk8s", "kubectl", *bootstrap.RBAC_PROBE).stdout.strip() == "no"


def test_fake_juju_needs_local_share_first(host):
    host.set(snaps={"juju": {"channel": "3.6/stable"}})
    out = fake(host, "juju", "show-controller", "x", user=USER)
    assert out.returncode == 1 and ".local/share: permission denied" in out.stderr


def test_fake_juju_add_k8s_needs_a_kubeconfig_client_and_storage(host):
    host.set(snaps={"juju": {"channel": "3.6/stable"}, "microk8s": {"channel": "1.28/stable", "classic": True}})
    (host.home / ".local/share").mkdir(parents=True)
    kubeconfig = "clusters: [{name: microk8s-cluster}]\n"
    assert "No k8s cluster definitions" in fake(host, "juju", "add-k8s", "k", "--client", user=USER).stderr
    assert "use --client" in fake(host, "juju", "add-k8s", "k", user=USER, stdin=kubeconfig).stderr
    assert (
        "No recommended storage" in fake(host, "juju", "add-k8s", "k", "--client", user=USER, stdin=kubeconfig).stderr
    )


def test_fake_snap_wants_classic_for_classic_microk8s(host):
    out = fake(host, "snap", "install", "microk8s", "--channel=1.28/stable")
    assert out.returncode == 1 and "repeat the command including --classic" in out.stderr
    assert fake(host, "snap", "install", "microk8s", "--channel=1.28-strict/stable").returncode == 0
    assert "snap_microk8s" in host.state()["unix_groups"]


def test_fake_charmcraft_refuses_a_pack_without_lxd_and_a_foreign_base(host):
    cwd = os.getcwd()
    os.chdir(ROOT / "charms/onnx-model")
    try:
        assert "LXD is required, but not installed" in fake(host, "charmcraft", "pack").stderr
        host.release('ID=ubuntu\nVERSION_ID="22.04"\n')
        out = fake(host, "charmcraft", "pack", "--destructive-mode")
        assert "Ubuntu 24.04 builds cannot be performed on this Ubuntu 22.04 system" in out.stderr
    finally:
        os.chdir(cwd)
    assert not list((ROOT / "charms/onnx-model").glob("onnx-model_*.charm"))


def test_fake_ctr_refuses_a_missing_or_foreign_archive(host, tmp_path):
    host.set(snaps={"microk8s": {"channel": "1.28/stable", "classic": True}})
    out = fake(host, "microk8s", "ctr", "image", "import", str(tmp_path / "missing.tar"))
    assert out.returncode == 1 and "no such file or directory" in out.stderr
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    assert (
        "unrecognized image format"
        in fake(host, "microk8s", "ctr", "image", "import", str(tmp_path / "junk.tar")).stderr
    )


def test_fake_juju_never_settles_when_a_pod_image_was_not_imported(host):
    assert host.bootstrap()[0] == 0
    host.set(images=[], settled=False)  # the server image gone, no registry has localhost/...
    out = fake(host, *WAIT.split()[:5], user=USER)
    assert out.returncode == 1 and f"scratch: ImagePullBackOff: {SERVER}" in out.stderr


@pytest.mark.parametrize(
    "fail, step, hint",
    [
        ("juju bootstrap", "controller edge-microk8s (as edge)", "juju kill-controller"),
        (
            "charmcraft pack",
            "onnx-model charm packed on this ubuntu@24.04 host (--destructive-mode)",
            "onnx-model.charm",
        ),
        ("juju deploy", "bundle deployed", "juju debug-log"),
        ("microk8s enable hostpath-storage", "addons dns hostpath-storage", "microk8s inspect"),
        ("buildah bud", f"server image {SERVER} in MicroK8s (built)", "microk8s ctr images ls"),
    ],
)
def test_a_failing_step_stops_with_what_to_do(host, fail, step, hint):
    host.set(fail=fail, fail_message="something broke")
    code, said = host.bootstrap()
    assert code == 1
    failure = next(line for line in said if line.startswith("FAILED"))
    assert failure.startswith(f"FAILED   {step}: ") and f"`{fail}" in failure
    assert "something broke" in "\n".join(said) and hint in failure
    assert not any(c.startswith("juju wait-for") for c in host.calls())


def test_a_stale_charm_is_packed_again(host):
    assert host.bootstrap()[0] == 0
    os.utime(host.charm, (1, 1))  # older than the charm's sources
    host.bootstrap()
    assert host.mutating().count("charmcraft pack --destructive-mode") == 2


def test_preflight_refuses_arm64_and_non_root():
    assert "amd64 only" in bootstrap.preflight(0, "aarch64")
    assert "sudo" in bootstrap.preflight(1000, "x86_64")
    assert bootstrap.preflight(0, "x86_64") is None


def test_the_command_refuses_a_missing_archive_naming_the_flag(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bootstrap-edge-site"), "--server-image-archive", str(tmp_path / "x.tar")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and f"--server-image-archive {tmp_path / 'x.tar'}: no such file" in out.stderr


# --- air-gapped ---------------------------------------------------------------------------


@pytest.fixture
def exported(host, tmp_path):
    """A folder made by `airgap-images export` on a connected machine, then a fresh offline edge host."""
    charm = tmp_path / "packed" / "onnx-model.charm"
    charm.parent.mkdir()
    charm.write_bytes(b"packed onnx-model")
    host.set(snaps={"juju": {"channel": "3.6/stable"}})
    airgap.export(tmp_path / "airgap", [ROOT / "overlays/second-model.yaml"], say=lambda _: None, charm=charm)
    (tmp_path / "calls.log").write_text("")
    host.set(**{**FRESH, "online": False})  # the edge machine: nothing installed, nothing reachable but the folder
    return tmp_path / "airgap"


def test_an_airgapped_host_installs_everything_from_the_export(host, registry, exported):
    code, said = host.bootstrap(airgap=exported, overlays=[ROOT / "overlays/second-model.yaml"])
    assert code == 0, "\n".join(said)
    mutating, calls = host.mutating(), host.calls()
    # snaps from the downloaded files, after acknowledging their assertions; never the store
    assert f"snap install {exported / 'snaps/microk8s_42.snap'} --classic" in mutating
    assert f"snap ack {exported / 'snaps/juju_42.assert'}" in calls
    # MicroK8s' own images side-loaded before any add-on starts; no docker anywhere
    first_enable = calls.index("microk8s enable dns")
    for image in airgap.MICROK8S_IMAGES:
        entry = exported / airgap.archive_name(image)
        assert calls.index(f"microk8s ctr image import {entry}") < first_enable
    assert not any(c.startswith("docker") for c in calls)
    # the registry's share pushed from containerd before Juju needs its own images from it
    bootstrap_call = (
        "juju bootstrap edge-microk8s edge-microk8s --config mongo-memory-profile=low"
        " --config caas-image-repo=localhost:32000/jujusolutions"
    )
    pushes = [i for i, c in enumerate(calls) if c.startswith("microk8s ctr image push --plain-http")]
    assert pushes and calls.index(bootstrap_call) > max(pushes)
    # the server image from the export, never built offline; our charm from the folder
    assert not any(c.startswith(("buildah", "charmcraft", "apt-get")) for c in calls)
    assert SERVER in host.state()["images"]
    assert host.charm.read_bytes() == b"packed onnx-model"
    deploy = next(c for c in mutating if c.startswith("juju deploy"))
    assert deploy.endswith(
        f"--overlay {host.stage / 'overlays/2-airgapped.yaml'} --overlay {host.stage / 'overlays/3-charms.yaml'}"
    )
    # the downloaded charms were staged beside ours, and the staged overlay deploys them from there
    staged = yaml.safe_load((host.stage / "overlays/3-charms.yaml").read_text())["applications"]
    assert {Path(spec["charm"]).parent for spec in staged.values()} == {host.stage / "charms"}
    assert host.state()["settled"]  # every pod of every application found its image offline


def test_an_airgapped_second_run_changes_nothing(host, registry, exported):
    overlays = [ROOT / "overlays/second-model.yaml"]
    assert host.bootstrap(airgap=exported, overlays=overlays)[0] == 0
    before = len(host.mutating())
    code, said = host.bootstrap(airgap=exported, overlays=overlays)
    assert code == 0
    assert len(host.mutating()) == before
    assert "nothing to change: the site was already up" in said


def test_an_airgapped_export_missing_an_image_stops_at_the_side_load(host, registry, exported):
    (exported / airgap.archive_name("docker.io/calico/node:v3.25.1")).unlink()
    code, said = host.bootstrap(airgap=exported)
    assert code == 1
    failure = next(line for line in said if line.startswith("FAILED"))
    assert "no such file or directory" in failure and "airgap-images export" in failure
