#!/usr/bin/env python3
"""Stand-ins for the host's commands that refuse what the real ones refuse.

Invoked through wrappers named after the real commands (snap, microk8s, juju, charmcraft, lxd,
lxc, sudo, id, usermod, apt-get, chown, stat, buildah, skopeo), which pass their own path first.
Each call is logged to $FAKE_CALLS; $FAKE_STATE (JSON) is the host: installed snaps, add-ons,
unix groups, each user's Juju client store, containerd's images, the registry, what the builder
built, who owns which files (`owners`: path -> user; anything else is root's, as what a root
process writes), whether the host is online. $FAKE_HOMES plays /home. `fail`: a command prefix
that exits 1 with `fail_message`.

Every refusal below names the upstream source that decides it. The rules are the point: a
bootstrap that skips a step the real tools need fails here as it would on a real host.
"""

import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile
from pathlib import Path

import yaml

name = Path(sys.argv[1]).name  # the wrapper on PATH passes its own path ($0) first
args = sys.argv[2:]
line = " ".join([name, *args])
state_path = Path(os.environ["FAKE_STATE"])
state = json.loads(state_path.read_text())
user = os.environ.get("FAKE_USER", "root")  # set by the fake sudo
if name != "sudo":
    with open(os.environ["FAKE_CALLS"], "a") as log:
        log.write(line + "\n")


def save():
    state_path.write_text(json.dumps(state))


def done(out="", code=0, err=""):
    sys.stdout.write(out)
    sys.stderr.write(err)
    save()
    sys.exit(code)


def refuse(err, code=1):
    done(code=code, err=err.rstrip("\n") + "\n")


def opt(flag, default=None):
    return args[args.index(flag) + 1] if flag in args else default


def owner(path):
    """Who owns ``path``: the deepest recorded `chown`, else root (what bootstrap, as root, writes)."""
    path = Path(path).resolve()
    owned = [(Path(p), u) for p, u in state.get("owners", {}).items() if path == Path(p) or Path(p) in path.parents]
    return max(owned, key=lambda pu: len(pu[0].parts))[1] if owned else "root"


if state.get("fail") and line.startswith(state["fail"]):
    refuse(f"ERROR {state.get('fail_message', 'simulated failure')}")

# --- images ------------------------------------------------------------------------------

# MicroK8s 1.28's own images (canonical/microk8s 1.28 build-scripts/images.txt; calico from
# upgrade-scripts/000-switch-to-calico/resources/calico.yaml, pause from containerd-template.toml;
# canonical/microk8s-core-addons 1.28 addons/{dns,hostpath-storage,registry}/*.yaml).
CNI = ["docker.io/calico/cni:v3.25.1", "docker.io/calico/node:v3.25.1", "registry.k8s.io/pause:3.7"]
ADDON_IMAGES = {
    "dns": ["docker.io/coredns/coredns:1.10.1"],
    "hostpath-storage": ["docker.io/cdkbot/hostpath-provisioner:1.4.2", "docker.io/library/busybox:1.28.4"],
    "registry": ["docker.io/library/registry:2.8.1"],
    "rbac": [],  # canonical/microk8s-core-addons 1.28 addons/rbac/enable: apiserver args only
}


def normalize(ref):
    """As containerd and the kubelet name images (docker/distribution reference.ParseNormalizedNamed)."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return ref
    return "docker.io/" + (ref if rest else f"library/{ref}")


def registry_serving():
    """localhost:32000 answers once the add-on is enabled and its pod could start."""
    return "registry" in state["addons"] and all(available(i) for i in CNI + ADDON_IMAGES["registry"])


def available(ref):
    """Whether a pod can get ``ref``: in containerd, in the registry add-on, or pulled from the internet."""
    ref = normalize(ref)
    if ref in state["images"]:
        return True
    if ref.startswith("localhost:32000/"):
        return ref in state["pushed"] and "registry" in state["addons"]
    # localhost/... names no registry at all (podman's name for a local build): only an import has it
    return state["online"] and not ref.startswith("localhost")


def docker_archive(path, tag):
    """A docker-archive as `podman save`/`skopeo copy docker-archive:` write it: manifest.json with RepoTags."""
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [tag], "Layers": []}]).encode()
    with tarfile.open(path, "w") as tar:
        for member, data in (("manifest.json", manifest), ("config.json", b"{}")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# --- snap --------------------------------------------------------------------------------

CLASSIC = {"charmcraft"}  # published with classic confinement


def snap_is_classic(snap, channel):
    # MicroK8s' classic builds; "-strict" channels carry the strictly confined one
    # (canonical/microk8s, branch 1.28-strict, snap/snapcraft.yaml: confinement: strict)
    return snap in CLASSIC or (snap == "microk8s" and "-strict" not in (channel or ""))


def snap_version(snap, channel):
    """The Version `snap list` shows for a track: MicroK8s' is the Kubernetes release, v1.28.x
    (canonical/microk8s 1.28 build-scripts/components/kubernetes/version.sh)."""
    track = (channel or "latest/stable").split("/")[0].removesuffix("-strict")
    if snap == "microk8s":
        return f"v{track}.15"
    if snap == "juju" and track == JUJU_VERSION.rsplit(".", 1)[0]:
        return JUJU_VERSION
    return {"3.x": "3.5.3", "2.x": "2.7.1"}.get(track, f"{track}.0")


JUJU_VERSION = "3.6.4"

if name == "snap":
    if args[:1] == ["version"]:
        done("snap 2.63\n")
    if args[:1] == ["list"]:
        # snapcore/snapd cmd/snap/cmd_list.go: a header, then Name Version Rev Tracking Publisher
        # Notes; Tracking is "-" for a snap installed from a file, Notes says "classic" (notes.go)
        if args[1] in state["snaps"]:
            info = state["snaps"][args[1]]
            version = info.get("version") or snap_version(args[1], info["channel"])
            tracking = "-" if info.get("from_file") else info["channel"]
            notes = "classic" if info.get("classic") else "-"
            header = "Name  Version  Rev  Tracking  Publisher  Notes\n"
            done(f"{header}{args[1]}  {version}  42  {tracking}  canonical**  {notes}\n")
        refuse("error: no matching snaps installed")
    if user != "root" and args[:1] in (["install"], ["ack"], ["download"], ["refresh"]):
        refuse("error: access denied (try with sudo)")
    if args[:1] == ["refresh"]:
        snap, channel = args[1], next(a.split("=", 1)[1] for a in args if a.startswith("--channel="))
        if snap not in state["snaps"]:
            refuse(f'error: snap "{snap}" is not installed')
        state["snaps"][snap] = {"channel": channel, "classic": snap_is_classic(snap, channel)}
        done()
    if args[:1] == ["ack"]:
        state.setdefault("acked", []).append(Path(args[1]).stem)
        done()
    if args[:1] == ["install"]:
        target, classic = args[1], "--classic" in args
        if target.endswith(".snap"):
            # snapd refuses an unasserted file unless --dangerous: `snap ack` its assertion first
            if Path(target).stem not in state.get("acked", []):
                refuse(f'error: cannot find signatures with metadata for snap "{target}"')
            snap, channel = Path(target).name.split("_")[0], state.get("downloaded", {}).get(Path(target).name)
        else:
            if not state["online"]:
                refuse("error: unable to contact snap store")
            snap, channel = target, next((a.split("=", 1)[1] for a in args if a.startswith("--channel=")), "stable")
        if snap_is_classic(snap, channel) and not classic:
            refuse(
                f'error: This revision of snap "{snap}" was published using classic confinement and thus may perform\n'
                "       arbitrary system changes outside of the security sandbox that snaps are usually confined to,\n"
                "       which may put your system at risk.\n\n       If you understand and want to proceed repeat the "
                "command including --classic."
            )
        state["snaps"][snap] = {"channel": channel, "classic": snap_is_classic(snap, channel)}
        if target.endswith(".snap"):
            state["snaps"][snap]["from_file"] = True
        if snap == "microk8s":  # its configure hook creates the group (snap/hooks/configure: groupadd)
            state["unix_groups"].append("snap_microk8s" if "-strict" in (channel or "") else "microk8s")
        done()
    if args[:1] == ["download"]:
        if not state["online"]:
            refuse("error: unable to contact snap store")
        target = Path(next(a.split("=", 1)[1] for a in args if a.startswith("--target-directory=")))
        channel = next(a.split("=", 1)[1] for a in args if a.startswith("--channel="))
        (target / f"{args[1]}_42.snap").write_bytes(b"snap")
        (target / f"{args[1]}_42.assert").write_text("assertion")
        state.setdefault("downloaded", {})[f"{args[1]}_42.snap"] = channel
        done()

# --- sudo, id, usermod, apt-get ---------------------------------------------------------------

elif name == "sudo":
    # sudo -u USER -H -- cmd...: the command runs as USER with USER's HOME (and USER's groups
    # read afresh from /etc/group, so a group just added applies to it)
    assert args[0] == "-u" and args[2] == "-H" and args[3] == "--", args
    home = state.get("homes", {}).get(args[1]) or str(Path(os.environ["FAKE_HOMES"]) / args[1])  # passwd
    env = dict(os.environ, FAKE_USER=args[1], HOME=home)
    os.execvpe(args[4], args[4:], env)
elif name == "id" and args[:1] == ["-nG"]:
    if args[1] not in state["groups"]:
        refuse(f"id: '{args[1]}': no such user")
    done(" ".join([args[1], *state["groups"][args[1]]]) + "\n")
elif name == "chown" and args[:1] == ["-R"] and args[1].endswith(":"):
    if user != "root":
        refuse(f"chown: changing ownership of '{args[2]}': Operation not permitted")
    state.setdefault("owners", {})[str(Path(args[2]).resolve())] = args[1][:-1]
    done()
elif name == "stat" and args[:2] == ["-c", "%U"]:
    missing = [p for p in args[2:] if not Path(p).exists()]
    if missing:
        refuse(f"stat: cannot statx '{missing[0]}': No such file or directory")
    done("".join(f"{owner(p)}\n" for p in args[2:]))
elif name == "usermod" and args[:2] == ["-a", "-G"]:
    if user != "root":
        refuse("usermod: Permission denied.")
    if args[2] not in state["unix_groups"]:
        refuse(f"usermod: group '{args[2]}' does not exist", code=6)
    state["groups"][args[3]].append(args[2])
    done()
elif name == "apt-get":
    if not state["online"]:
        refuse("E: Failed to fetch http://archive.ubuntu.com/ubuntu: Temporary failure resolving")
    if args[:2] == ["install", "-y"]:
        for package in args[2:]:
            state["packages"].append(package)
            if package in ("buildah", "podman"):  # the package puts the command on PATH
                wrapper = Path(os.environ["FAKE_BIN"]) / package
                wrapper.write_text(Path(sys.argv[1]).with_name("snap").read_text())
                wrapper.chmod(0o755)
    done()

# --- microk8s ------------------------------------------------------------------------------

elif name == "microk8s":
    if "microk8s" not in state["snaps"]:
        refuse("microk8s: command not found", code=127)
    group = "snap_microk8s" if not state["snaps"]["microk8s"]["classic"] else "microk8s"
    if user != "root" and group not in state["groups"].get(user, []):
        # microk8s-resources/wrappers/common/utils.sh: the credentials are root:<group> 660
        refuse(f"Insufficient permissions to access MicroK8s.\nsudo usermod -a -G {group} {user}")
    if args[:1] == ["status"] and "--format" in args:
        addons = [{"name": a, "status": "enabled"} for a in state["addons"]]
        done(json.dumps({"microk8s": {"running": True}, "addons": addons}))
    if args[:1] == ["status"]:
        done("microk8s is running\n")
    if args[:1] == ["enable"]:
        if args[1] not in ADDON_IMAGES:
            refuse(f"Addon {args[1]} was not found in any repository")
        state["addons"].append(args[1])
        done()
    if args[:1] == ["config"]:
        done(yaml.safe_dump({"apiVersion": "v1", "clusters": [{"name": "microk8s-cluster"}], "users": [{}]}))
    if args[:2] == ["ctr", "image"] and args[2:3] == ["import"]:
        archive = Path(args[3])
        if not archive.is_file():
            refuse(f"ctr: open {archive}: no such file or directory")
        try:
            with tarfile.open(archive) as tar:
                tags = [t for m in json.load(tar.extractfile("manifest.json")) for t in m["RepoTags"]]
        except (tarfile.TarError, KeyError, ValueError):
            refuse("ctr: unrecognized image format")
        for tag in tags:
            state["images"].append(normalize(tag))
        done("".join(f"unpacking {t}...done\n" for t in tags))
    if args[:3] == ["ctr", "images", "ls"]:
        done("".join(f"{i}\n" for i in sorted(set(state["images"]))))
    if args[:3] == ["ctr", "image", "push"]:
        ref = normalize(args[-1])
        if ref not in state["images"]:
            refuse(f"ctr: {args[-1]}: not found")
        if not registry_serving():
            refuse(
                'ctr: failed to do request: Head "http://localhost:32000/v2/": '
                "dial tcp 127.0.0.1:32000: connect: connection refused"
            )
        if "--plain-http" not in args:  # the add-on serves plain HTTP (addons/registry/registry.yaml)
            refuse(
                'ctr: failed to do request: Head "https://localhost:32000/v2/": '
                "http: server gave HTTP response to HTTPS client"
            )
        state["pushed"].append(ref)
        done()
    if args[:3] == ["kubectl", "auth", "can-i"]:
        # MicroK8s 1.28 starts the API server with --authorization-mode=AlwaysAllow until `microk8s
        # enable rbac` (microk8s-resources/default-args/kube-apiserver); kubectl prints yes/no and
        # exits 1 on no (k8s.io/kubectl v0.28 pkg/cmd/auth/cani.go)
        if "rbac" in state["addons"]:
            done("no\n", code=1)
        done("yes\n")
    if args[:1] == ["kubectl"]:
        done(json.dumps({"spec": {"ports": [{"name": "http2", "port": 80, "nodePort": 31380}]}}))

# --- juju ------------------------------------------------------------------------------------

# The Charmhub charms as track/1.17 publishes them: bases (their charmcraft.yaml: ubuntu 20.04,
# no architectures: amd64 as built) and OCI resources (seldon-core's metadata.yaml).
CHARMHUB = {
    "istio-pilot": {"resources": {}},
    "istio-gateway": {"resources": {}},
    "seldon-core": {"resources": {"oci-image": "charmedkubeflow/seldon-core-operator:1.17.1-c95840c"}},
}
# Their image options' defaults (istio-pilot/config.yaml image-configuration, istio-gateway/config.yaml
# proxy-image, seldon-core config.yaml executor-container-image-and-version).
ISTIO_IMAGES = {"pilot-image": "pilot", "global-tag": "1.17.3", "global-hub": "docker.io/istio",
                "global-proxy-image": "proxyv2", "grpc-bootstrap-init": "busybox:1.28"}  # fmt: skip
REPO = Path(__file__).resolve().parents[2]


def snap_cannot_read(path):
    """Why the strictly confined juju snap cannot open ``path`` as this user, or "".

    snapd's home interface (snapcore/snapd interfaces/builtin/home.go): `owner @{HOME}/[^s.]**`
    and siblings: only files the calling user owns, under their home, not in a top-level hidden
    folder and not in ~/snap. AppArmor denies anything else: the open fails with EACCES.
    """
    path, home = Path(path).resolve(), Path(os.environ["HOME"]).resolve()
    if home not in path.parents:
        return f"{path} is outside {home}"
    top = path.relative_to(home).parts[0]
    if top.startswith(".") or top == "snap":
        return f"{path} is in {home / top}, which the home interface does not reach"
    if owner(path) != user:
        return f"{path} belongs to {owner(path)}, not {user}"
    return ""


def read_as_snap(path):
    """A file juju opens: refused as AppArmor would, or missing."""
    if not Path(path).is_file():
        refuse(f"ERROR {path}: no such file or directory")
    why = snap_cannot_read(path)
    if why:
        refuse(f"ERROR open {path}: permission denied ({why}: the strictly confined juju snap cannot read it)")
    return Path(path).read_bytes()


def client():
    """This user's Juju client store (~/.local/share/juju): root's and a user's are different stores."""
    return state["clients"].setdefault(user, {"clouds": [], "controllers": {}, "models": []})


def app_images(spec, repo):
    """The images an application's pods run, the way each charm reads its options."""
    charm = Path(str(spec["charm"])).name.removesuffix(".charm")
    options, resources = spec.get("options") or {}, spec.get("resources") or {}
    if charm.startswith("onnx-model"):
        charmcraft = yaml.safe_load((REPO / "charms/onnx-model/charmcraft.yaml").read_text())
        default = charmcraft["config"]["options"]["server-image"]["default"]
        return [options.get("server-image", default), f"{repo}/charm-base:ubuntu-24.04"]
    images = [f"{repo}/charm-base:ubuntu-20.04"]
    if charm == "istio-pilot":
        cfg = {**ISTIO_IMAGES, **yaml.safe_load(options.get("image-configuration") or "{}")}
        hub, tag = cfg["global-hub"], cfg["global-tag"]
        images += [f"{hub}/{cfg['pilot-image']}:{tag}", f"{hub}/{cfg['global-proxy-image']}:{tag}"]
        images.append(cfg["grpc-bootstrap-init"])
    if charm == "istio-gateway":
        images.append(options.get("proxy-image", "docker.io/istio/proxyv2:1.17.3"))
    if charm == "seldon-core":
        images.append(
            options.get("executor-container-image-and-version", "docker.io/seldonio/seldon-core-executor:1.17.1")
        )
        images.append(resources.get("oci-image", CHARMHUB["seldon-core"]["resources"]["oci-image"]))
    return images


if name == "juju":
    if "juju" not in state["snaps"]:
        refuse("juju: command not found", code=127)
    if Path(os.environ["FAKE_HOMES"]).resolve() not in Path(os.environ["HOME"]).resolve().parents and user != "root":
        # snapcore/snapd cmd/snap-confine/user-support.c: a strict snap will not run for such a user
        refuse(
            "Sorry, home directories outside of /home needs configuration.\n"
            "See https://forum.snapcraft.io/t/11209 for details.",
            code=1,
        )
    if args[:1] == ["version"]:
        done(f"{JUJU_VERSION}-genericlinux-amd64\n")
    # The strictly confined juju snap may write ~/.local/share/juju but cannot create ~/.local/share
    # (Juju 3.6 and Charmed Kubeflow 1.8 guides: `mkdir -p ~/.local/share` first).
    if not (Path(os.environ["HOME"]) / ".local/share").is_dir():
        refuse(f"ERROR mkdir {os.environ['HOME']}/.local/share: permission denied")
    store = client()
    if args[:1] == ["download"]:
        if not state["online"]:
            refuse(
                'ERROR Post "https://api.charmhub.io/v2/charms/refresh": dial tcp: lookup api.charmhub.io: no such host'
            )
        resources = CHARMHUB.get(args[1], {}).get("resources", {})
        meta = {
            "name": args[1],
            "resources": {k: {"type": "oci-image", "upstream-source": v} for k, v in resources.items()},
        }
        manifest = {"bases": [{"name": "ubuntu", "channel": "20.04", "architectures": ["amd64"]}]}
        with zipfile.ZipFile(opt("--filepath"), "w") as z:
            z.writestr("metadata.yaml", yaml.safe_dump(meta))
            z.writestr("manifest.yaml", yaml.safe_dump(manifest))
        done()
    if args[:1] == ["show-cloud"]:
        done(
            code=0 if args[1] in store["clouds"] else 1,
            err="" if args[1] in store["clouds"] else "ERROR cloud not found\n",
        )
    if args[:1] == ["add-k8s"]:
        kubeconfig = sys.stdin.read() if not sys.stdin.isatty() else ""
        if not kubeconfig.strip() or "clusters" not in (yaml.safe_load(kubeconfig) or {}):
            # cmd/juju/caas/add.go: the kubeconfig comes from stdin or $KUBECONFIG / ~/.kube/config
            refuse("ERROR No k8s cluster definitions found in config")
        if "--client" not in args and not store["controllers"]:
            refuse("ERROR There are no controllers running.\nTo add a k8s cloud to this client only, use --client")
        if "hostpath-storage" not in state["addons"]:
            # add.go noRecommendedStorageErrMsg: Juju needs a storage class for its controller
            refuse("ERROR No recommended storage configuration is defined on this cluster.")
        store["clouds"].append(args[1])
        done(f'k8s substrate "microk8s/localhost" added as cloud "{args[1]}"\n')
    if args[:1] == ["bootstrap"]:
        cloud, controller = args[1], args[2]
        if cloud == "microk8s" and state["snaps"].get("microk8s", {}).get("classic", True):
            # juju/juju 3.6 caas/kubernetes/provider/builtin.go getLocalMicroK8sConfig
            refuse(
                f'ERROR "/var/snap/juju/29241/microk8s/credentials/client.config" does not exist: '
                f'juju "{JUJU_VERSION}" can only work with strictly confined microk8s'
            )
        if cloud != "microk8s" and cloud not in store["clouds"]:
            refuse(f'ERROR cloud {cloud} not found\nUse "juju clouds" to see the available clouds.')
        config = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--config")
        repo = config.get("caas-image-repo", "docker.io/jujusolutions")
        profile = config.get("mongo-memory-profile", "default")
        if profile not in ("low", "default"):  # juju/juju mongo.MemoryProfile.Validate
            refuse(f'ERROR controller: memory profile "{profile}" not valid')
        needed = [*CNI, *ADDON_IMAGES["dns"], *ADDON_IMAGES["hostpath-storage"]]
        needed += [f"{repo}/jujud-operator:{JUJU_VERSION}", f"{repo}/juju-db:4.4", f"{repo}/charm-base:ubuntu-24.04"]
        missing = [i for i in needed if not available(i)]
        if missing:  # the controller pod never starts; juju gives up after bootstrap-timeout
            refuse(f"ERROR failed to bootstrap model: controller pod: ImagePullBackOff {missing[0]}")
        store["controllers"][controller] = {"repo": repo, "mongo-memory-profile": profile}
        done()
    if args[:1] == ["show-controller"]:
        done(code=0 if args[1] in store["controllers"] else 1)
    if args[:1] == ["add-model"]:
        controller = opt("-c")
        if controller not in store["controllers"]:
            refuse(f"ERROR controller {controller} not found")
        store["models"].append(f"{controller}:{args[1]}")
        done()
    if args[:1] == ["show-model"]:
        done(code=0 if args[1] in store["models"] else 1)
    model = opt("-m")
    if args[:1] in (["deploy"], ["status"]) and model not in store["models"]:
        refuse(f"ERROR model {model} not found")
    if args[:1] == ["deploy"]:
        bundle = Path(args[3])
        files = [bundle, *(Path(args[i + 1]) for i, a in enumerate(args) if a == "--overlay")]
        merged = {}
        for file in files:  # the bundle, then each overlay over it; every one read as the snap can
            for app, spec in (yaml.safe_load(read_as_snap(file)).get("applications") or {}).items():
                if spec is None:
                    merged.pop(app, None)
                    continue
                charm = str(spec.get("charm", ""))
                if charm.startswith((".", "/")):  # a local charm, relative to the file naming it
                    read_as_snap((file.parent / charm).resolve())
                merged.setdefault(app, {}).update({k: v for k, v in spec.items() if k != "options"})
                merged[app].setdefault("options", {}).update(spec.get("options") or {})
        repo = store["controllers"][model.split(":")[0]]["repo"]
        state["apps"] = {app: app_images(spec, repo) for app, spec in merged.items()}
        done()
    if args[:1] == ["status"]:
        status = "active" if state.get("settled") else "waiting"
        done(json.dumps({"applications": {a: {"application-status": {"current": status}} for a in state["apps"]}}))
    if args[:1] == ["wait-for"]:
        for app, images in sorted(state["apps"].items()):
            for image in images:
                if not available(image):  # the pod never runs: the model never settles
                    refuse(f"ERROR timed out: {app}: ImagePullBackOff: {image}")
        state["settled"] = True
        done()

# --- charmcraft, lxd -----------------------------------------------------------------------

elif name == "charmcraft" and args[:1] == ["pack"]:
    base = yaml.safe_load(Path("charmcraft.yaml").read_text())["base"]
    if "--destructive-mode" in args:
        # canonical/craft-application services/lifecycle.py _validate_build_plan: IncompatibleBaseError
        release = dict(ln.split("=", 1) for ln in Path(os.environ["FAKE_OS_RELEASE"]).read_text().split() if "=" in ln)
        host = f"{release['ID'].strip(chr(34))}@{release['VERSION_ID'].strip(chr(34))}"
        if host != base:
            refuse(
                f"{base.replace('@', ' ').title()} builds cannot be performed "
                f"on this {host.replace('@', ' ').title()} system."
            )
    else:  # managed mode: canonical/craft-providers lxd/installer.py ensure_lxd_is_ready
        if "lxd" not in state["snaps"]:
            refuse("LXD is required, but not installed.")
        if not state["lxd_init"]:
            refuse("LXD has not been properly initialized.\nExecute 'lxd init --auto' to initialize LXD.")
    Path("onnx-model_amd64.charm").write_bytes(b"charm")
    done()
elif name == "lxd" and args[:2] == ["init", "--auto"]:
    if "lxd" not in state["snaps"]:
        refuse("lxd: command not found", code=127)
    state["lxd_init"] = True
    done()
elif name == "lxc" and args[:3] == ["profile", "show", "default"]:
    if "lxd" not in state["snaps"]:
        refuse("lxc: command not found", code=127)
    devices = {"root": {"type": "disk", "path": "/", "pool": "default"}} if state["lxd_init"] else {}
    done(yaml.safe_dump({"name": "default", "devices": devices}))

# --- image tools ---------------------------------------------------------------------------

elif name in ("buildah", "podman"):
    if args[:1] == ["--storage-driver"]:  # a global option of both (containers-storage.conf(5))
        args = args[2:]
    if args[:1] == ["inspect"] or args[:2] == ["image", "inspect"]:
        ref = args[-1]
        if ref not in state["built"]:  # buildah inspect / podman image inspect of an unknown image
            done(code=125, err=f"Error: {ref}: image not known\n")
        fmt = opt("--format") or ""
        labels = state.get("labels", {}).get(ref, {})
        if "Labels" in fmt:  # {{index .OCIv1.Config.Labels "KEY"}}: "<no value>" when unset, as Go templates print
            key = fmt.split('"')[1]
            done(labels.get(key, "<no value>") + "\n")
        done(f"sha256:{hashlib.sha256(ref.encode()).hexdigest()}\n")
    if args[:1] in (["build"], ["bud"]):  # `buildah bud` is buildah's name for `build`
        if not Path(opt("-f")).is_file():
            refuse(f"Error: no such file {opt('-f')}")
        tags = [args[i + 1] for i, a in enumerate(args) if a == "-t"]
        labels = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--label")
        state["built"] += tags
        state.setdefault("labels", {}).update(dict.fromkeys(tags, labels))
        state["builds"] = state.get("builds", 0) + 1
        done()
    if args[:1] == ["push"]:
        ref, dest = args[1], args[2]
        if ref not in state["built"]:
            refuse(f"Error: {ref}: image not known")
        _, path, tag = dest.split(":", 2)
        docker_archive(path, tag)
        done()
    if args[:1] == ["save"]:  # podman save --format docker-archive -o PATH REF
        ref = args[-1]
        if ref not in state["built"]:
            refuse(f"Error: {ref}: image not known")
        docker_archive(opt("-o"), ref)
        done()
elif name == "skopeo" and args[:1] == ["copy"]:
    src = args[1].removeprefix("docker://")
    if not state["online"] or src.startswith("localhost"):
        refuse(f"FATA[0000] initializing source docker://{src}: pinging container registry: connection refused")
    _, path, tag = args[2].split(":", 2)
    docker_archive(path, tag)
    done()
refuse(f"fake {name}: unexpected call {args}", code=2)
