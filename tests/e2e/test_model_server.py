"""The real seldon-core-microservice serving our model class, over HTTP and gRPC."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import subprocess
import time
import zlib
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import requests
import yaml
from PIL import Image

from conftest import photos, start
from support.server_process import ROOT, server_python
from support.synthetic_yolo import build

OPENAPI = yaml.safe_load((ROOT / "models/server/openapi.yaml").read_text())
PREDICT_PATHS = ["/api/v0.1/predictions", "/api/v1.0/predictions", "/predict"]


def schema(name: str) -> dict:
    """A component schema with its $refs resolvable (OpenAPI 3.1 schemas are JSON Schema)."""
    return {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}


def conforms(body: dict, name: str) -> None:
    jsonschema.validate(body, schema(name), cls=jsonschema.Draft202012Validator)


def predict(server, payload, path: str = "/api/v0.1/predictions", **kw) -> requests.Response:
    data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return requests.post(server.url + path, data=data, headers={"Content-Type": "application/json"}, timeout=30, **kw)


def detections(resp: requests.Response) -> list[dict]:
    assert resp.status_code == 200, resp.text
    conforms(resp.json(), "PredictionResponse")
    return resp.json()["jsonData"]["detections"]


PHOTO = photos()[0]


# --- decoding is right, for any YOLOv8 export ----------------------------------------


def expected_box(cx, cy, w, h, scale, pad_x, pad_y):
    return ((cx - w / 2 - pad_x) / scale, (cy - h / 2 - pad_y) / scale, w / scale, h / scale)


def test_synthetic_model_boxes_map_back_to_original_pixels(synthetic_server):
    dets = detections(predict(synthetic_server, {"binData": PHOTO.b64}))
    # 450x300 photo into a 384x256 input: scale 256/300, no padding.
    scale = 256 / 300
    want = [
        ("scratch", 0.9, expected_box(100, 120, 40, 20, scale, 0, 0)),
        ("dent", 0.7, expected_box(101, 120, 40, 20, scale, 0, 0)),
        ("dent", 0.6, expected_box(300, 200, 50, 50, scale, 0, 0)),
    ]
    assert len(dets) == len(want)
    for det, (label, conf, box) in zip(dets, want, strict=True):
        assert det["label"] == label
        assert det["confidence"] == pytest.approx(conf, abs=1e-4)
        got = (det["box"]["x"], det["box"]["y"], det["box"]["width"], det["box"]["height"])
        assert got == pytest.approx(box, abs=0.06)


def test_another_input_size_and_class_count_is_decoded_right(tmp_path):
    """A dynamic-shape export with three classes and no names in its metadata, at input 320."""
    model = tmp_path / "other.onnx"
    sha = build(model, None, ["a", "b", "c"], [(160, 160, 64, 32, 2, 0.8)], metadata_names=False)
    server = start(tmp_path, model_uri=model.as_uri(), model_sha256=sha, input_size=320)
    try:
        server.wait_ready()
        (det,) = detections(predict(server, {"binData": PHOTO.b64}))
    finally:
        server.stop()
    scale = 320 / 450  # the 450-wide photo fills the width; 213 rows high, padded to 320
    pad_y = round((320 - round(300 * scale)) / 2 - 0.1)
    assert det["label"] == "class2"
    got = (det["box"]["x"], det["box"]["y"], det["box"]["width"], det["box"]["height"])
    assert got == pytest.approx(expected_box(160, 160, 64, 32, scale, 0, pad_y), abs=0.1)


@pytest.mark.parametrize("path", PREDICT_PATHS)
def test_every_prediction_path_answers_the_same(synthetic_server, path):
    assert detections(predict(synthetic_server, {"binData": PHOTO.b64}, path)) == detections(
        predict(synthetic_server, {"binData": PHOTO.b64})
    )


def test_json_image_and_ndarray_give_the_same_detections(synthetic_server):
    reference = detections(predict(synthetic_server, {"binData": PHOTO.b64}))
    assert detections(predict(synthetic_server, {"jsonData": {"image": PHOTO.b64}})) == reference
    pixels = np.asarray(Image.open(PHOTO.path).convert("RGB")).tolist()
    assert detections(predict(synthetic_server, {"data": {"ndarray": pixels}})) == reference


def test_png_is_accepted(synthetic_server):
    buf = io.BytesIO()
    Image.open(PHOTO.path).save(buf, format="PNG")
    assert detections(predict(synthetic_server, {"binData": base64.b64encode(buf.getvalue()).decode()}))


def test_response_names_the_model_that_answered(synthetic_server, synthetic_model):
    body = predict(synthetic_server, {"binData": PHOTO.b64}).json()["jsonData"]
    assert body["model"] == {"name": "scratch", "version": synthetic_model[1][:12], "sha256": synthetic_model[1]}
    assert body["image"] == {"width": 450, "height": 300}


def test_grpc_predict(synthetic_server):
    out = subprocess.run(
        [
            str(server_python()),
            str(ROOT / "tests/support/grpc_predict.py"),
            str(synthetic_server.grpc_port),
            str(PHOTO.path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert [d["label"] for d in body["jsonData"]["detections"]] == ["scratch", "dent", "dent"]


def test_health_metadata_and_metrics(synthetic_server, synthetic_model):
    health = requests.get(synthetic_server.url + "/health/status", timeout=5)
    assert health.status_code == 200
    conforms(health.json(), "HealthResponse")
    meta = requests.get(synthetic_server.url + "/api/v1.0/metadata", timeout=5).json()
    conforms(meta, "Metadata")
    assert meta["custom"]["sha256"] == synthetic_model[1]
    predict(synthetic_server, {"binData": PHOTO.b64})
    predict(synthetic_server, {"binData": "bm90IGFuIGltYWdl"})
    metrics = requests.get(f"http://127.0.0.1:{synthetic_server.metrics_port}/metrics", timeout=5).text
    for series in ("defect_images_total", "defect_detections_total", "defect_inference_seconds", "defect_errors_total"):
        assert series in metrics


# --- bad input: a 4xx that names the field, and the worker keeps serving -------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a decompression bomb's calling card."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = zlib.compress(b"\x00" * 16)
    body += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    return b"\x89PNG\r\n\x1a\n" + body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


JPEG = PHOTO.path.read_bytes()
GIF = io.BytesIO()
Image.new("RGB", (8, 8)).save(GIF, format="GIF")

BAD = [
    ("not json", b"{this is not json", 400, "JSON"),
    ("json list", [1, 2, 3], 400, "request: must be a JSON object"),
    ("no image", {"meta": {}}, 400, "request: no image"),
    ("two images", {"binData": PHOTO.b64, "data": {"ndarray": [[[0, 0, 0]]]}}, 400, "exactly one"),
    ("binData number", {"binData": 42}, 400, "binData: must be a base64 string"),
    ("binData empty", {"binData": ""}, 400, "binData: is empty"),
    ("binData not base64", {"binData": "%%%not base64%%%"}, 400, "binData: is not valid base64"),
    ("binData text", {"binData": b64(b"hello, I am not an image")}, 400, "binData: is not a JPEG or PNG"),
    ("truncated jpeg", {"binData": b64(JPEG[: len(JPEG) // 2])}, 400, "binData: image is corrupt or truncated"),
    ("corrupt jpeg", {"binData": b64(JPEG[:600] + bytes(4000) + JPEG[4600:])}, 400, "binData: "),
    ("gif", {"binData": b64(GIF.getvalue())}, 400, "binData: image format GIF is not accepted"),
    ("pixel bomb", {"binData": b64(png_header_only(40000, 40000))}, 413, "over the limit"),
    ("zero size png", {"binData": b64(png_header_only(0, 0))}, 400, "binData: "),
    ("jsonData without image", {"jsonData": {"picture": "x"}}, 400, 'jsonData: must be an object with "image"'),
    ("jsonData image bad", {"jsonData": {"image": "@@@"}}, 400, "jsonData.image: is not valid base64"),
    ("data not object", {"data": [1, 2]}, 400, "data: must be an object"),
    ("data tensor", {"data": {"tensor": {"shape": [1], "values": [1]}}}, 400, "only data.ndarray"),
    ("ndarray 2d", {"data": {"ndarray": [[0, 1], [2, 3]]}}, 400, "data.ndarray: must have shape HxWx3"),
    ("ndarray 4 channels", {"data": {"ndarray": [[[0, 0, 0, 0]]]}}, 400, "HxWx3"),
    ("ndarray ragged", {"data": {"ndarray": [[[0, 0, 0]], [[0, 0, 0], [1, 1, 1]]]}}, 400, "ragged"),
    ("ndarray strings", {"data": {"ndarray": [[["a", "b", "c"]]]}}, 400, "integers 0..255"),
    ("ndarray fractional", {"data": {"ndarray": [[[0.5, 1, 2]]]}}, 400, "fractional"),
    ("ndarray out of range", {"data": {"ndarray": [[[0, 256, 2]]]}}, 400, "0..255"),
    ("ndarray negative", {"data": {"ndarray": [[[0, -1, 2]]]}}, 400, "0..255"),
    ("ndarray NaN", b'{"data": {"ndarray": [[[NaN, 1, 2]]]}}', 400, "NaN"),
    ("ndarray empty", {"data": {"ndarray": []}}, 400, "data.ndarray"),
    ("ndarray bools", {"data": {"ndarray": [[[True, False, True]]]}}, 400, "integers 0..255"),
    ("ndarray bools among ints", {"data": {"ndarray": [[[False, 0, 0]]]}}, 400, "got true/false"),
]


@pytest.mark.parametrize("case, payload, status, words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_4xx_naming_the_problem_and_the_next_request_works(
    synthetic_server, case, payload, status, words
):
    resp = predict(synthetic_server, payload)
    assert resp.status_code == status, resp.text
    body = resp.json()
    conforms(body, "ErrorResponse")
    assert words in body["status"]["info"]
    assert "Traceback" not in resp.text
    assert detections(predict(synthetic_server, {"binData": PHOTO.b64}))


def test_limits_are_configurable_and_checked_before_decoding(synthetic_model, tmp_path):
    path, sha = synthetic_model
    server = start(tmp_path, model_uri=path.as_uri(), model_sha256=sha, max_pixels=150_000, max_request_bytes=60_000)
    try:
        server.wait_ready()
        big = predict(server, {"binData": b64(png_header_only(1000, 1000))})
        assert big.status_code == 413 and "over the limit of 150000" in big.json()["status"]["info"]
        body = predict(server, {"binData": "A" * 200_000})
        assert body.status_code == 413 and "request body" in body.json()["status"]["info"]
        assert predict(server, {"binData": PHOTO.b64}).status_code == 200  # 450x300, 32 kB: within both
    finally:
        server.stop()


def chunked(body: bytes, size: int = 1 << 20):
    """A generator body: requests sends it with Transfer-Encoding: chunked and no Content-Length."""
    for at in range(0, len(body), size):
        yield body[at : at + size]


def test_a_chunked_body_over_the_limit_is_a_413_and_the_server_goes_on(synthetic_server):
    """No Content-Length to refuse it by, straight to the pod's port: still refused, not read whole."""
    huge = json.dumps({"binData": "A" * (40 << 20)}).encode()  # 40 MB, over the 20 MiB default
    resp = requests.post(
        synthetic_server.url + "/api/v0.1/predictions",
        data=chunked(huge),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert resp.status_code == 413, resp.text[:300]
    assert "request body" in resp.json()["status"]["info"] and "over the limit" in resp.json()["status"]["info"]
    photo = json.dumps({"binData": PHOTO.b64}).encode()
    small = requests.post(
        synthetic_server.url + "/api/v0.1/predictions",
        data=chunked(photo, 4096),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert small.status_code == 200 and detections(small)  # a chunked body within the limit is served
    assert detections(predict(synthetic_server, {"binData": PHOTO.b64}))


# --- the model artifact: verified before onnxruntime sees it --------------------------


def tampered_copy(model: Path, folder: Path) -> Path:
    """The model with one byte appended: a file whose sha256 no longer matches the one configured."""
    tampered = folder / "tampered.onnx"
    tampered.write_bytes(model.read_bytes() + b"\x00")
    return tampered


def refused(server, words: str) -> None:
    """Alive, never ready, says why on /health/status, in the log, and to a client."""
    server.wait_alive()
    deadline = time.monotonic() + 60  # the model loads in the background: wait for its verdict
    health = requests.get(server.url + "/health/status", timeout=5)
    while "not loaded yet" in health.text and time.monotonic() < deadline:
        time.sleep(0.2)
        health = requests.get(server.url + "/health/status", timeout=5)
    assert health.status_code == 503
    assert words in health.json()["status"]["info"]
    resp = predict(server, {"binData": PHOTO.b64})
    assert resp.status_code == 503 and words in resp.json()["status"]["info"]
    assert "MODEL REJECTED" in server.log_tail(50_000)


def test_tampered_model_is_refused_naming_both_digests(synthetic_model, tmp_path):
    path, sha = synthetic_model
    tampered = tampered_copy(path, tmp_path)
    server = start(tmp_path, model_uri=tampered.as_uri(), model_sha256=sha)
    try:
        refused(server, f"sha256 mismatch for {tampered.as_uri()}: expected {sha}, got ")
    finally:
        server.stop()


def test_juju_status_quotes_the_real_servers_refusal(synthetic_model, tmp_path):
    """The charm reads a refused model's reason from the real wrapper's /health/status (pod_health.py)."""
    import pod_health
    from serving_status import assess
    from support.pods import model_pod

    path, sha = synthetic_model
    tampered = tampered_copy(path, tmp_path)
    server = start(tmp_path, model_uri=tampered.as_uri(), model_sha256=sha)
    try:
        server.wait_alive()
        pod = model_pod("running-unready", sha, health_port=server.http_port)  # podIP 127.0.0.1
        reasons = pod_health.ask([pod])
        sdep = {"metadata": {"name": "scratch", "namespace": "kubeflow"}, "status": {"state": "Creating"}}
        status = assess("scratch", sha, sdep, [pod], server_reasons=reasons)
        assert status.kind == "blocked"
        assert status.message.startswith(
            f"model refused by the server: sha256 mismatch for {tampered.as_uri()}: expected {sha[:12]}…, got "
        )
    finally:
        server.stop()


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"this is not a model" * 100)
    server = start(tmp_path, model_uri=junk.as_uri(), model_sha256=hashlib.sha256(junk.read_bytes()).hexdigest())
    try:
        refused(server, "not a loadable ONNX model")
    finally:
        server.stop()


def test_unreachable_uri_is_refused(tmp_path):
    server = start(tmp_path, model_uri="http://127.0.0.1:9/model.onnx", model_sha256="0" * 64, download_timeout_s=5.0)
    try:
        refused(server, "cannot download http://127.0.0.1:9/model.onnx")
    finally:
        server.stop()


def test_missing_file_is_refused(tmp_path):
    server = start(tmp_path, model_uri=(tmp_path / "nope.onnx").as_uri(), model_sha256="0" * 64)
    try:
        refused(server, "cannot read model file")
    finally:
        server.stop()


def test_model_over_the_size_limit_is_refused(synthetic_model, tmp_path):
    path, sha = synthetic_model
    server = start(tmp_path, model_uri=path.as_uri(), model_sha256=sha, max_model_bytes=100)
    try:
        refused(server, "over the limit of 100")
    finally:
        server.stop()


def test_model_over_http_loads(synthetic_model, tmp_path, http_file_server):
    path, sha = synthetic_model
    url = http_file_server(path.parent) + "/" + path.name
    server = start(tmp_path, model_uri=url, model_sha256=sha)
    try:
        server.wait_ready()
        assert detections(predict(server, {"binData": PHOTO.b64}))
    finally:
        server.stop()


def test_model_over_s3_loads_with_credentials_from_the_environment(synthetic_model, tmp_path, s3_store, monkeypatch):
    path, sha = synthetic_model
    endpoint = s3_store(bucket="models", key="scratch/v1.onnx", data=path.read_bytes())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "edge")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "edge-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    server = start(tmp_path, model_uri="s3://models/scratch/v1.onnx", model_sha256=sha)
    try:
        server.wait_ready()
        assert detections(predict(server, {"binData": PHOTO.b64}))
    finally:
        server.stop()


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/api/v0.1/nothing"),
        ("GET", "/api/v0.1/predictions"),
        ("DELETE", "/predict"),
        ("PUT", "/health/status"),
    ],
)
def test_unknown_paths_and_methods_get_a_4xx_not_the_wrappers_500(synthetic_server, method, path):
    # The wrapper's Flask app serves static files at "" (GET on any path), so which of 404/405 an
    # unknown request gets depends on its method; without our handler both were a 500.
    resp = requests.request(method, synthetic_server.url + path, timeout=10)
    assert resp.status_code in (404, 405)
    conforms(resp.json(), "ErrorResponse")
    assert path in resp.json()["status"]["info"]


def test_a_download_that_trickles_is_refused_at_the_timeout(tmp_path):
    """A store that answers but never finishes must not hang the server: refused at download_timeout_s."""
    import http.server
    import threading

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "10000000")
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b"\0" * 65536)
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/model.onnx"
    server = start(tmp_path, model_uri=url, model_sha256="0" * 64, download_timeout_s=2.0, retry_seconds=600.0)
    try:
        refused(server, f"download of {url} took longer than 2 s")
    finally:
        server.stop()
        httpd.shutdown()


def test_a_store_that_comes_back_is_retried_until_the_model_serves(synthetic_model, tmp_path, http_file_server):
    """A bad link heals by itself: the first download fails, a later health check retries it."""
    import shutil

    path, sha = synthetic_model
    store = tmp_path / "store"
    store.mkdir()
    base = http_file_server(store)  # serves an empty folder: the model is not there yet (404)
    server = start(tmp_path, model_uri=f"{base}/later.onnx", model_sha256=sha, retry_seconds=1.0)
    try:
        server.wait_alive()
        assert requests.get(server.url + "/health/status", timeout=5).status_code == 503
        shutil.copy(path, store / "later.onnx")
        deadline = time.monotonic() + 30
        while requests.get(server.url + "/health/status", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.5)
        assert detections(predict(server, {"binData": PHOTO.b64}))
    finally:
        server.stop()


# --- bodies the wrapper cannot parse, envelopes of the wrong type ----------------------

NESTED = '{"jsonData": ' + "[" * 5000 + "]" * 5000 + "}"
FEEDBACK_PATHS = ["/api/v0.1/feedback", "/api/v1.0/feedback"]


@pytest.mark.parametrize("path", [*PREDICT_PATHS, *FEEDBACK_PATHS])
def test_json_nested_5000_levels_deep_is_a_400_naming_the_problem(synthetic_server, path):
    """Python's json gives up past ~1000 levels with a RecursionError the wrapper answered as a 500."""
    resp = predict(synthetic_server, NESTED, path)
    assert resp.status_code == 400, resp.text[:300]
    conforms(resp.json(), "ErrorResponse")
    assert "nested too deeply" in resp.json()["status"]["info"]
    assert "Traceback" not in resp.text and "recursion" not in resp.text


def test_nested_json_in_the_wrappers_form_field_is_a_400_too(synthetic_server):
    """The wrapper also reads a `json` form field (seldon_core/flask_utils.py: get_request)."""
    resp = requests.post(synthetic_server.url + "/api/v0.1/predictions", data={"json": NESTED}, timeout=30)
    assert resp.status_code == 400, resp.text[:300]
    assert "nested too deeply" in resp.json()["status"]["info"]
    # and the worker that answered is still serving
    assert detections(predict(synthetic_server, {"binData": PHOTO.b64}))


@pytest.mark.parametrize(
    ("meta", "field"),
    [("oops", "meta"), ([1], "meta"), (None, "meta"), ({"tags": "line-3"}, "meta.tags"), ({"puid": 7}, "meta.puid")],
)
def test_a_meta_of_the_wrong_type_is_a_400_naming_it(synthetic_server, meta, field):
    """openapi.yaml: `meta` is an object (Seldon's Meta); a good image beside a bad one is still refused."""
    resp = predict(synthetic_server, {"binData": PHOTO.b64, "meta": meta})
    assert resp.status_code == 400, resp.text[:300]
    conforms(resp.json(), "ErrorResponse")
    assert resp.json()["status"]["info"].startswith(f"{field}: must be"), resp.json()


def test_a_seldon_meta_object_is_accepted(synthetic_server):
    meta = {"puid": "a1b2", "tags": {"line": "3"}, "routing": {}, "requestPath": {}, "metrics": []}
    assert detections(predict(synthetic_server, {"binData": PHOTO.b64, "meta": meta}))


# --- a download slower than the pod's worker timeout ---------------------------------


def test_a_model_download_longer_than_the_pods_worker_timeout_ends_ready(tmp_path):
    """The pod's `seldon.io/rest-timeout` (from render()) is gunicorn's worker timeout in the wrapper
    (seldon_core/microservice.py, v1.17.1); a 60 s download must not get the worker killed."""
    import http.server
    import threading

    from conftest import shipped_variant
    from manifests import render
    from support.server_process import ServerProcess

    annotations = render("scratch", "site", {"gateway": "site/gateway"})[0]["spec"]["annotations"]
    worker_timeout = int(annotations["seldon.io/rest-timeout"]) / 1000
    download_s = 2 * worker_timeout
    model, sha = shipped_variant("int8")
    data = model.read_bytes()
    steps = 120

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            size = -(-len(data) // steps)
            try:
                for i in range(0, len(data), size):
                    time.sleep(download_s / steps)
                    self.wfile.write(data[i : i + size])
            except OSError:
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/model-int8.onnx"
    params = {"model_uri": url, "model_sha256": sha, "model_name": "scratch", "download_timeout_s": 4 * download_s}
    server = ServerProcess(params, annotations=annotations, log_path=tmp_path / "server.log")
    started = time.monotonic()
    server.start()
    try:
        server.wait_alive(timeout=60)
        boots = server.log_tail(10_000_000).count("Booting worker")
        health = requests.get(server.url + "/health/status", timeout=5)
        assert health.status_code == 503 and "not loaded yet" in health.json()["status"]["info"], health.text
        early = predict(server, {"binData": PHOTO.b64})
        assert early.status_code == 503, early.text
        assert early.json()["status"]["reason"] == "MODEL_NOT_READY" and "Traceback" not in early.text
        server.wait_ready(timeout=3 * download_s)
        took = time.monotonic() - started
        log = server.log_tail(10_000_000)
        assert f"'timeout': {int(worker_timeout)}," in log, "the pod's worker timeout was not in force"
        assert took > worker_timeout * 1.5, f"the download took only {took:.0f}s"
        assert "WORKER TIMEOUT" not in log and log.count("Booting worker") == boots, log[-3000:]
        assert predict(server, {"binData": PHOTO.b64}).json()["jsonData"]["model"]["sha256"] == sha
    finally:
        server.stop()
        httpd.shutdown()


# --- two workers: each loads its own copy ----------------------------------------------


def test_with_two_workers_every_request_after_ready_is_answered(tmp_path):
    """The pod is Ready once the worker that answered the probe has loaded; its sibling may still be
    fetching. Here the store hands out one copy at a time (the gRPC server loads one too, and which
    process asks first is not ours to choose) until the server is Ready, and holds the rest until
    the server has answered its first request: every request sent the moment the server is Ready
    is answered with the model, none with a 503, so a roll to a 2-worker pod drops nothing (the
    bench's 2-worker row found one 503 before the server waited for a worker's first load)."""
    import http.server
    import threading
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from conftest import shipped_variant
    from support.server_process import ServerProcess

    model, sha = shipped_variant("int8")
    data = model.read_bytes()
    served, handed = [], []
    copies = threading.Semaphore(1)  # downloads the store may answer now
    release = threading.Event()  # then all of them

    class LateCopies(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            served.append(time.monotonic())
            while not release.is_set() and not copies.acquire(timeout=0.1):
                pass
            handed.append(not release.is_set())
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LateCopies)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/model-int8.onnx"
    params = {"model_uri": url, "model_sha256": sha, "model_name": "scratch"}
    server = ServerProcess(params, workers=2, log_path=tmp_path / "server.log")
    server.start()
    try:
        server.wait_alive(timeout=60)
        deadline = time.monotonic() + 120
        while not server.readiness()[0]:  # one more copy whenever the last one did not make it Ready
            assert time.monotonic() < deadline, server.log_tail()
            try:
                server.wait_ready(timeout=5)
            except TimeoutError:
                copies.release()
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(predict, server, {"binData": PHOTO.b64}) for _ in range(16)]
            wait(futures, timeout=60, return_when=FIRST_COMPLETED)
            late = len(served) > sum(handed)  # a download was still held: a worker was loading
            release.set()
            answers = [f.result(timeout=60) for f in futures]
        assert late, "no worker was still loading when the requests came: nothing was tested"
        assert [a.status_code for a in answers] == [200] * 16, [a.text[:200] for a in answers if a.status_code != 200]
        assert {a.json()["jsonData"]["model"]["sha256"] for a in answers} == {sha}
    finally:
        release.set()
        server.stop()
        httpd.shutdown()
