"""Rendered Kubernetes objects -> what runs locally: model server specs and Envoy routes.

Pure functions. What a VirtualService says and the local site cannot
express is an error naming the field, never silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_MODEL_ROOT = "/opt/models/"  # where the server image keeps its models (models/server/Containerfile)


class Untranslatable(ValueError):
    """A field of a rendered object the local site cannot honour."""


@dataclass(frozen=True)
class ServerSpec:
    """One model server process, as the SeldonDeployment's pod would run it."""

    sdep: str
    service_host: str  # what VirtualServices route to: <sdep>-<predictor>.<ns>.svc.cluster.local
    params: dict[str, object]
    workers: int
    env: tuple[tuple[str, str], ...]


_PARAM_TYPES = {"STRING": str, "INT": int, "FLOAT": float, "DOUBLE": float, "BOOL": lambda v: v.lower() == "true"}


def server_spec(sdep: dict[str, Any], models_dir: Path) -> ServerSpec:
    """The process a SeldonDeployment's single MODEL predictor describes."""
    name, ns = sdep["metadata"]["name"], sdep["metadata"]["namespace"]
    predictors = sdep["spec"]["predictors"]
    if len(predictors) != 1:
        raise Untranslatable(f"SeldonDeployment {name}: spec.predictors: the local site runs exactly one")
    predictor = predictors[0]
    graph = predictor["graph"]
    if graph.get("type") != "MODEL" or graph.get("children"):
        raise Untranslatable(f"SeldonDeployment {name}: spec.predictors[0].graph: only a single MODEL node")
    params: dict[str, object] = {}
    for p in graph.get("parameters", []):
        params[p["name"]] = _PARAM_TYPES[p["type"]](p["value"])
    params["model_uri"] = local_uri(str(params.get("model_uri", "")), models_dir)
    (container,) = predictor["componentSpecs"][0]["spec"]["containers"]
    # Variables from Kubernetes Secrets (s3 credentials) are not set here: no Secrets exist
    # locally, so the server inherits them from the site's own environment.
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    workers = int(env.get("GUNICORN_WORKERS") or 1)
    # The pod's CPU limit caps onnxruntime's threads there; give the process the same count here.
    cpu = container["resources"]["limits"]["cpu"]
    cpus = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    params["threads"] = max(1, int(cpus) // workers)
    passed = tuple((k, v) for k, v in env.items() if k.startswith("S3_"))
    return ServerSpec(
        sdep=name,
        service_host=f"{name}-{predictor['name']}.{ns}.svc.cluster.local",
        params=params,
        workers=workers,
        env=passed,
    )


def local_uri(uri: str, models_dir: Path) -> str:
    """A model inside the image (file:///opt/models/...) is the same file under models/ here."""
    if uri.startswith("file://" + IMAGE_MODEL_ROOT):
        return (models_dir / uri.removeprefix("file://" + IMAGE_MODEL_ROOT)).resolve().as_uri()
    return uri


# --- VirtualService -> Envoy ---------------------------------------------------------

_SUPPORTED_HTTP = {"name", "match", "rewrite", "route", "timeout", "retries"}
_SUPPORTED_MATCH = {"uri"}
_SUPPORTED_URI = {"prefix", "exact"}
_SUPPORTED_DEST = {"host", "port"}
_SUPPORTED_RETRIES = {"attempts", "perTryTimeout", "retryOn"}
_SUPPORTED_SPEC = {"gateways", "hosts", "http"}


def cluster_name(host: str, port: int) -> str:
    """Named the way Istio names its outbound clusters."""
    return f"outbound|{port}||{host}"


def envoy_routes(virtual_services: list[dict[str, Any]], served: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """Envoy routes for all VirtualServices, longest prefix first; ``served``: (host, port) we run."""
    routes = []
    for vs in virtual_services:
        where = f"VirtualService {vs['metadata']['name']}"
        spec = vs["spec"]
        _only(spec, _SUPPORTED_SPEC, f"{where}: spec")
        if spec.get("hosts", ["*"]) != ["*"]:
            raise Untranslatable(f"{where}: spec.hosts: the local site serves only hosts ['*']")
        for i, http in enumerate(spec.get("http", [])):
            routes += _http_routes(http, f"{where}: spec.http[{i}]", served)
    return sorted(routes, key=lambda r: -len(next(iter(r["match"].values()))))


def _http_routes(http: dict[str, Any], where: str, served: set[tuple[str, int]]) -> list[dict[str, Any]]:
    _only(http, _SUPPORTED_HTTP, where)
    action: dict[str, Any] = {"timeout": envoy_duration(http.get("timeout", "0s"), f"{where}.timeout")}
    destinations = http.get("route") or []
    if not destinations:
        raise Untranslatable(f"{where}.route: no destination")
    weighted = []
    for j, dest in enumerate(destinations):
        _only(dest, {"destination", "weight"}, f"{where}.route[{j}]")
        d = dest["destination"]
        _only(d, _SUPPORTED_DEST, f"{where}.route[{j}].destination")
        port = int((d.get("port") or {}).get("number", 80))
        if (d["host"], port) not in served:
            raise Untranslatable(f"{where}.route[{j}].destination: {d['host']}:{port} is not a model of this bundle")
        weighted.append({"name": cluster_name(d["host"], port), "weight": int(dest.get("weight", 100))})
    if len(weighted) == 1:
        action["cluster"] = weighted[0]["name"]
    else:
        action["weighted_clusters"] = {"clusters": weighted}
    if "retries" in http:
        r = http["retries"]
        _only(r, _SUPPORTED_RETRIES, f"{where}.retries")
        action["retry_policy"] = {
            "retry_on": r.get("retryOn", "connect-failure,refused-stream,unavailable,cancelled"),
            "num_retries": int(r.get("attempts", 2)),
        }
        if "perTryTimeout" in r:
            action["retry_policy"]["per_try_timeout"] = envoy_duration(
                r["perTryTimeout"], f"{where}.retries.perTryTimeout"
            )
    rewrite = http.get("rewrite")
    if rewrite is not None:
        _only(rewrite, {"uri"}, f"{where}.rewrite")
        action["prefix_rewrite"] = rewrite["uri"]
    out = []
    for k, match in enumerate(http.get("match") or [{"uri": {"prefix": "/"}}]):
        _only(match, _SUPPORTED_MATCH, f"{where}.match[{k}]")
        uri = match.get("uri", {"prefix": "/"})
        _only(uri, _SUPPORTED_URI, f"{where}.match[{k}].uri")
        ((kind, value),) = uri.items()
        out.append({"match": {"prefix" if kind == "prefix" else "path": value}, "route": dict(action)})
    return out


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def envoy_duration(value: str, where: str) -> str:
    """Istio's duration (1h2m3.5s, 500ms) as Envoy's JSON duration (seconds)."""
    m = _DURATION.match(value or "")
    if not value or not m:
        raise Untranslatable(f"{where}: {value!r} is not a duration like 30s or 500ms")
    h, mi, s, ms = m.groups()
    seconds = int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0) + int(ms or 0) / 1000
    return f"{seconds:.3f}s"


def _only(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise Untranslatable(f"{where}.{extra[0]}: the local site cannot express this field")
