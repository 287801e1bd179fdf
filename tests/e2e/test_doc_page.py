"""The endpoint documents itself: Swagger UI and the served model's OpenAPI, through the local site's real Envoy.

The site's gateway rewrites ``/model/<name>/`` to ``/`` as Istio's does, so these run the
page where a user opens it; the browser test uses Debian's real chromium.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import urljoin

import jsonschema
import pytest
import requests
from openapi_spec_validator import validate

from conftest import SYNTH_CANDIDATES, SYNTH_NAMES, start
from support.chromium import Chromium, require_chromium
from support.site_process import SiteProcess
from support.synthetic_yolo import build

INPUT_HW = (256, 384)  # the synthetic model's height and width
DOC = "/model/scratch/api/v1.0/doc/"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, str]:
    """A model whose answer is known for any image (its candidates are constants)."""
    path = tmp_path_factory.mktemp("doc-model") / "synthetic.onnx"
    return path, build(path, INPUT_HW, SYNTH_NAMES, SYNTH_CANDIDATES)


@pytest.fixture(scope="module")
def site(model):
    path, sha = model
    s = SiteProcess(["--set", f"scratch.model-uri={path.as_uri()}", "--set", f"scratch.model-sha256={sha}"]).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def spec(site) -> dict:
    resp = requests.get(site.url + DOC + "openapi.json", timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    return resp.json()


def test_the_page_and_every_asset_it_names_load_through_the_gateway(site):
    page = requests.get(site.url + DOC, timeout=30)
    assert page.status_code == 200, page.text
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<title>scratch: model server API</title>" in page.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r'url: "([^"]+)"', page.text)
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json"} <= set(urls)
    for url in urls:
        assert not url.startswith(("/", "http:", "https:")), f"{url}: not relative, breaks behind /model/<name>/"
        asset = requests.get(urljoin(page.url, url), timeout=30)
        assert asset.status_code == 200, f"{url}: {asset.status_code}"
        assert len(asset.content) > 0, url


def test_the_path_without_its_slash_redirects_within_the_prefix(site):
    resp = requests.get(site.url + DOC.rstrip("/"), timeout=30)
    assert resp.status_code == 200
    assert resp.url == site.url + DOC
    assert [r.status_code for r in resp.history] == [308]


def test_the_spec_is_valid_openapi_and_names_the_served_model(spec, model):
    validate(spec)  # openapi-spec-validator: OpenAPI 3.1 and its JSON Schema dialect
    served = spec["info"]["x-model"]
    assert served["name"] == "scratch"
    assert served["sha256"] == model[1]
    assert served["version"] == model[1][:12]  # the site gives no version: the server's default
    assert served["classes"] == SYNTH_NAMES
    assert served["input"] == {"width": INPUT_HW[1], "height": INPUT_HW[0]}
    description = spec["info"]["description"]
    assert model[1] in description and "`scratch`, `dent`" in description and "384x256" in description
    assert spec["components"]["schemas"]["Detection"]["properties"]["label"]["enum"] == SYNTH_NAMES


def test_the_spec_example_gets_detections_that_hold_to_the_served_spec(site, spec):
    """What "Try it out" sends by default is answered, and the answer holds to the schema the
    page shows (with the model's name, sha256 and classes pinned in it)."""
    operation = spec["paths"]["/api/v0.1/predictions"]["post"]
    example = operation["requestBody"]["content"]["application/json"]["examples"]["blank"]["value"]
    resp = requests.post(site.url + "/model/scratch/api/v0.1/predictions", json=example, timeout=30)
    assert resp.status_code == 200, resp.text
    schema = {"$ref": "#/components/schemas/PredictionResponse", "components": spec["components"]}
    jsonschema.validate(resp.json(), schema, cls=jsonschema.Draft202012Validator)
    labels = sorted(d["label"] for d in resp.json()["jsonData"]["detections"])
    assert labels == ["dent", "dent", "scratch"]  # SYNTH_CANDIDATES after threshold and NMS


@pytest.mark.parametrize("path", ["nope.js", "openapi.yaml", "..%2f..%2fhealth%2fstatus", "swagger-ui.css/x"])
def test_unknown_doc_paths_are_404_in_seldons_format(site, path):
    resp = requests.get(site.url + DOC + path, timeout=30)
    assert resp.status_code == 404, resp.text
    assert resp.json()["status"]["code"] == 404


def test_posting_to_the_page_is_405_naming_get(site):
    resp = requests.post(site.url + DOC, data="{}", headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 405, resp.text
    assert "GET" in resp.headers["Allow"]


# Expand the predict operation, "Try it out", "Execute", and read what the page shows. Each
# wait polls the DOM under one deadline; Swagger UI renders asynchronously.
TRY_IT_OUT = """
(async () => {
  const deadline = performance.now() + %(timeout_ms)d;
  const until = async (find, what) => {
    for (;;) {
      const found = find();
      if (found) return found;
      if (performance.now() > deadline) throw new Error("Swagger UI: no " + what);
      await new Promise(r => setTimeout(r, 50));
    }
  };
  const op = await until(() => document.querySelector("#operations-default-predict"), "predict operation");
  const title = op.querySelector(".opblock-summary-path").textContent;
  op.querySelector(".opblock-summary-control").click();
  (await until(() => op.querySelector(".try-out__btn"), "Try it out button")).click();
  (await until(() => op.querySelector("button.execute"), "Execute button")).click();
  const live = ".live-responses-table tr.response";  // the header row has the same column classes
  const status = await until(() => op.querySelector(live + " .response-col_status"), "response");
  const body = await until(() => op.querySelector(live + " .response-col_description pre"), "response body");
  const url = op.querySelector(".request-url pre");
  return {title, status: status.textContent.trim(), body: body.textContent, url: url && url.textContent.trim()};
})()
"""


def test_swagger_ui_in_chromium_tries_predict_against_the_live_endpoint(site, model, tmp_path):
    require_chromium()
    with Chromium(tmp_path / "chromium") as browser:
        browser.open(site.url + DOC)
        shown = browser.evaluate(TRY_IT_OUT % {"timeout_ms": 45_000})
        requested = list(browser.requested)
    assert shown["title"].replace("\u200b", "") == "/api/v0.1/predictions"
    # the relative server URL resolved to the gateway path the browser came through
    assert shown["url"] == site.url + "/model/scratch/api/v0.1/predictions"
    assert shown["status"] == "200"
    answer = json.loads(shown["body"])["jsonData"]
    assert answer["model"]["sha256"] == model[1]
    assert sorted(d["label"] for d in answer["detections"]) == ["dent", "dent", "scratch"]
    off_site = [u for u in requested if not u.startswith((site.url, "data:"))]  # data: is inline, no fetch
    assert not off_site, f"the page fetched from off the site (a site is offline): {off_site}"


def test_on_the_servers_own_port_the_page_and_its_server_url_need_no_prefix(synthetic_server):
    """A pod's port 9000, without the gateway: the same relative URLs land on the server's root."""
    page = requests.get(synthetic_server.url + "/api/v1.0/doc/", timeout=30)
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    spec_url = synthetic_server.url + "/api/v1.0/doc/openapi.json"
    served = requests.get(spec_url, timeout=30).json()
    root = urljoin(spec_url, served["servers"][0]["url"])
    assert root.rstrip("/") == synthetic_server.url
    assert requests.get(root.rstrip("/") + "/health/status", timeout=30).status_code == 200


def test_a_refused_model_still_gets_a_valid_spec_that_says_why(model, tmp_path):
    """During a bad roll the page is where a user looks: it answers, naming the refusal, not a 500."""
    path, _ = model
    server = start(tmp_path, model_uri=path.as_uri(), model_sha256="0" * 64)
    try:
        server.wait_alive()
        spec_url = server.url + "/api/v1.0/doc/openapi.json"
        deadline = time.monotonic() + 60  # the model is fetched and checked in the background
        served = requests.get(spec_url, timeout=5).json()["info"]["x-model"]
        while "not loaded yet" in served["not_ready"] and time.monotonic() < deadline:
            time.sleep(0.2)
            served = requests.get(spec_url, timeout=5).json()["info"]["x-model"]
        assert "sha256 mismatch" in served["not_ready"] and "classes" not in served
        validate(requests.get(spec_url, timeout=5).json())
        assert requests.get(server.url + "/api/v1.0/doc/", timeout=5).status_code == 200
    finally:
        server.stop()
