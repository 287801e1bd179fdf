"""Fixtures of `tox -e cluster`: one real cluster for the session, the charm driven against it.

The cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler (support/kube_cluster.py),
a node of containerd, the CNI bridge, kubelet and kube-proxy (support/kube_node.py) holding the
server image that `tox -e image` builds, and Seldon's operator.

The charm runs under ops.testing as in the unit tests, but its `Cluster` client talks to the real
kube-apiserver with the token of a ServiceAccount that has exactly what Juju 3.6 grants the
application (support/juju_rbac.py), trusted or not.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import kube_binaries
from support.charm_on_cluster import CharmOnCluster
from support.kube_cluster import GATEWAY, NAMESPACE, ControlPlane
from support.kube_node import Node, pause_archive
from support.site_requests import ROOT, table

sys.path.insert(0, str(ROOT / "scripts"))
from edge_site import debian_base, server_image  # noqa: E402

_names = itertools.count(1)


def server_image_archive() -> Path:
    """The server image as bootstrap builds and saves it (built once per set of inputs)."""
    base = debian_base.build_base("buildah", say=print)
    ref = server_image.build(base=base, builder="buildah", say=print)
    inputs = server_image.image_label("buildah", ref, server_image.INPUTS_LABEL)
    archive = kube_binaries.cache_root() / f"defect-server-{inputs[:16]}.tar"
    if not archive.is_file():
        part = archive.with_suffix(".part")
        server_image.save(ref, part, builder="buildah")
        part.rename(archive)
    return archive


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    if os.geteuid() != 0:  # as with tox -e image: CI and the README's command run as root
        pytest.skip("needs root: the node runs containerd, runc, CNI and iptables (python3 scripts/tox as root)")
    box = table()["reference_box"]
    workdir = Path(tempfile.mkdtemp(prefix="edge-cluster-"))
    binaries = kube_binaries.all_binaries()
    module = kube_binaries.kubernetes_module()
    images = [pause_archive(kube_binaries.cache_root(), module), server_image_archive()]
    plane = ControlPlane(workdir, binaries, node_cpu=str(box["cpu"]), node_memory=str(box["memtotal"]))
    node = Node(plane, binaries, images)
    plane.node = node
    try:
        plane.start()
        node.start()
        plane.start_seldon_operator()
        # istio-gateway's Gateway (what gateway-info names), so the charm's route binds to something real
        plane.apply_yaml(
            {
                "apiVersion": "networking.istio.io/v1beta1",
                "kind": "Gateway",
                "metadata": {"name": GATEWAY, "namespace": NAMESPACE},
                "spec": {
                    "selector": {"istio": "ingressgateway"},
                    "servers": [{"hosts": ["*"], "port": {"name": "http", "number": 80, "protocol": "HTTP"}}],
                },
            }
        )
        yield plane
    finally:
        try:
            node.stop()
        finally:  # a node that failed half-way must not leave the control plane running
            plane.stop()
        left = node.leftovers()
        shutil.rmtree(workdir, ignore_errors=True)
    # What the node made must be gone: containers, mounts, namespaces, interfaces, rules, cgroups.
    assert left == [], f"the cluster left these behind: {left}"


@pytest.fixture(autouse=True)
def _control_plane_alive(request):
    """A process that died during a test fails that test, with its log tail."""
    yield
    if "control_plane" in request.fixturenames:
        request.getfixturevalue("control_plane").check()


@pytest.fixture
def model(control_plane) -> Iterator[str]:
    """A fresh namespace: the Juju model the charm is deployed in, for this test alone.

    Removed afterwards with everything in it, so no test's pods hold room on the node for the next.
    """
    name = f"edge-{next(_names)}"
    control_plane.ensure_namespace(name)
    yield name
    control_plane.delete_namespace(name)


@pytest.fixture
def charm(control_plane, model, monkeypatch) -> CharmOnCluster:
    return CharmOnCluster(control_plane, model, monkeypatch)
