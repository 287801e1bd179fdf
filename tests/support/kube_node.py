"""A real node beside the control plane: containerd + runc, the CNI bridge, kubelet and kube-proxy.

Debian's containerd (1.6), runc and containernetworking-plugins run the pods; the kubelet and
kube-proxy are built with the control plane (support/kube_binaries.py). The flags follow MicroK8s
1.28 (canonical/microk8s@1.28 microk8s-resources/default-args/kubelet, kube-proxy,
containerd-template.toml): cgroupfs, eviction at memory.available<100Mi, iptables proxy mode,
cluster CIDR 10.1.0.0/16. What differs is said where it is set.

Nothing can be pulled here: the pause image is made from Kubernetes' own build/pause/linux/pause.c
(from the k8s.io/kubernetes module) and buildah, and named as containerd's sandbox_image and the
kubelet's pod-infra image; the server image is imported from the archive bootstrap saves, with
`ctr -n k8s.io images import`, as `microk8s ctr image import` does on a site.

``stop()`` removes every container, mount, network namespace, interface, iptables chain and cgroup
that the node made; ``leftovers()`` lists any that remain, and a test asserts the list is empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from support.kube_cluster import NODE_NAME, ControlPlane, Proc, Timeout, free_port, wait_for
from support.site_requests import MI, quantity

CNI_BIN = Path("/usr/lib/cni")
BRIDGE = "edgecni0"
POD_CIDR = "10.1.0.0/24"  # inside microk8s' cluster CIDR 10.1.0.0/16 (default-args/kube-proxy)
CLUSTER_CIDR = "10.1.0.0/16"
SERVICE_CIDR = "10.152.183.0/24"  # the API server's --service-cluster-ip-range (support/kube_cluster.py)
# Nothing addressed to the cluster's ranges may leave this machine: without these routes, a
# connection to a ClusterIP that kube-proxy has not programmed yet followed the default route out
# (an outside proxy answered "403 resolve_deny"). Pod addresses outside the bridge's /24 are
# unreachable. The Service range goes to a bridge with no ports (this kernel has no dummy
# devices; a portless bridge drops what it is sent, after an ARP that nobody answers), not to
# "unreachable": a local connection's route is looked up before kube-proxy's DNAT in nat/OUTPUT,
# so an unreachable route would refuse every ClusterIP; after DNAT it is routed again, to a pod.
UNREACHABLE = (CLUSTER_CIDR,)
SERVICE_DEVICE = "edgesvc0"
PAUSE_IMAGE = "localhost/edge-site/pause:3.9"
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/var/run/netns")
# Set while the node runs, restored by stop(). The kubelet's cAdvisor and containerd take many of
# root's inotify instances (128 by default here); Envoy's file-watched routes (the gateway) then
# missed updates. kind documents the same limits for nodes on one machine ("too many open
# files": fs.inotify.max_user_instances=512, max_user_watches=524288).
SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "fs.inotify.max_user_instances": "512",
    "fs.inotify.max_user_watches": "524288",
}


class NodeUnavailable(Exception):
    """This machine refuses something the node needs; the message has the exact error."""


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise NodeUnavailable(f"{' '.join(cmd)}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc


def pause_archive(cache: Path, kubernetes_module: Path) -> Path:
    """pause.c compiled statically (its Makefile's CFLAGS), in a one-file image, saved as an archive."""
    archive = cache / "pause-3.9.tar"
    if archive.is_file():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        source = kubernetes_module / "build" / "pause" / "linux" / "pause.c"
        run(["gcc", "-Os", "-Wall", "-Werror", "-static", "-DVERSION=v3.9-edge", "-o", str(binary), str(source)])
        storage = ["--storage-driver", os.environ.get("DEFECT_IMAGE_STORAGE_DRIVER", "vfs")]
        ctr = run(["buildah", *storage, "from", "scratch"]).stdout.strip()
        try:
            run(["buildah", *storage, "copy", "--chmod", "0755", ctr, str(binary), "/pause"])
            run(["buildah", *storage, "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr])
            run(["buildah", *storage, "commit", "--rm", ctr, PAUSE_IMAGE])
        except NodeUnavailable:
            run(["buildah", *storage, "rm", ctr], check=False)
            raise
        part = archive.with_suffix(".part")
        part.unlink(missing_ok=True)
        run(["buildah", *storage, "push", PAUSE_IMAGE, f"docker-archive:{part}:{PAUSE_IMAGE}"])
        part.rename(archive)
    return archive


@dataclass
class Node:
    """Start with ``start()`` after the control plane; always ``stop()``."""

    plane: ControlPlane
    binaries: dict[str, Path]
    images: list[Path]  # archives to import (the pause image is added)
    workdir: Path = field(init=False)
    procs: list[Proc] = field(default_factory=list)
    _sysctls: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = self.plane.workdir / "node"
        self.socket = self.workdir / "containerd" / "containerd.sock"

    # --- start ---------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for key, value in SYSCTLS.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            try:
                self._sysctls[key] = path.read_text().strip()
                path.write_text(value)
            except OSError as exc:
                raise NodeUnavailable(f"sysctl {key}={value}: {exc}") from None
        for cidr in UNREACHABLE:
            run(["ip", "route", "replace", "unreachable", cidr])
        run(["ip", "link", "add", SERVICE_DEVICE, "type", "bridge"])
        run(["ip", "link", "set", SERVICE_DEVICE, "up"])
        run(["ip", "route", "replace", SERVICE_CIDR, "dev", SERVICE_DEVICE])
        self._containerd()
        for archive in self.images:
            run(self.ctr("images", "import", "--no-unpack", str(archive)))
        self._cni()
        self._kubelet()
        self._kube_proxy()
        wait_for(self._node_ready, 120, f"Node {NODE_NAME} Ready (kubelet)", check=self.check)

    def check(self) -> None:
        self.plane.check()

    def ctr(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args]

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.procs.append(self.plane._spawn(name, argv))

    def _containerd(self) -> None:
        root = self.socket.parent
        config = root / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config.write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{root}/root"',
                    f'state = "{root}/state"',
                    "[grpc]",
                    f'  address = "{self.socket}"',
                    '[plugins."io.containerd.internal.v1.opt"]',
                    f'  path = "{root}/opt"',
                    f"[{cri}]",
                    f'  sandbox_image = "{PAUSE_IMAGE}"',
                    '  stream_server_address = "127.0.0.1"',
                    '  stream_server_port = "0"',
                    "  enable_selinux = false",
                    "  max_container_log_line_size = 16384",
                    # This machine's capability bounding set lacks CAP_SYS_RESOURCE, so runc cannot
                    # lower a process's oom_score_adj: the pause container's -998 (containerd
                    # pkg/cri defaultSandboxOOMAdj) fails with "nsexec: failed to update
                    # /proc/self/oom_score_adj: Permission denied". containerd's own option keeps
                    # every score at or above its own (0) instead; MicroK8s does not set it
                    # (canonical/microk8s@1.28 microk8s-resources/default-args/containerd-template.toml).
                    "  restrict_oom_score_adj = true",
                    f"[{cri}.containerd]",
                    '  snapshotter = "overlayfs"',
                    '  default_runtime_name = "runc"',
                    f"[{cri}.containerd.runtimes.runc]",
                    '  runtime_type = "io.containerd.runc.v2"',
                    f"[{cri}.containerd.runtimes.runc.options]",
                    "  SystemdCgroup = false",
                    f'  BinaryName = "{shutil.which("runc") or "runc"}"',
                    f"[{cri}.cni]",
                    f'  bin_dir = "{CNI_BIN}"',
                    f'  conf_dir = "{self.workdir / "cni" / "net.d"}"',
                    "",
                ]
            )
        )
        self._spawn("containerd", ["containerd", "--config", str(config)])
        wait_for(lambda: run(self.ctr("version"), check=False).returncode == 0, 30, "containerd", check=self.check)

    def _cni(self) -> None:
        conf = self.workdir / "cni" / "net.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "10-edge.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "edge-pods",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,  # pods reach nothing outside this machine
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "dataDir": str(self.workdir / "cni" / "ipam"),
                            },
                        },
                        {"type": "loopback"},
                    ],
                },
                indent=1,
            )
        )

    def _kubelet(self) -> None:
        pki = self.plane.ca
        client = pki.issue("kubelet-client", f"system:node:{NODE_NAME}", "system:nodes")
        serving = pki.issue("kubelet", NODE_NAME, hosts=("127.0.0.1", NODE_NAME), client=False, server=True)
        kubeconfig = self.plane.kubeconfig("kubelet", client)
        # This machine has more memory than the reference box: reserve the difference, so that the
        # Node's allocatable (capacity - reserved - eviction) is what the box's would be: its
        # MemTotal less MicroK8s' 100Mi eviction threshold (tests/data/site-requests.yaml).
        box = quantity(self.plane.node_cpu, self.plane.node_memory)  # the same parser as the sizing table's
        reserved = {"memory": str(max(0, _meminfo_bytes("MemTotal") - round(box.memory_mi * MI)))}
        extra_cpu_m = (os.cpu_count() or 1) * 1000 - box.cpu_m
        if extra_cpu_m > 0:
            reserved["cpu"] = f"{extra_cpu_m}m"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.cert)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "serializeImagePulls": False,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1Gi", "imagefs.available": "1Gi"},
            "systemReserved": reserved,
            "enforceNodeAllocatable": ["pods"],
            "clusterDomain": "cluster.local",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "resolvConf": "/etc/resolv.conf",
            "maxPods": 110,
        }
        path = self.workdir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                str(self.binaries["kubelet"]),
                f"--config={path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                "--node-ip=127.0.0.1",
                f"--pod-infra-container-image={PAUSE_IMAGE}",
                "--node-labels=microk8s.io/cluster=true",
                "--v=1",
            ],
        )

    def _kube_proxy(self) -> None:
        kubeconfig = self.plane.kubeconfig("kube-proxy", self.plane.ca.issue("kube-proxy", "system:kube-proxy"))
        self._spawn(
            "kube-proxy",
            [
                str(self.binaries["kube-proxy"]),
                f"--kubeconfig={kubeconfig}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={CLUSTER_CIDR}",
                f"--hostname-override={NODE_NAME}",
                f"--healthz-bind-address=127.0.0.1:{free_port()}",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                "--conntrack-max-per-core=0",  # leave the machine's conntrack table size alone
                "--profiling=false",
            ],
        )

    def _node_ready(self) -> bool:
        from kubernetes import client

        node = client.CoreV1Api(self.plane.api()).read_node(NODE_NAME)
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    # --- stop and what is left -----------------------------------------------------------

    def stop(self) -> None:
        """Remove what the node made; the machine's settings come back even when a step fails."""
        try:
            for proc in reversed(self.procs):
                if proc.name != "containerd":
                    proc.stop()
            if self.socket.exists():
                for task in _column(run(self.ctr("tasks", "list", "-q"), check=False).stdout):
                    run(self.ctr("tasks", "kill", "-s", "SIGKILL", task), check=False)
                    with contextlib.suppress(Timeout):  # leftovers() names whatever stays
                        wait_for(lambda t=task: t not in _running(self), 15, f"task {task} stopped")
                    run(self.ctr("tasks", "delete", task), check=False)
                for container in _column(run(self.ctr("containers", "list", "-q"), check=False).stdout):
                    run(self.ctr("containers", "delete", container), check=False)
            for proc in self.procs:
                proc.stop()
            for mount in reversed(_mounts_under(self.workdir)):
                run(["umount", "-l", mount], check=False)
            for netns in _netns_of_cni():
                run(["ip", "netns", "delete", netns], check=False)
            run(["ip", "link", "delete", BRIDGE], check=False)
            for cidr in UNREACHABLE:
                run(["ip", "route", "delete", "unreachable", cidr], check=False)
            run(["ip", "link", "delete", SERVICE_DEVICE], check=False)  # its route goes with it
            # kube-proxy leaves its rules when it stops (by design); its own cleanup mode removes them
            run([str(self.binaries["kube-proxy"]), "--cleanup", "--proxy-mode=iptables"], check=False)
            _flush_iptables()
            for group in _cgroups():
                _remove_cgroup(group)
        finally:
            for key, value in self._sysctls.items():
                (Path("/proc/sys") / key.replace(".", "/")).write_text(value)

    def leftovers(self) -> list[str]:
        """Everything this node made that still exists on the machine."""
        left = [f"process {p.name} ({p.popen.pid})" for p in self.procs if p.alive()]
        left += [f"mount {m}" for m in _mounts_under(self.workdir)]
        left += [f"netns {n}" for n in _netns_of_cni()]
        if run(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
            left.append(f"interface {BRIDGE}")
        routes = run(["ip", "route", "show", "type", "unreachable"], check=False).stdout
        left += [f"route unreachable {c}" for c in UNREACHABLE if c in routes]
        if run(["ip", "link", "show", SERVICE_DEVICE], check=False).returncode == 0:
            left.append(f"interface {SERVICE_DEVICE}")
        left += [f"interface {i}" for i in _veths()]
        left += [f"iptables {t} chain {c}" for t, c in _our_chains()]
        left += [f"cgroup {g}" for g in _cgroups()]
        left += [f"shim {p}" for p in _shims(self.workdir)]
        return left


# --- helpers: reading the machine ----------------------------------------------------------


def _column(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def _running(node: Node) -> list[str]:
    out = run(node.ctr("tasks", "list"), check=False).stdout.splitlines()[1:]
    return [line.split()[0] for line in out if "RUNNING" in line]


def _meminfo_bytes(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise NodeUnavailable(f"/proc/meminfo has no {key}")


def _mounts_under(folder: Path) -> list[str]:
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(str(folder)) or target.startswith(str(NETNS_DIR / "cni-")):
            mounts.append(target)
    return mounts


def _netns_of_cni() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.glob("cni-*")) if NETNS_DIR.is_dir() else []


def _veths() -> list[str]:
    out = run(["ip", "-o", "link", "show", "master", BRIDGE], check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()]


def _our_chains() -> list[tuple[str, str]]:
    """kube-proxy's KUBE-* and the CNI plugins' CNI-* chains, in the tables they use."""
    found = []
    for table in ("filter", "nat", "mangle"):
        out = run(["iptables", "-t", table, "-S"], check=False).stdout
        found += [
            (table, line.split()[1])
            for line in out.splitlines()
            if line.startswith("-N ") and re.match(r"(KUBE|CNI)-", line.split()[1])
        ]
    return found


def _flush_iptables() -> None:
    """Undo the CNI plugins' rules and what `kube-proxy --cleanup` left: unhook, flush, delete our chains."""
    for table in ("filter", "nat", "mangle"):
        rules = run(["iptables", "-t", table, "-S"], check=False).stdout.splitlines()
        for rule in rules:
            parts = shlex.split(rule)
            if parts[:1] == ["-A"] and not re.match(r"(KUBE|CNI)-", parts[1]) and re.search(r"-j (KUBE|CNI)-", rule):
                run(["iptables", "-t", table, "-D", *parts[1:]], check=False)
        chains = [c for t, c in _our_chains() if t == table]
        for chain in chains:
            run(["iptables", "-t", table, "-F", chain], check=False)
        for chain in chains:
            run(["iptables", "-t", table, "-X", chain], check=False)


def _cgroups() -> list[Path]:
    """The kubelet's cgroups (kubepods under every hierarchy it writes)."""
    return sorted(p for p in CGROUP_ROOT.glob("*/kubepods*") if p.is_dir())


def _remove_cgroup(group: Path) -> None:
    for child in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            child.rmdir()
        except OSError:
            pass
    try:
        group.rmdir()
    except OSError:
        pass


def _shims(workdir: Path) -> list[int]:
    """containerd-shim processes (they run in their own session) of this node."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "containerd-shim" in cmdline and str(workdir) in cmdline:
            pids.append(int(proc.name))
    return pids
