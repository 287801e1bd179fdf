"""A canary on the local site: the real Envoy splits /model/scratch/ between two real model servers.

The split is checked against the weight with a binomial interval (Envoy picks a weighted
cluster at random per request), and promote / abort run under a steady client that must
see no failed request.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import requests

from conftest import photos
from support.site_process import SiteProcess
from support.steady_client import SteadyClient
from support.synthetic_yolo import build

BODY = json.dumps({"binData": photos()[0].b64})
HEADERS = {"Content-Type": "application/json"}
WEIGHT = 30
REQUESTS = 400
SHARE_WINDOW = 200  # answers before a promote/abort, whose split is checked against the weight
CONFIDENCE = 0.999


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Two tiny models that answer differently: a response's model.sha256 says which one served it."""
    d = tmp_path_factory.mktemp("canary-models")
    out = {}
    for name, boxes in {"stable": 1, "canary": 2}.items():
        path = d / f"{name}.onnx"
        cands = [(60 + 100 * i, 100, 40, 20, 0, 0.9) for i in range(boxes)]
        out[name] = (path, build(path, (256, 384), ["scratch"], cands))
    return out


def args(models: dict, weight: int = WEIGHT, canary: tuple[Path, str] | None = None) -> list[str]:
    canary = canary or models["canary"]
    sets = [
        f"scratch.model-uri={models['stable'][0].as_uri()}",
        f"scratch.model-sha256={models['stable'][1]}",
        f"scratch.canary-model-uri={canary[0].as_uri()}",
        f"scratch.canary-model-sha256={canary[1]}",
        f"scratch.canary-weight={weight}",
    ]
    return [a for s in sets for a in ("--set", s)]


def call(site: SiteProcess) -> requests.Response:
    return requests.post(f"{site.url}/model/scratch/api/v0.1/predictions", data=BODY, headers=HEADERS, timeout=30)


def binomial_interval(n: int, p: float, confidence: float) -> tuple[int, int]:
    """The central interval [lo, hi] holding ``confidence`` of Binomial(n, p), computed exactly."""
    pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    tail = (1 - confidence) / 2
    lo, acc = 0, 0.0
    while acc + pmf[lo] < tail:
        acc += pmf[lo]
        lo += 1
    hi, acc = n, 0.0
    while acc + pmf[hi] < tail:
        acc += pmf[hi]
        hi -= 1
    return lo, hi


def test_binomial_interval_is_right():
    assert binomial_interval(400, 0.3, 0.999) == (91, 151)  # exact; the normal approximation gives 120 +- 30
    assert binomial_interval(10, 0.0, 0.999) == (0, 0)


@pytest.fixture(scope="module")
def split_site(models):
    site = SiteProcess(args(models)).start(ready_lines=2)
    yield site
    site.stop()


def test_the_canary_answers_its_weight_of_the_requests(split_site, models):
    shas = [call(split_site) for _ in range(REQUESTS)]
    assert all(r.status_code == 200 for r in shas), [r.text for r in shas if r.status_code != 200][:3]
    counts = {
        name: sum(r.json()["jsonData"]["model"]["sha256"] == sha for r in shas) for name, (_, sha) in models.items()
    }
    lo, hi = binomial_interval(REQUESTS, WEIGHT / 100, CONFIDENCE)
    print(f"canary share: {counts['canary']}/{REQUESTS} (99.9% interval for {WEIGHT}%: {lo}-{hi}); {counts}")
    assert counts["stable"] + counts["canary"] == REQUESTS
    assert lo <= counts["canary"] <= hi


def test_the_site_says_both_models_are_ready(split_site, models):
    canary = models["canary"][1][:7]
    assert any(line.startswith(f"ready: scratch sha {models['stable'][1][:7]}") for line in split_site.out)
    assert any(line.startswith(f"ready: scratch canary sha {canary} answers {WEIGHT}% of") for line in split_site.out)


def test_a_refused_canary_takes_no_request(models, tmp_path):
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(models["canary"][0].read_bytes()[:-1] + b"\x01")
    site = SiteProcess(args(models, canary=(tampered, models["canary"][1]))).start(ready_lines=1)
    try:
        site.wait_for(lambda: any("canary refused" in line for line in site.err), timeout=60)
        answers = {call(site).json()["jsonData"]["model"]["sha256"] for _ in range(50)}
        assert answers == {models["stable"][1]}
        refusal = next(line for line in site.err if "canary refused" in line)
        assert "sha256 mismatch" in refusal and "it takes no request" in refusal
    finally:
        site.stop()


@pytest.mark.parametrize("verb", ["promote", "abort"])
def test_promote_and_abort_under_load_drop_no_request(models, verb):
    site = SiteProcess(args(models)).start(ready_lines=2)
    stable, canary = models["stable"][1], models["canary"][1]
    after = canary if verb == "promote" else stable
    try:
        with SteadyClient(lambda: call(site), max_requests=20000) as client:
            client.wait_for_answers(SHARE_WINDOW, timeout=120)
            started = len(client.shas)
            done = site.reload_with(f"--{verb}", "scratch")
            assert done.returncode == 0, done.stderr
            client.wait_for_run(after, 60, timeout=120)
        print(
            f"{verb}: {len(client.shas)} answers, {len(client.failures)} failed; "
            f"{len(client.shas) - started} after the reload was sent"
        )
        assert client.failures == []
        # Before the reload, the canary answered its share of a window fixed in advance.
        before = client.shas[:SHARE_WINDOW]
        lo, hi = binomial_interval(SHARE_WINDOW, WEIGHT / 100, CONFIDENCE)
        assert before.count(stable) + before.count(canary) == SHARE_WINDOW
        assert lo <= before.count(canary) <= hi, (verb, before.count(canary), lo, hi)
        # From the reload on: only the two models, then only the one left, for good.
        gone = stable if verb == "promote" else canary  # the model no server runs any more
        last_old = max(i for i, sha in enumerate(client.shas) if sha == gone)
        assert set(client.shas[started:]) <= {stable, canary}
        assert set(client.shas[last_old + 1 :]) == {after} and len(client.shas) - last_old - 1 >= 60
        assert "refused" not in "\n".join(site.out + site.err)
    finally:
        site.stop()


def test_a_reload_naming_no_canary_is_refused_before_it_reaches_the_site(models):
    site = SiteProcess(
        [
            "--set",
            f"scratch.model-uri={models['stable'][0].as_uri()}",
            "--set",
            f"scratch.model-sha256={models['stable'][1]}",
        ]
    ).start()
    try:
        done = site.reload_with("--promote", "scratch")
        assert done.returncode == 2
        assert "scratch has no canary" in done.stderr
        done = site.reload_with("--set", "scratch.canary-weight=150")
        assert done.returncode == 2 and "canary-weight" in done.stderr
        assert call(site).status_code == 200
    finally:
        site.stop()
