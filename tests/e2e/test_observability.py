"""The dashboard and alert rules against what the real server exports.

One real seldon-core-microservice (two gunicorn workers, the metrics path
Seldon sets in a pod) serves a few good and bad images; its metrics
endpoint must then hold every series the dashboard and the alert rules
read, with the labels they group by, and counts that match what the
clients saw.
"""

from __future__ import annotations

import pytest
import requests

from conftest import photos
from support.promql import TARGET_LABELS, by_clauses, expressions, metric_names, parse_exposition
from support.server_process import ServerProcess

SERVER_PREFIX = "defect_"


@pytest.fixture(scope="module")
def scraped(synthetic_model, tmp_path_factory):
    """(series, what the clients saw) after 3 good and 2 bad requests."""
    path, sha = synthetic_model
    server = ServerProcess(
        {"model_name": "scratch", "model_uri": path.as_uri(), "model_sha256": sha},
        workers=2,
        env={"PREDICTIVE_UNIT_METRICS_ENDPOINT": "/prometheus"},  # what Seldon sets in the pod
        log_path=tmp_path_factory.mktemp("observability") / "server.log",
    ).start()
    try:
        server.wait_ready()
        seen = {"images": 0, "detections": 0, "inference_s": 0.0, "bad": 0}
        for photo in photos()[:3]:
            body = requests.post(server.url + "/api/v0.1/predictions", json={"binData": photo.b64}, timeout=30).json()
            seen["images"] += 1
            seen["detections"] += len(body["jsonData"]["detections"])
            seen["inference_s"] += body["jsonData"]["inference_ms"] / 1000
        for payload in ({"binData": "bm90IGFuIGltYWdl"}, {"data": {"ndarray": [[1, 2]]}}):
            resp = requests.post(server.url + "/api/v0.1/predictions", json=payload, timeout=30)
            assert resp.status_code == 400
            seen["bad"] += 1
        text = requests.get(f"http://127.0.0.1:{server.metrics_port}/prometheus", timeout=10).text
        return parse_exposition(text), seen
    finally:
        server.stop()


def total(series: dict, name: str, **match: str) -> float:
    return sum(
        float(labels["__value__"])
        for labels in series.get(name, [])
        if all(labels.get(k) == v for k, v in match.items())
    )


@pytest.mark.parametrize("where, expr", list(expressions()))
def test_every_server_series_a_query_reads_is_exported_with_its_labels(scraped, where, expr):
    series, _ = scraped
    for name in metric_names(expr):
        if not name.startswith(SERVER_PREFIX):
            continue  # `up` comes from Prometheus
        assert name in series, f"{where}: the server exports no {name}"
        exported = set().union(*(labels.keys() for labels in series[name]))
        for group in by_clauses(expr):
            missing = group - TARGET_LABELS - exported
            assert not missing, f"{where}: {name} has no label {missing}"


def test_the_counts_match_what_the_clients_saw(scraped):
    series, seen = scraped
    assert total(series, "defect_images_total") == seen["images"]
    assert total(series, "defect_detections_total") == seen["detections"]
    assert total(series, "defect_errors_total", reason="BAD_INPUT") == seen["bad"]
    assert total(series, "defect_inference_seconds_count") == seen["images"]


def test_inference_time_is_recorded_in_seconds(scraped):
    """The dashboard's axis and the 1 s alert threshold assume seconds."""
    series, seen = scraped
    assert total(series, "defect_inference_seconds_sum") == pytest.approx(seen["inference_s"], abs=0.005)
