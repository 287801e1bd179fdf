"""The model server image, built with the recipe bootstrap uses, serving real photos from inside itself.

Here no base-image registry is reachable, so the base is made from Debian packages (mmdebstrap,
imported with buildah); the recipe and `server_image.build()` are the ones every site uses. The
container runs as the pod's would (scripts/edge_site/image_check.py): its own entrypoint, user and
model file, the charm's graph parameters and annotations, a read-only root with a tmpfs /tmp.
`tox -e image` (storage: vfs, isolation: chroot, as this machine needs).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

from edge_site import debian_base, server_image
from edge_site.image_check import PHOTOS, Container
from edge_site.shell import ROOT
from manifests import render

CARD = yaml.safe_load((ROOT / "models/scratch-detector/model.yaml").read_text())
INT8_SHA = next(v["sha256"] for v in CARD["variants"] if v["name"] == "int8")
TARGET_MB = 450

pytestmark = pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("podman") and shutil.which("mmdebstrap")) or os.geteuid() != 0,
    reason="needs root with buildah, podman and mmdebstrap (as root, tox -e image installs them with apt-get)",
)


def say(line: str) -> None:
    print(line, flush=True)


@pytest.fixture(scope="module")
def image() -> str:
    started = time.monotonic()
    base = debian_base.build_base("buildah", say=say)
    ref = server_image.build(base=base, builder="buildah", say=say)
    say(f"base + image: {time.monotonic() - started:.0f}s")
    return ref


@pytest.fixture(scope="module")
def pod_shape() -> tuple[list[dict], dict, dict]:
    """The charm's defaults: graph parameters, annotations, and the container's env."""
    sdep = render("scratch", "site", {"gateway": "site/gateway"})[0]
    predictor = sdep["spec"]["predictors"][0]
    container = predictor["componentSpecs"][0]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return predictor["graph"]["parameters"], sdep["spec"]["annotations"], env


@pytest.fixture(scope="module")
def served(image, pod_shape):
    parameters, annotations, env = pod_shape
    with Container(image, parameters, env=env, annotations=annotations) as box:
        box.ready_s = box.wait_ready()
        yield box


def test_the_reference_is_the_charms_default(image):
    from model_config import DEFAULT_SERVER_IMAGE

    assert image == server_image.reference() == DEFAULT_SERVER_IMAGE == "localhost/defect-server:0.2.0"


def test_real_photos_get_detections_from_inside_the_image(served):
    answers = {p.name: served.predict(p) for p in sorted(PHOTOS.glob("*.jpg"))[:6]}
    found = {name: a["jsonData"]["detections"] for name, a in answers.items()}
    name, dets = max(found.items(), key=lambda kv: len(kv[1]))
    say(f"ready in {served.ready_s:.1f}s; prediction from inside the image for {name}:\n{json.dumps(dets, indent=1)}")
    assert sum(len(d) for d in found.values()) > 0, found
    assert all(d["label"] == "scratch" for ds in found.values() for d in ds)
    for answer in answers.values():
        assert answer["jsonData"]["model"]["sha256"] == INT8_SHA  # the model card's, loaded from the image


def test_every_process_runs_as_uid_10001(served):
    processes = served.processes()
    say("processes: " + "; ".join(f"uid {u}: {c}" for u, c in processes))
    assert processes and {uid for uid, _ in processes} == {10001}


def test_nothing_is_written_outside_tmp(served):
    """Read-only root (as the pod's readOnlyRootFilesystem) and `podman diff` finds no change."""
    assert served.read_only
    assert served.changed_paths() == []
    script = "touch /opt/x 2>&1; touch /tmp/x && echo tmp-ok"
    write = served.podman("exec", served.name, "sh", "-c", script, check=False)
    assert "Read-only file system" in write.stdout and "tmp-ok" in write.stdout, write.stdout


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"jsonData": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
        ('{"binData": "' + base64.b64encode(next(PHOTOS.glob("*.jpg")).read_bytes()).decode() + '", "meta": "oops"}',
         "meta: must be an object"),
    ],
    ids=["nested-5000", "meta-oops"],
)  # fmt: skip
def test_bad_input_is_a_400_naming_the_problem_from_the_image_too(served, body, words):
    req = urllib.request.Request(
        f"{served.url}/api/v0.1/predictions", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400
    assert words in json.loads(err.value.read())["status"]["info"]


def test_the_doc_page_and_its_assets_come_from_inside_the_image(served):
    """README, The model server: Swagger UI's files are in the image (the container has no way
    out to a CDN), and the spec names the model the image serves."""

    def get(path: str) -> tuple[str, bytes]:
        with urllib.request.urlopen(f"{served.url}/api/v1.0/doc/{path}", timeout=30) as resp:
            return resp.headers["Content-Type"], resp.read()

    kind, page = get("")
    assert kind.startswith("text/html") and b'src="swagger-ui-bundle.js"' in page
    kind, bundle = get("swagger-ui-bundle.js")
    assert "javascript" in kind and b"SwaggerUIBundle" in bundle
    spec = json.loads(get("openapi.json")[1])
    assert spec["info"]["x-model"]["sha256"] == INT8_SHA
    assert spec["info"]["x-model"]["classes"] == ["scratch"]


def test_rebuilding_unchanged_inputs_builds_nothing(image):
    lines: list[str] = []
    started = time.monotonic()
    assert server_image.build(base=debian_base.REFERENCE, builder="buildah", say=lines.append) == image
    assert any("up to date" in line for line in lines) and time.monotonic() - started < 60, lines


def test_the_image_saves_as_a_docker_archive(image, tmp_path):
    archive = server_image.save(image, tmp_path / "defect-server.tar", builder="buildah")
    listing = subprocess.run(["tar", "-tf", str(archive)], capture_output=True, text=True, check=True).stdout
    assert "manifest.json" in listing.split()
    extract = subprocess.run(["tar", "-xOf", str(archive), "manifest.json"], capture_output=True, check=True)
    manifest = json.loads(extract.stdout)
    assert manifest[0]["RepoTags"] == [image]


def test_size_is_printed_with_what_takes_the_space(image, served):
    size = server_image.size_bytes(image, builder="podman")
    history = served.podman("history", "--format", "{{.Size}}\t{{.CreatedBy}}", image).stdout
    du = served.podman(
        "exec", served.name, "sh", "-c",
        "du -sk /usr /opt/defect-server/lib/python3*/site-packages/* /opt/models | sort -rn | head -14",
    ).stdout  # fmt: skip
    say(f"image size: {size / 1e6:.0f} MB (target < {TARGET_MB} MB)\nlayers:\n{history}\nlargest (KiB):\n{du}")
    assert size > 0
    if size / 1e6 >= TARGET_MB:
        pytest.xfail(f"{size / 1e6:.0f} MB is over the {TARGET_MB} MB target")  # reported, not hidden
