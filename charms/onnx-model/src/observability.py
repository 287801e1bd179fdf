"""What the charm tells COS about its model servers: scrape jobs, alert rules, a Grafana dashboard.

Pure functions; the charm writes what they return into relation data. The
relation data follows the provider side of the ``prometheus_scrape`` and
``grafana_dashboard`` interfaces (the keys Prometheus, Grafana Agent and
Grafana read). They are a handful of JSON keys: implementing them here keeps
the charm free of the COS libraries' dependency chain (cosl -> pydantic, a
compiled wheel per platform).

Why the targets are pod IPs: the servers run in pods that Seldon creates,
not in this charm's units, and Prometheus must scrape each pod (a Service
would hand each scrape to a different pod and mix their counters). The charm
lists the pods on every event, update-status included, so a new pod joins
the scrape within one update-status interval; its counters start at zero, so
nothing it served is lost, only reported late.
"""

from __future__ import annotations

import base64
import hashlib
import json
import lzma
from pathlib import Path
from typing import Any

import yaml

from manifests import METRICS_PORT, canary_name, shadow_name

# render() declares the model container's metrics port; Seldon sets the wrapper's
# PREDICTIVE_UNIT_METRICS_ENDPOINT to its executor-prometheus-path (seldon-core charm: /prometheus,
# operator/controllers/seldondeployment_engine.go getPrometheusPath @ v1.17.1). The pods run
# without Seldon's executor (seldon.io/no-engine), so the server is the only target in a pod.
MODEL_METRICS_PORT = METRICS_PORT
METRICS_PATH = "/prometheus"
MODEL_JOB = "onnx-model-server"
TOPOLOGY_PLACEHOLDER = "%%juju_topology%%"
HERE = Path(__file__).resolve().parent
DASHBOARDS = HERE / "grafana_dashboards"
ALERT_RULES = HERE / "prometheus_alert_rules"


def scrapeable(pod: dict[str, Any]) -> bool:
    """A pod Prometheus can reach: running, with an IP, not on its way out."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return status.get("phase") == "Running" and bool(status.get("podIP")) and not meta.get("deletionTimestamp")


def role(pod: dict[str, Any], model_name: str) -> str:
    """``stable``, ``canary`` or ``shadow``: which of the application's SeldonDeployments runs the pod.

    Read from the label Seldon puts on every pod (``seldon-deployment-id``), so a query can keep
    the shadow's series out of the stable model's figures without knowing which sha256 is which
    (``role="stable"``), and a panel can name the shadow's series as the shadow's.
    """
    deployment = (pod["metadata"].get("labels") or {}).get("seldon-deployment-id", "")
    roles = {model_name: "stable", canary_name(model_name): "canary", shadow_name(model_name): "shadow"}
    return roles.get(deployment, "")


def scrape_jobs(pods: list[dict[str, Any]], sha_label: str, model_name: str) -> list[dict[str, Any]]:
    """One job for the model servers, a static config per pod: the stable, canary and shadow pods alike.

    Each pod gets its own ``pod`` label: Prometheus drops targets whose labels are identical,
    and the consumer sets the same ``instance`` on every target that is not a Juju unit.
    ``model_sha256`` says which model that pod serves (the first 16 hex digits), so a rollout
    shows up in Grafana as one version's series ending and the next one's starting; ``role``
    says which deployment serves it (see role()), so the stable and shadow series can be told apart.
    """
    per_pod = []
    for pod in sorted(filter(scrapeable, pods), key=lambda p: p["metadata"]["name"]):
        sha = (pod["metadata"].get("labels") or {}).get(sha_label, "")
        labels = {"pod": pod["metadata"]["name"], "model_sha256": sha, "role": role(pod, model_name)}
        per_pod.append((pod["status"]["podIP"], labels))
    return [
        {
            "job_name": MODEL_JOB,
            "metrics_path": METRICS_PATH,
            "static_configs": [
                {"targets": [f"{ip}:{MODEL_METRICS_PORT}"], "labels": dict(labels)} for ip, labels in per_pod
            ],
        }
    ]


def topology(model: str, model_uuid: str, application: str, unit: str, charm_name: str) -> dict[str, str]:
    """The ``scrape_metadata`` the consumer turns into juju_* labels on every series."""
    return {
        "model": model,
        "model_uuid": model_uuid,
        "application": application,
        "unit": unit,
        "charm_name": charm_name,
    }


def alert_rules(topo: dict[str, str], rules_dir: Path = ALERT_RULES) -> dict[str, Any]:
    """The shipped rule groups, scoped to this application.

    Every expression gets the application's topology matchers (so one application's alerts
    never fire on another's metrics) and every rule carries the topology labels.
    """
    scope = (("juju_model", "model"), ("juju_model_uuid", "model_uuid"), ("juju_application", "application"))
    matchers = ",".join(f'{label}="{topo[key]}"' for label, key in scope)
    labels = {
        "juju_model": topo["model"],
        "juju_model_uuid": topo["model_uuid"],
        "juju_application": topo["application"],
        "juju_charm": topo["charm_name"],
    }
    groups = []
    for path in sorted(rules_dir.glob("*.rules")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules = []
            for rule in group["rules"]:
                scoped = dict(rule, expr=rule["expr"].replace(TOPOLOGY_PLACEHOLDER, matchers))
                scoped["labels"] = {**(rule.get("labels") or {}), **labels}
                rules.append(scoped)
            groups.append({"name": f"{topo['model']}_{topo['application']}_{group['name']}", "rules": rules})
    return {"groups": groups}


def compress(text: str) -> str:
    """LZMA then base64: how grafana_dashboard carries dashboards in relation data."""
    return base64.b64encode(lzma.compress(text.encode())).decode()


def dashboards(charm_name: str, dashboards_dir: Path = DASHBOARDS) -> dict[str, Any]:
    """The ``dashboards`` value: our dashboards, with no topology injection.

    Grafana would otherwise add a ``juju_unit`` matcher to every query, and the model pods'
    series have none (they are not Juju units); the dashboard carries its own model and
    application selectors instead.
    """
    templates = {}
    for path in sorted(dashboards_dir.glob("*.json")):
        templates[f"file:{path.stem}"] = {
            "charm": charm_name,
            "content": compress(json.dumps(json.loads(path.read_text()))),
            "juju_topology": {},
            "inject_dropdowns": False,
        }
    digest = hashlib.sha256(json.dumps(templates, sort_keys=True).encode()).hexdigest()[:16]
    return {"templates": templates, "uuid": digest}
