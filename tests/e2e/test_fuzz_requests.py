"""Property-based fuzzing of every accepted request shape, against the real server and through Envoy.

Never a 5xx, never a hang, never a dead or restarted worker; every refusal is
a 4xx whose `info` names what is wrong. FUZZ_EXAMPLES sets the number of cases
per test (a few hundred in CI; `tox -e fuzz` runs 10 000).
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import struct
import zlib

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import photos
from support.site_process import SiteProcess

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("CI") is not None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
JPEG = photos()[0].path.read_bytes()
NESTED = '{"jsonData": ' + "[" * 5000 + "]" * 5000 + "}"  # past Python's json recursion limit
SMALL = io.BytesIO()
Image.open(photos()[0].path).resize((45, 30)).save(SMALL, format="PNG")
PNG = SMALL.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )  # fmt: skip


def mutate(data: bytes, seed: int, flips: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(flips):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
image_bytes = st.one_of(
    st.binary(max_size=2000),
    st.builds(lambda n: JPEG[:n], st.integers(0, len(JPEG))),
    st.builds(mutate, st.just(JPEG), st.integers(0, 2**32), st.integers(1, 40)),
    st.builds(mutate, st.just(PNG), st.integers(0, 2**32), st.integers(1, 10)),
    st.builds(png_claiming, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    st.just(b""),
)
pixel = st.one_of(st.integers(-300, 300), st.floats(allow_nan=False), st.text(max_size=2), st.none(), st.booleans())
arrays = st.recursive(pixel, lambda c: st.lists(c, max_size=5), max_leaves=60)
bodies = st.one_of(
    json_values.map(json.dumps),
    st.builds(lambda d: json.dumps({"binData": b64(d)}), image_bytes),
    st.builds(lambda m: json.dumps({"binData": b64(JPEG), "meta": m}), json_values),
    st.builds(lambda d: json.dumps({"jsonData": {"image": b64(d)}}), image_bytes),
    st.builds(lambda v: json.dumps({"binData": v}), json_values),
    st.builds(lambda v: json.dumps({"jsonData": v}), json_values),
    st.builds(lambda v: json.dumps({"data": v}), json_values),
    st.builds(lambda a: json.dumps({"data": {"ndarray": a}}), arrays),
    st.builds(lambda s: json.dumps({"binData": s}), st.text(max_size=200)),
    st.sampled_from(
        [
            '{"data": {"ndarray": [[[NaN, 1, 2]]]}}',
            '{"data": {"ndarray": [[[Infinity, -Infinity, 0]]]}}',
            '{"binData": "' + "A" * 100_000 + '"}',
            "",
            "{",
            "null",
            NESTED,
            '{"data": ' + "{" * 3000 + "}" * 3000 + "}",
        ]
    ),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
)


def check(resp: requests.Response) -> None:
    assert resp.status_code < 500, f"{resp.status_code}: {resp.text[:300]}"
    if resp.status_code != 200:
        body = resp.json()
        assert body["status"]["info"], body
        assert "Traceback" not in resp.text


def worker_restarts(log: str) -> int:
    return log.count("Booting worker") + log.count("WORKER TIMEOUT") + log.count("Worker exiting")


@pytest.fixture(scope="module")
def fuzz_site(synthetic_model, tmp_path_factory):
    path, sha = synthetic_model
    site = SiteProcess(["--set", f"scratch.model-uri={path.as_uri()}", "--set", f"scratch.model-sha256={sha}"]).start()
    yield site
    site.stop()


@pytest.fixture(scope="module")
def boots_before(synthetic_server) -> int:
    """Worker boots logged before fuzzing (the REST and the metrics servers' workers)."""
    return worker_restarts(synthetic_server.log_tail(10_000_000))


@FUZZ
@given(body=bodies)
def test_the_server_never_fails_on_any_body(synthetic_server, boots_before, body):
    check(requests.post(synthetic_server.url + "/api/v0.1/predictions", data=body.encode("utf-8", "surrogatepass"),
                        headers={"Content-Type": "application/json"}, timeout=20))  # fmt: skip


@FUZZ
@given(body=bodies, path=st.sampled_from(["api/v0.1/predictions", "api/v1.0/predictions", "predict"]))
def test_the_gateway_never_fails_on_any_body(fuzz_site, body, path):
    check(requests.post(f"{fuzz_site.url}/model/scratch/{path}", data=body.encode("utf-8", "surrogatepass"),
                        headers={"Content-Type": "application/json"}, timeout=20))  # fmt: skip


@FUZZ
@given(meta=json_values.filter(lambda m: not isinstance(m, dict)))
def test_a_meta_that_is_not_an_object_is_a_400_naming_it(synthetic_server, fuzz_site, meta):
    """A good image beside a `meta` of the wrong type (openapi.yaml: an object) is refused, both ways in."""
    body = json.dumps({"binData": b64(JPEG), "meta": meta})
    for url in (synthetic_server.url, f"{fuzz_site.url}/model/scratch"):
        resp = requests.post(f"{url}/api/v0.1/predictions", data=body, headers={"Content-Type": "application/json"},
                             timeout=20)  # fmt: skip
        assert resp.status_code == 400, resp.text[:300]
        assert resp.json()["status"]["info"].startswith("meta: must be an object"), resp.text[:300]


@pytest.mark.parametrize("path", ["api/v0.1/predictions", "api/v1.0/predictions", "predict", "api/v0.1/feedback"])
def test_json_nested_5000_levels_is_a_400_through_the_gateway(fuzz_site, path):
    resp = requests.post(f"{fuzz_site.url}/model/scratch/{path}", data=NESTED,
                         headers={"Content-Type": "application/json"}, timeout=20)  # fmt: skip
    assert resp.status_code == 400, resp.text[:300]
    assert "nested too deeply" in resp.json()["status"]["info"]


def test_no_worker_died_and_the_server_still_answers(synthetic_server, fuzz_site, boots_before):
    """Runs after the fuzzing above (file order): every worker survived every case."""
    assert worker_restarts(synthetic_server.log_tail(10_000_000)) == boots_before, synthetic_server.log_tail(3000)
    good = json.dumps({"binData": b64(JPEG)})
    for url in (synthetic_server.url + "/api/v0.1/predictions", fuzz_site.url + "/model/scratch/api/v0.1/predictions"):
        assert (
            requests.post(url, data=good, headers={"Content-Type": "application/json"}, timeout=20).status_code == 200
        )
