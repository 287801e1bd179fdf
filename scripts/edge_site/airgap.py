"""Carry everything the site installs to a machine without internet; load it there without docker.

    export DIR   on a connected machine (snap, juju, skopeo, and buildah for the server image):
                 the MicroK8s and Juju snaps, the bundle's Charmhub charms, our packed charm, and
                 every image the site runs, one docker-archive per image under DIR/images/
    import DIR   on the edge machine: side-load the images into MicroK8s' containerd
                 (`microk8s ctr image import`), push the registry's share into localhost:32000
                 (`microk8s ctr image push`): no docker, no skopeo on the edge machine

Images go two ways (DIR/images.json says which):
- containerd, under their own names: MicroK8s' own images (calico, pause, CoreDNS,
  hostpath-provisioner and its busybox, the registry add-on's registry), which must be there
  before the add-ons start, and our server image (built, never pulled: server_image).
- the registry add-on, as localhost:32000/...: the images Juju and the Charmhub charms run,
  which overlays/airgapped.yaml, DIR/charms.yaml and `caas-image-repo` point at.

``bootstrap-edge-site --airgapped DIR`` uses all of it.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import yaml

from . import server_image
from .overlays import first_problem
from .shell import JUJU_CHANNEL, MICROK8S_CHANNEL, REGISTRY, ROOT, StepFailed, run

CHARM_NAME = "onnx-model.charm"  # our packed charm, as build/ and DIR hold it
SNAPS = {"microk8s": MICROK8S_CHANNEL, "juju": JUJU_CHANNEL}

# MicroK8s 1.28's own images, all of them needed before anything else runs offline
# (canonical/microk8s, branch 1.28: build-scripts/images.txt lists the snap's and core add-ons'):
MICROK8S_IMAGES = (
    # upgrade-scripts/000-switch-to-calico/resources/calico.yaml: the CNI applied at install
    "docker.io/calico/cni:v3.25.1",
    "docker.io/calico/node:v3.25.1",
    "docker.io/calico/kube-controllers:v3.25.1",
    # microk8s-resources/default-args/containerd-template.toml: sandbox_image
    "registry.k8s.io/pause:3.7",
    # canonical/microk8s-core-addons, branch 1.28: addons/dns/coredns.yaml
    "docker.io/coredns/coredns:1.10.1",
    # addons/hostpath-storage/storage.yaml: the provisioner and its BUSYBOX_IMAGE
    "docker.io/cdkbot/hostpath-provisioner:1.4.2",
    "docker.io/library/busybox:1.28.4",
    # addons/registry/registry.yaml: localhost:32000 itself
    "docker.io/library/registry:2.8.1",
)

ISTIO_TAG = "1.17.3"  # what istio-pilot 1.17/stable installs (its image-configuration default)
SELDON_TAG = "1.17.1"  # seldon-core 1.17/stable's executor-container-image-and-version default

# Every image option of the bundle, as upstream publishes it; overlays/airgapped.yaml names each
# one by local_name(). The charms' own OCI resources are read from the downloaded charms.
UPSTREAM_IMAGES = (
    f"docker.io/istio/pilot:{ISTIO_TAG}",
    f"docker.io/istio/proxyv2:{ISTIO_TAG}",
    "docker.io/library/busybox:1.28",  # istio-pilot's grpc-bootstrap-init
    f"docker.io/seldonio/seldon-core-executor:{SELDON_TAG}",
)
JUJU_DB = "docker.io/jujusolutions/juju-db:4.4"
# The controller's own charm runs on the default LTS base (juju/juju 3.6, CAASDeployer.ControllerCharmBase
# returns version.DefaultSupportedLTSBase(): ubuntu@24.04 in 3.6).
JUJU_CONTROLLER_BASE = "ubuntu-24.04"


def local_name(upstream: str) -> str:
    """docker.io/seldonio/x:1 -> localhost:32000/seldonio/x:1 (the registry host is dropped)."""
    first, _, rest = upstream.partition("/")
    path = rest if rest and ("." in first or ":" in first) else upstream
    return f"{REGISTRY}/{path.removeprefix('library/')}"


def bundle_charms(overlays: list[Path]) -> dict[str, tuple[str, str]]:
    """{application: (charm, channel)} of the Charmhub charms in the bundle and overlays."""
    from local_site.bundle import is_ours, merge  # the same merge the site and the tests use

    merged = yaml.safe_load((ROOT / "bundle.yaml").read_text())
    for overlay in overlays:
        merged = merge(merged, yaml.safe_load(overlay.read_text()))
    return {
        app: (spec["charm"], spec["channel"])
        for app, spec in merged["applications"].items()
        if not is_ours(spec) and "channel" in spec and "charm" in spec
    }


def _charm_meta(charm_file: Path, *names: str) -> dict:
    with zipfile.ZipFile(charm_file) as z:
        present = set(z.namelist())
        return {n: yaml.safe_load(z.read(n)) or {} for n in names if n in present}


def charm_resources(charm_file: Path) -> dict[str, str]:
    """{resource: upstream image} of a .charm's OCI resources (metadata.yaml inside the zip)."""
    meta = _charm_meta(charm_file, "metadata.yaml", "charmcraft.yaml")
    spec = meta.get("metadata.yaml") or meta.get("charmcraft.yaml") or {}
    return {
        name: res["upstream-source"]
        for name, res in (spec.get("resources") or {}).items()
        if res.get("type") == "oci-image" and res.get("upstream-source")
    }


def charm_bases(charm_file: Path) -> set[str]:
    """The bases a packed charm runs on, as Juju names its charm-base image ("ubuntu-20.04").

    charmcraft writes them to manifest.yaml in the .charm (`bases: [{name, channel}]`); Juju runs
    the charm container from <caas-image-repo>/charm-base:<name>-<channel>
    (juju/juju 3.6, cloudconfig/podcfg/image.go, ImageForBase).
    """
    manifest = _charm_meta(charm_file, "manifest.yaml").get("manifest.yaml", {})
    return {f"{b['name']}-{b['channel']}" for b in manifest.get("bases") or []}


def juju_images(bases: set[str]) -> dict[str, str]:
    """{upstream: local} of the images Juju itself runs, for the client's version and these bases."""
    version = run("juju", "version").stdout.strip().split("-")[0]
    upstream = [f"docker.io/jujusolutions/jujud-operator:{version}", JUJU_DB]
    upstream += [f"docker.io/jujusolutions/charm-base:{base}" for base in sorted(bases | {JUJU_CONTROLLER_BASE})]
    return {u: local_name(u) for u in upstream}


def our_charm_base() -> str:
    """ubuntu@24.04 in charmcraft.yaml -> ubuntu-24.04."""
    base = yaml.safe_load((ROOT / "charms" / "onnx-model" / "charmcraft.yaml").read_text())["base"]
    return base.replace("@", "-")


def local_snap(folder: Path, name: str) -> tuple[Path, Path] | None:
    """(snap, assertion) that export downloaded for ``name``, if any."""
    snaps = sorted((folder / "snaps").glob(f"{name}_*.snap"))
    if not snaps:
        return None
    return snaps[-1], snaps[-1].with_suffix(".assert")


def archive_name(image: str) -> str:
    return "images/" + re.sub(r"[^A-Za-z0-9_.-]+", "_", image) + ".tar"


def export(
    out: Path, overlays: list[Path], say=print, charm: Path = ROOT / "build" / CHARM_NAME, builder: str | None = None
) -> int:
    """Snaps, charms and images into ``out``; write charms.yaml, images.json and images.txt."""
    if not charm.is_file():
        raise StepFailed(f"{charm} is missing: pack the charm first (sudo scripts/bootstrap-edge-site packs it)")
    if shutil.which("skopeo") is None:
        raise StepFailed("export copies images with skopeo: apt-get install skopeo")
    charms_dir = out / "charms"
    charms_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(charm, out / CHARM_NAME)
    snaps_dir = out / "snaps"
    snaps_dir.mkdir(exist_ok=True)
    for name, channel in SNAPS.items():
        if local_snap(out, name) is None:
            say(f"snap     {name} ({channel})")
            run("snap", "download", name, f"--channel={channel}", f"--target-directory={snaps_dir}")
    registry = {u: local_name(u) for u in UPSTREAM_IMAGES}
    bases = {our_charm_base()}
    local_charms: dict[str, dict] = {}
    for app, (store_name, channel) in sorted(bundle_charms(overlays).items()):
        target = charms_dir / f"{store_name}.charm"
        if not target.exists():
            say(f"charm    {store_name} ({channel})")
            run("juju", "download", store_name, "--channel", channel, "--filepath", str(target))
        upstream = charm_resources(target)
        bases |= charm_bases(target)
        registry |= {src: local_name(src) for src in upstream.values()}
        resources = {name: local_name(src) for name, src in upstream.items()}
        # Relative to this folder; localize_charm_paths() makes them absolute where it is unpacked.
        local_charms[app] = {"charm": f"./charms/{target.name}", **({"resources": resources} if resources else {})}
    registry |= juju_images(bases)
    manifest: dict[str, list[dict[str, str]]] = {"containerd": [], "registry": []}
    for image in MICROK8S_IMAGES:
        manifest["containerd"].append(_copy(out, image, image, say))
    for upstream, local in sorted(registry.items()):
        manifest["registry"].append(_copy(out, upstream, local, say))
    reference = server_image.build(builder=builder, say=say)  # built here, never pulled
    server_image.save(reference, out / archive_name(reference))
    manifest["containerd"].append({"image": reference, "archive": archive_name(reference)})
    (out / "images.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    listed = sorted(e["image"] for entries in manifest.values() for e in entries)
    (out / "images.txt").write_text("".join(f"{image}\n" for image in listed))
    write_charms_overlay(out, local_charms)
    say(f"wrote {out}/images/ ({len(listed)} images), {len(local_charms)} charms, {out}/charms.yaml")
    return 0


def _copy(out: Path, upstream: str, name: str, say) -> dict[str, str]:
    """One docker-archive per image, tagged with the name it will have on the edge machine."""
    archive = archive_name(name)
    if not (out / archive).is_file():
        say(f"image    {upstream}")
        (out / "images").mkdir(exist_ok=True)
        partial = out / (archive + ".partial")
        partial.unlink(missing_ok=True)
        run("skopeo", "copy", f"docker://{upstream}", f"docker-archive:{partial}:{name}")
        partial.rename(out / archive)
    return {"image": name, "archive": archive}


def write_charms_overlay(folder: Path, applications: dict[str, dict]) -> None:
    header = "# Written by scripts/airgap-images: the charms downloaded beside it.\n"
    (folder / "charms.yaml").write_text(header + yaml.safe_dump({"applications": applications}, sort_keys=True))


def localize_charm_paths(folder: Path) -> None:
    """Point DIR/charms.yaml at the charm files where DIR is now (Juju wants a path it can open)."""
    applications = yaml.safe_load((folder / "charms.yaml").read_text())["applications"]
    for spec in applications.values():
        spec["charm"] = str((folder / "charms" / Path(spec["charm"]).name).resolve())
    write_charms_overlay(folder, applications)


def manifest(folder: Path) -> dict[str, list[dict[str, str]]]:
    listed = folder / "images.json"
    if not listed.is_file():
        raise StepFailed(f"{listed} is missing: run `scripts/airgap-images export {folder}` on a connected machine")
    return json.loads(listed.read_text())


REGISTRY_API = f"http://{REGISTRY}/v2/"


def in_registry(image: str) -> bool:
    """Whether localhost:32000 already holds ``image`` (its manifest answers)."""
    repo, _, tag = image.removeprefix(f"{REGISTRY}/").rpartition(":")
    request = urllib.request.Request(
        f"{REGISTRY_API}{repo}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def registry_up() -> bool:
    try:
        with urllib.request.urlopen(REGISTRY_API, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def containerd_images() -> set[str]:
    """References in MicroK8s' containerd (namespace k8s.io, the kubelet's: microk8s-resources/default-args/ctr)."""
    out = run("microk8s", "ctr", "images", "ls", "-q", check=False)
    return set(out.stdout.split()) if out.returncode == 0 else set()


def not_side_loaded(folder: Path) -> list[str]:
    """Images of the folder (both kinds: registry ones are pushed from containerd) not in containerd yet."""
    held = containerd_images()
    return [e["image"] for entries in manifest(folder).values() for e in entries if e["image"] not in held]


def side_load(folder: Path, say=print) -> None:
    """`microk8s ctr image import` every archive whose image containerd does not hold yet."""
    held = containerd_images()
    for entries in manifest(folder).values():
        for entry in entries:
            if entry["image"] not in held:
                say(f"import   {entry['image']}")
                run("microk8s", "ctr", "image", "import", str(folder / entry["archive"]))


def not_pushed(folder: Path) -> list[str]:
    return [e["image"] for e in manifest(folder)["registry"] if not in_registry(e["image"])]


def push(folder: Path, say=print) -> None:
    """Push the registry's share from containerd into localhost:32000 (plain HTTP, as MicroK8s serves it)."""
    if not registry_up():
        raise StepFailed(
            f"no registry at {REGISTRY}: run `microk8s enable registry` (or bootstrap-edge-site --airgapped)"
        )
    for image in not_pushed(folder):
        say(f"push     {image}")
        run("microk8s", "ctr", "image", "push", "--plain-http", image)


def import_(src: Path, say=print) -> int:
    """Side-load every image, push the registry's share; make DIR/charms.yaml point here."""
    for needed in ("images.json", "charms.yaml"):
        if not (src / needed).is_file():
            raise StepFailed(f"{src / needed} is missing: run `scripts/airgap-images export {src}` first")
    localize_charm_paths(src)
    side_load(src, say)
    push(src, say)
    count = sum(len(v) for v in manifest(src).values())
    say(
        f"{count} images loaded; deploy with --overlay overlays/airgapped.yaml --overlay {src}/charms.yaml "
        "from a copy under your home that you own (the juju snap reads nothing else), "
        f"or let `sudo scripts/bootstrap-edge-site --airgapped {src}` stage and deploy it"
    )
    return 0


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="airgap-images", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="on a connected machine: download snaps, charms and images into DIR")
    ex.add_argument("dir", type=Path)
    ex.add_argument("--overlay", type=Path, action="append", default=[], help="overlays that add Charmhub charms")
    ex.add_argument(
        "--builder",
        choices=server_image.BUILDERS,
        help="what builds the server image: buildah, podman or docker (default: the first found)",
    )
    im = sub.add_parser("import", help="on the edge machine (MicroK8s installed): load DIR's images")
    im.add_argument("dir", type=Path)
    args = p.parse_args(argv)
    problem = first_problem(args.overlay) if args.command == "export" else None
    if args.dir.exists() and not args.dir.is_dir():
        problem = f"{args.dir}: is a file; DIR is the folder the export goes into (or comes from)"
    if problem:
        print(f"airgap-images {args.command}: {problem}", file=sys.stderr)
        return 2

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        if args.command == "export":
            return export(args.dir, args.overlay, say, builder=args.builder)
        return import_(args.dir, say)
    except StepFailed as exc:
        print(f"airgap-images {args.command}: {exc}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:  # a full disk, a read-only folder: the world refused, named
        print(f"airgap-images {args.command}: {exc.filename or args.dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
