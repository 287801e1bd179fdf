"""A shadow on the local site: the real Envoy sends /model/scratch/shadow/ to a second real model server.

The stable model (the bundle's int8) keeps the line's path alone; the shadow (the fp32 variant,
as overlays/fp32.yaml names it) answers on its own path with its own sha256. A tampered shadow
file is refused by its server and its path answers non-200, while the stable model keeps
answering: what the line's watcher counts as "shadow unavailable".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import yaml

from conftest import photos
from support.site_process import SiteProcess

ROOT = Path(__file__).resolve().parents[2]
BODY = json.dumps({"binData": photos()[0].b64})
HEADERS = {"Content-Type": "application/json"}
LINE = "/model/scratch/api/v0.1/predictions"
SHADOW = "/model/scratch/shadow/api/v0.1/predictions"


def option(file: str, name: str) -> str:
    return yaml.safe_load((ROOT / file).read_text())["applications"]["scratch"]["options"][name]


STABLE_SHA = option("bundle.yaml", "model-sha256")  # int8
FP32_URI, FP32_SHA = option("overlays/fp32.yaml", "model-uri"), option("overlays/fp32.yaml", "model-sha256")


def shadow_args(uri: str = FP32_URI, sha: str = FP32_SHA) -> list[str]:
    return ["--set", f"scratch.shadow-model-uri={uri}", "--set", f"scratch.shadow-model-sha256={sha}"]


def call(site: SiteProcess, path: str) -> requests.Response:
    return requests.post(site.url + path, data=BODY, headers=HEADERS, timeout=30)


def sha_of(resp: requests.Response) -> str:
    assert resp.status_code == 200, resp.text[:300]
    return resp.json()["jsonData"]["model"]["sha256"]


@pytest.fixture(scope="module")
def site():
    site = SiteProcess(shadow_args()).start(ready_lines=2)
    yield site
    site.stop()


def test_the_line_and_the_shadow_each_answer_with_their_own_model(site):
    for _ in range(5):
        assert sha_of(call(site, LINE)) == STABLE_SHA
        assert sha_of(call(site, SHADOW)) == FP32_SHA


def test_the_site_prints_where_the_shadow_answers(site):
    shadow_url = f"{site.url}{SHADOW}"
    assert any(line.startswith(f"ready: scratch sha {STABLE_SHA[:7]} at {site.url}{LINE}") for line in site.out)
    assert f"  its shadow (decides nothing): {shadow_url}" in site.out
    assert any(line.startswith(f"ready: scratch shadow sha {FP32_SHA[:7]} at {shadow_url}") for line in site.out)


def test_a_tampered_shadow_never_answers_and_the_line_keeps_its_model(tmp_path):
    tampered = tmp_path / "model-fp32.onnx"
    original = ROOT / "models" / "scratch-detector" / "model-fp32.onnx"
    tampered.write_bytes(original.read_bytes()[:-1] + b"\x01")
    site = SiteProcess(shadow_args(tampered.as_uri(), FP32_SHA)).start(ready_lines=1)
    try:
        site.wait_for(lambda: any("shadow refused" in line for line in site.err), timeout=120)
        refusal = next(line for line in site.err if "shadow refused" in line)
        assert "sha256 mismatch" in refusal and f"{SHADOW} answers 503" in refusal
        for _ in range(5):
            shadow = call(site, SHADOW)
            assert shadow.status_code != 200, shadow.text[:300]
            assert sha_of(call(site, LINE)) == STABLE_SHA
        assert shadow.status_code == 503  # as the Istio gateway answers for a Service with no Ready pod
        assert not any(line.startswith("ready: scratch shadow") for line in site.out)
    finally:
        site.stop()
