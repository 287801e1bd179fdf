"""Just enough PromQL reading to check the dashboard and alert rules against real metrics.

There is no Prometheus on this machine; these helpers catch what would show
as an empty panel or a silent alert: a metric the server does not export, a
grouping label its series lack, unbalanced brackets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARM_SRC = ROOT / "charms/onnx-model/src"
DASHBOARD = CHARM_SRC / "grafana_dashboards/onnx-model.json"
RULES = CHARM_SRC / "prometheus_alert_rules/onnx-model.rules"

_FUNCTIONS_AND_KEYWORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile", "absent",
    "clamp_min", "by", "without", "and", "or", "unless", "on", "ignoring", "offset", "bool",
}  # fmt: skip
# Labels the scrape itself adds (Prometheus, the Juju topology, the charm's per-pod labels).
TARGET_LABELS = {"job", "instance", "pod", "model_sha256"} | {
    "juju_model", "juju_model_uuid", "juju_application", "juju_charm"
}  # fmt: skip


def expressions() -> Iterator[tuple[str, str]]:
    """(where, expr) for every query in the dashboard and every alert rule."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"]


def balanced(expr: str) -> bool:
    stack, pairs = [], {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"[^"]*"', '""', expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


def metric_names(expr: str) -> set[str]:
    """Metric names selected by ``expr`` (identifiers that are not functions, keywords or labels)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)  # grouping labels
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        following = text[match.end() :].lstrip()[:1]
        if word not in _FUNCTIONS_AND_KEYWORDS and following != "(" and not word.startswith("$"):
            names.add(word)
    return names


def by_clauses(expr: str) -> list[set[str]]:
    """The label set of each ``by (...)`` clause."""
    groups = re.findall(r"\bby\s*\(([^)]*)\)", expr)
    return [{label.strip() for label in group.split(",") if label.strip()} for group in groups]


def parse_exposition(text: str) -> dict[str, list[dict[str, str]]]:
    """Prometheus text format -> {series name: [labels, with the sample under "__value__"]}."""
    series: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if match:
            labels = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
            labels["__value__"] = match.group(4)
            series.setdefault(match.group(1), []).append(labels)
    return series
