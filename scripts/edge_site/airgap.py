"""Carry everything the site installs to a machine without internet.

    export DIR   on a connected machine (snap, juju, docker, the packed charm): the MicroK8s
                 and Juju snaps, the bundle's Charmhub charms, our packed charm, and every
                 image the site runs, retagged for localhost:32000, into DIR
    import DIR   on the edge machine (MicroK8s registry add-on, docker): push the images

``bootstrap-edge-site --airgapped DIR`` uses all of it. overlays/airgapped.yaml points every
image option at localhost:32000; DIR/charms.yaml (written by export) deploys the downloaded
charms with their OCI resources from there. UPSTREAM_IMAGES below is the one list both
follow: a unit test fails if the overlay names an image that is not mirrored.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import yaml

from .shell import JUJU_CHANNEL, MICROK8S_CHANNEL, REGISTRY, ROOT, StepFailed, run

CHARM_NAME = "onnx-model.charm"  # our packed charm, as build/ and DIR hold it
SNAPS = {"microk8s": MICROK8S_CHANNEL, "juju": JUJU_CHANNEL}

ISTIO_TAG = "1.17.3"  # what istio-pilot 1.17/stable installs (its image-configuration default)
SELDON_TAG = "1.17.1"  # seldon-core 1.17/stable's executor-container-image-and-version default

# Every image option of the bundle, as upstream publishes it; overlays/airgapped.yaml names each
# one by local_name(). The charms' own OCI resources are read from the downloaded charms.
UPSTREAM_IMAGES = (
    f"docker.io/istio/pilot:{ISTIO_TAG}",
    f"docker.io/istio/proxyv2:{ISTIO_TAG}",
    "docker.io/library/busybox:1.28",  # istio-pilot's grpc-bootstrap-init
    f"docker.io/seldonio/seldon-core-executor:{SELDON_TAG}",
    "ghcr.io/edge-mlops/defect-server:0.1.0",
)
JUJU_BASES = ("ubuntu-22.04", "ubuntu-24.04")  # charm containers' base images


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
        if not is_ours(spec) and "channel" in spec
    }


def charm_resources(charm_file: Path) -> dict[str, str]:
    """{resource: upstream image} of a .charm's OCI resources (metadata.yaml inside the zip)."""
    with zipfile.ZipFile(charm_file) as z:
        names = set(z.namelist())
        meta_name = "metadata.yaml" if "metadata.yaml" in names else "charmcraft.yaml"
        meta = yaml.safe_load(z.read(meta_name)) or {}
    return {
        name: spec["upstream-source"]
        for name, spec in (meta.get("resources") or {}).items()
        if spec.get("type") == "oci-image" and spec.get("upstream-source")
    }


def option_images() -> dict[str, str]:
    """{upstream: local} for the images the overlay's options name."""
    return {upstream: local_name(upstream) for upstream in UPSTREAM_IMAGES}


def juju_images() -> dict[str, str]:
    """The images Juju itself runs on the cluster, for the client's version."""
    version = run("juju", "version").stdout.strip().split("-")[0]
    upstream = [f"docker.io/jujusolutions/jujud-operator:{version}", "docker.io/jujusolutions/juju-db:4.4"]
    upstream += [f"docker.io/jujusolutions/charm-base:{base}" for base in JUJU_BASES]
    return {u: local_name(u) for u in upstream}


def local_snap(folder: Path, name: str) -> tuple[Path, Path] | None:
    """(snap, assertion) that export downloaded for ``name``, if any."""
    snaps = sorted((folder / "snaps").glob(f"{name}_*.snap"))
    if not snaps:
        return None
    return snaps[-1], snaps[-1].with_suffix(".assert")


def export(out: Path, overlays: list[Path], say=print, charm: Path = ROOT / "build" / CHARM_NAME) -> int:
    """Snaps, charms and images into ``out``; write charms.yaml and images.txt."""
    if not charm.is_file():
        raise StepFailed(
            f"{charm} is missing: pack the charm first "
            "((cd charms/onnx-model && charmcraft pack) and move it to build/onnx-model.charm)"
        )
    charms_dir = out / "charms"
    charms_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(charm, out / CHARM_NAME)
    snaps_dir = out / "snaps"
    snaps_dir.mkdir(exist_ok=True)
    for name, channel in SNAPS.items():
        if local_snap(out, name) is None:
            say(f"snap     {name} ({channel})")
            run("snap", "download", name, f"--channel={channel}", f"--target-directory={snaps_dir}")
    images = option_images() | juju_images()
    local_charms: dict[str, dict] = {}
    for app, (store_name, channel) in sorted(bundle_charms(overlays).items()):
        target = charms_dir / f"{store_name}.charm"
        if not target.exists():
            say(f"charm    {store_name} ({channel})")
            run("juju", "download", store_name, "--channel", channel, "--filepath", str(target))
        upstream = charm_resources(target)
        resources = {name: local_name(src) for name, src in upstream.items()}
        images |= {src: local_name(src) for src in upstream.values()}
        # Relative to this folder; localize_charm_paths() makes them absolute where it is unpacked.
        local_charms[app] = {"charm": f"./charms/{target.name}", **({"resources": resources} if resources else {})}
    for upstream, local in sorted(images.items()):
        say(f"image    {upstream}")
        run("docker", "pull", upstream)
        run("docker", "tag", upstream, local)
    run("docker", "save", "-o", str(out / "images.tar"), *sorted(images.values()))
    (out / "images.txt").write_text("".join(f"{image}\n" for image in sorted(images.values())))
    write_charms_overlay(out, local_charms)
    say(f"wrote {out}/images.tar ({len(images)} images), {len(local_charms)} charms, {out}/charms.yaml")
    return 0


def write_charms_overlay(folder: Path, applications: dict[str, dict]) -> None:
    header = "# Written by scripts/airgap-images: the charms downloaded beside it.\n"
    (folder / "charms.yaml").write_text(header + yaml.safe_dump({"applications": applications}, sort_keys=True))


def localize_charm_paths(folder: Path) -> None:
    """Point DIR/charms.yaml at the charm files where DIR is now (Juju wants a path it can open)."""
    applications = yaml.safe_load((folder / "charms.yaml").read_text())["applications"]
    for spec in applications.values():
        spec["charm"] = str((folder / "charms" / Path(spec["charm"]).name).resolve())
    write_charms_overlay(folder, applications)


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


def missing_images(folder: Path) -> list[str]:
    """The images of ``folder``/images.txt that the registry does not hold yet."""
    listed = folder / "images.txt"
    if not listed.is_file():
        raise StepFailed(f"{listed} is missing: run `scripts/airgap-images export {folder}` on a connected machine")
    return [image for image in listed.read_text().split() if not in_registry(image)]


def registry_up() -> bool:
    try:
        with urllib.request.urlopen(REGISTRY_API, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def import_(src: Path, say=print) -> int:
    """Load the saved images and push each one into the local registry."""
    for needed in ("images.tar", "images.txt", "charms.yaml"):
        if not (src / needed).is_file():
            raise StepFailed(f"{src / needed} is missing: run `scripts/airgap-images export {src}` first")
    if not registry_up():
        raise StepFailed(
            f"no registry at {REGISTRY}: run `microk8s enable registry` (or bootstrap-edge-site --airgapped)"
        )
    localize_charm_paths(src)
    run("docker", "load", "-i", str(src / "images.tar"))
    images = [line for line in (src / "images.txt").read_text().splitlines() if line.strip()]
    for image in images:
        say(f"push     {image}")
        run("docker", "push", image)
    say(
        f"{len(images)} images in {REGISTRY}; deploy with --overlay overlays/airgapped.yaml --overlay {src}/charms.yaml"
    )
    return 0


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="airgap-images", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="on a connected machine: download charms and images into DIR")
    ex.add_argument("dir", type=Path)
    ex.add_argument("--overlay", type=Path, action="append", default=[], help="overlays that add Charmhub charms")
    im = sub.add_parser("import", help="on the edge machine: push DIR's images into localhost:32000")
    im.add_argument("dir", type=Path)
    args = p.parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        if args.command == "export":
            return export(args.dir, args.overlay, say)
        return import_(args.dir, say)
    except StepFailed as exc:
        print(f"airgap-images {args.command}: {exc}", flush=True)
        return 1
