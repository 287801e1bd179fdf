"""The dashboard and alert rules against a real Prometheus (Debian's 2.42) and the real server.

One real seldon-core-microservice (two gunicorn workers, the metrics path Seldon sets in a pod)
is scraped by a real Prometheus with the scrape job the charm publishes, labelled as the COS
consumer labels it; beside it, the real line watcher (scripts/predict --watch, a real Mosquitto,
the local site as the stable model and a second real server as the shadow) is scraped with the
static job the README documents for it. After a few good and bad requests and a few photos
dropped, every dashboard query, the shadow row's included, with Grafana's template variables
filled in the way the dashboard defines them, must return series through Prometheus' HTTP API,
and the counts must match what the clients saw. Every alert rule, as the
charm publishes it, passes ``promtool test rules``: it fires on the series that should fire it,
with its labels and annotations, and stays silent otherwise.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
import requests
import yaml

import observability
from conftest import photos
from support.mosquitto import Mosquitto, require_mosquitto
from support.prometheus import Prometheus, consumer_job, require
from support.server_process import ROOT, ServerProcess, free_port
from support.site_process import SiteProcess

# The topology the rules test (tests/data/prometheus/onnx-model.rules.test.yaml) is written for.
TOPO = observability.topology("kubeflow", "8a6c1f2e-4b7d-4c1e-9f00-5e0d1c2b3a49", "scratch", "scratch/0", "onnx-model")
WORKERS = 2
BAD_REQUESTS = [{"binData": "bm90IGFuIGltYWdl"}, {"data": {"ndarray": [[1, 2]]}}]
RULES_TEST = ROOT / "tests/data/prometheus/onnx-model.rules.test.yaml"
DASHBOARD = observability.DASHBOARDS / "onnx-model.json"
# Grafana's $__rate_interval is max($__interval + scrape interval, 4 x scrape interval); the COS
# datasource keeps Grafana's default scrape interval of 15 s.
RATE_INTERVAL = "1m"
README = ROOT / "README.md"


def watcher_job(target: str) -> dict:
    """The watcher's static scrape job exactly as the README's Observability section gives it, aimed at ``target``."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if "job_name: defect-inspection" in b]
    (job,) = yaml.safe_load(block)["scrape_configs"]
    (config,) = job["static_configs"]
    config["targets"] = [target]
    return job


@pytest.fixture(scope="module")
def line_watcher(synthetic_model, tmp_path_factory):
    """(the real watcher, its metrics port): the local site as the stable model, a real server as the
    shadow (the synthetic detector, a "scratch" on every photo, so some verdicts flip), a real Mosquitto."""
    from test_inspection_mqtt import Watcher

    require_mosquitto()
    sys.path.insert(0, str(ROOT / "scripts"))
    from inspection.venv import predict_python

    predict_python()  # the watcher's venv, built before any clock starts
    path, sha = synthetic_model
    folder = tmp_path_factory.mktemp("line")
    with ExitStack() as stack:
        broker = Mosquitto(folder / "broker").start()
        stack.callback(broker.stop)
        site = SiteProcess([]).start()
        stack.callback(site.stop)
        shadow = ServerProcess(
            {"model_name": "scratch", "model_uri": path.as_uri(), "model_sha256": sha}, log_path=folder / "shadow.log"
        ).start()
        stack.callback(shadow.stop)
        shadow.wait_ready()
        port = free_port()
        (folder / "watcher").mkdir()
        watcher = Watcher(folder / "watcher", site.url, broker.url("line/3/results"),
                          "--shadow", f"{shadow.url}/api/v0.1/predictions",
                          "--shadow-record", str(folder / "record"), "--metrics-port", str(port))  # fmt: skip
        stack.callback(watcher.stop)
        watcher.start()
        yield watcher, port


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def template_variables() -> list[dict]:
    return [v for v in json.loads(DASHBOARD.read_text())["templating"]["list"] if v["type"] == "query"]


def fill(expr: str, values: dict[str, str]) -> str:
    """Grafana's substitution of $name / ${name}, and of $__rate_interval."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, value in values.items():
        expr = re.sub(rf"\$(\{{{name}\}}|{name}\b)", value, expr)
    assert "$" not in expr, f"a template variable is left in {expr}"
    return expr


# --- alert rules: promtool test rules ---------------------------------------------------------


def test_every_alert_has_a_firing_and_a_silent_promtool_case():
    rules = {r["alert"] for g in observability.alert_rules(TOPO)["groups"] for r in g["rules"]}
    firing, silent = set(), set()
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert firing == rules, f"no firing case for {rules - firing}"
    assert silent == rules, f"no silent case for {rules - silent}"


def test_promtool_passes_the_rules_as_the_charm_publishes_them(tmp_path):
    promtool = require("promtool")
    # The charm substitutes %%juju_topology%% itself (observability.alert_rules) before COS sees them.
    (tmp_path / "onnx-model.rules").write_text(yaml.safe_dump(observability.alert_rules(TOPO)))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    for args in (["check", "rules", "onnx-model.rules"], ["test", "rules", RULES_TEST.name]):
        done = subprocess.run([promtool, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


# --- dashboard: a real Prometheus scraping the real server ------------------------------------


@pytest.fixture(scope="module")
def prometheus(synthetic_model, line_watcher, tmp_path_factory):
    """(Prometheus, what the clients saw, its job name) once it has scraped good and bad requests,
    and the watcher's comparisons of photos by the stable model and its shadow."""
    require("prometheus")
    path, sha = synthetic_model
    folder = tmp_path_factory.mktemp("observability")
    watcher, metrics_port = line_watcher
    server = ServerProcess(
        {"model_name": "scratch", "model_uri": path.as_uri(), "model_sha256": sha},
        workers=WORKERS,
        env={"PREDICTIVE_UNIT_METRICS_ENDPOINT": "/prometheus"},  # what Seldon sets in the pod
        log_path=folder / "server.log",
    ).start()
    prom = None
    try:
        server.wait_ready()
        pod = {
            "metadata": {
                "name": "scratch-default-0-model-7d9f",
                "labels": {"sha": sha[:16], "seldon-deployment-id": "scratch"},
            },
            "status": {"phase": "Running", "podIP": "127.0.0.1"},
        }
        (job,) = observability.scrape_jobs([pod], "sha", "scratch")
        # The pod's metrics port is the server's free port here.
        for config in job["static_configs"]:
            config["targets"] = [f"127.0.0.1:{server.metrics_port}"]
        job = consumer_job(job, TOPO)
        line_job = watcher_job(f"127.0.0.1:{metrics_port}")
        prom = Prometheus(folder / "prometheus", [job, line_job]).start()
        prom.wait_ready()
        prom.wait_scraped(job["job_name"])  # the target answers its first scrape before any traffic
        prom.wait_scraped(line_job["job_name"])

        seen = {"images": 0, "detections": 0, "inference_s": 0.0, "bad": 0}

        def send(good: list, bad: list) -> None:
            def post(payload):
                return requests.post(server.url + "/api/v0.1/predictions", json=payload, timeout=30)

            with ThreadPoolExecutor(len(good) + len(bad)) as pool:  # concurrent: both workers answer
                answers = list(pool.map(post, [{"binData": p.b64} for p in good] + bad))
            for resp in answers[: len(good)]:
                body = resp.json()
                seen["images"] += 1
                seen["detections"] += len(body["jsonData"]["detections"])
                seen["inference_s"] += body["jsonData"]["inference_ms"] / 1000
            for resp in answers[len(good) :]:
                assert resp.status_code == 400, resp.text
                seen["bad"] += 1

            def totals_match():
                images, errors = prom.query("sum(defect_images_total)"), prom.query("sum(defect_errors_total)")
                return (
                    images and float(images[0]["value"][1]) == seen["images"]
                    and errors and float(errors[0]["value"][1]) == seen["bad"]
                )  # fmt: skip

            prom.wait("a scrape after the requests", totals_match)

        def every_worker_has_its_series():
            return all(
                len(prom.query(name)) == WORKERS
                for name in ("defect_images_total", 'defect_errors_total{reason="BAD_INPUT"}')
            )

        # Each worker creates its series on their first increment, and rate() needs two samples
        # of a series: the first requests create every worker's series, the last ones are what
        # the panels must show as a rate.
        deadline = time.monotonic() + 120
        while not every_worker_has_its_series():
            assert time.monotonic() < deadline, "the requests never reached every worker"
            send(photos()[:2], BAD_REQUESTS)
        send(photos()[:3], BAD_REQUESTS)

        # The watcher: as for the workers, the first photos create the latency series of both
        # models, the later ones are the rates the shadow panels show.
        from test_inspection_mqtt import PHOTOS, drop

        dropped = 0

        def drop_photos(prefix: str) -> None:
            nonlocal dropped
            for name, data in PHOTOS:
                drop(watcher.drop, f"{prefix}-{name}", data)
                dropped += 1
            prom.wait(
                f"the {dropped} photos compared, in a scrape",
                lambda: total(prom, "sum(defect_shadow_photos_compared_total)") == dropped,
                timeout=120,
            )

        drop_photos("first")
        prom.wait("both models' latency series", lambda: len(prom.query("defect_shadow_request_seconds_count")) == 2)
        drop_photos("then")
        seen["compared"] = dropped
        yield prom, seen, job["job_name"]
    finally:
        if prom is not None:
            prom.stop()
        server.stop()


def test_the_target_carries_the_labels_the_dashboard_and_alerts_select_on(prometheus):
    prom, _, job = prometheus
    (target,) = [t for t in prom.targets() if t["labels"]["job"] == job]
    assert target["health"] == "up" and target["scrapeUrl"].endswith("/prometheus")
    assert re.fullmatch(r".*onnx-model-server.*", job)  # the rules' and dashboard's job matcher
    labels = target["labels"]
    assert labels["juju_model"] == "kubeflow" and labels["juju_application"] == "scratch"
    assert labels["pod"] == "scratch-default-0-model-7d9f" and len(labels["model_sha256"]) == 16


@pytest.mark.parametrize("variable", template_variables(), ids=lambda v: v["name"])
def test_each_dropdown_lists_the_application(prometheus, variable):
    """label_values(selector, label): what Grafana asks /api/v1/label/<label>/values for."""
    prom, _, _ = prometheus
    selector, label = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["query"]["query"]).groups()
    selector = fill(selector, {v["name"]: v["allValue"] for v in template_variables()})
    resp = requests.get(f"{prom.url}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10)
    assert resp.json()["status"] == "success", resp.text
    assert resp.json()["data"] == [{"juju_model": "kubeflow", "juju_application": "scratch"}[label]]


@pytest.mark.parametrize("selection", ["All", "one"])
@pytest.mark.parametrize("title, expr", dashboard_queries())
def test_every_dashboard_query_returns_series(prometheus, title, expr, selection):
    prom, _, _ = prometheus
    chosen = {"juju_model": "kubeflow", "juju_application": "scratch"}
    values = {v["name"]: v["allValue"] if selection == "All" else chosen[v["name"]] for v in template_variables()}
    query = fill(expr, values)
    result = prom.query(query)
    assert result, f"panel {title!r}: no series for {query}"
    for series in result:
        # Sums that dropped juju_application would add two models' traffic together.
        assert series["metric"].get("juju_application") == "scratch", f"panel {title!r}: {series['metric']}"
        value = float(series["value"][1])
        assert math.isfinite(value) and value >= 0, f"panel {title!r}: {series['metric']} = {value}"


def test_the_throughput_and_refusal_panels_see_the_traffic(prometheus):
    prom, _, _ = prometheus
    values = {v["name"]: v["allValue"] for v in template_variables()}
    panels = dict(dashboard_queries())
    for title in ("Throughput (images/s)", "Refused requests by reason (/s)"):
        result = prom.query(fill(panels[title], values))
        assert any(float(s["value"][1]) > 0 for s in result), f"panel {title!r}: {result}"
    refused = prom.query(fill(panels["Refused requests by reason (/s)"], values))
    assert {s["metric"]["reason"] for s in refused} == {"BAD_INPUT"}


def total(prom: Prometheus, expr: str) -> float:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else 0.0


def test_the_counts_match_what_the_clients_saw(prometheus):
    prom, seen, _ = prometheus
    assert total(prom, "sum(defect_images_total)") == seen["images"]
    assert total(prom, "sum(defect_detections_total)") == seen["detections"]
    assert total(prom, 'sum(defect_errors_total{reason="BAD_INPUT"})') == seen["bad"]
    assert total(prom, "sum(defect_inference_seconds_count)") == seen["images"]


def test_the_shadow_panels_count_every_photo_the_watcher_compared(prometheus):
    """The watcher's scrape job reaches the same Prometheus: its counters are the photos dropped."""
    prom, seen, _ = prometheus
    compared = total(prom, 'sum(defect_shadow_photos_compared_total{job="defect-inspection"})')
    agreements = total(prom, 'sum(defect_shadow_agreements_total{job="defect-inspection"})')
    flips = total(prom, 'sum(defect_shadow_disagreements_total{job="defect-inspection"})')
    assert compared == seen["compared"] and agreements + flips == compared
    ratio = total(prom, 'max(defect_shadow_agreement_ratio{job="defect-inspection"})')
    low = total(prom, 'max(defect_shadow_agreement_ci95_low{job="defect-inspection"})')
    high = total(prom, 'max(defect_shadow_agreement_ci95_high{job="defect-inspection"})')
    assert ratio == pytest.approx(agreements / compared) and low <= ratio <= high


def test_inference_time_is_recorded_in_seconds(prometheus):
    """The dashboard's axis and the 1 s alert threshold assume seconds."""
    prom, seen, _ = prometheus
    assert total(prom, "sum(defect_inference_seconds_sum)") == pytest.approx(seen["inference_s"], abs=0.005)
