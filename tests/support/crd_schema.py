"""Validate rendered objects against the CRDs' own openAPIV3Schema, strictly.

An API server silently prunes unknown fields, so a misspelt field would
vanish on a live cluster instead of failing. Here every object schema that
lists its properties is closed (additionalProperties: false) unless the CRD
itself preserves unknown fields, so a typo or a misplaced field fails.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parent.parent / "data" / "crds"
_OBJECT_META = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}
CRD_FILES = ("seldondeployments.machinelearning.seldon.io.yaml", "istio-1.17.3.yaml")


@functools.cache
def _schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema, for every version the CRDs hold."""
    out = {}
    for name in CRD_FILES:
        for crd in yaml.safe_load_all((CRD_DIR / name).read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                # The API server supplies these on every object; some CRDs leave them out.
                schema["properties"] = {**_OBJECT_META, **schema.get("properties", {})}
                out[(f"{group}/{version['name']}", kind)] = schema
    return out


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _strict(v) if k != "enum" else v for k, v in node.items()}
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


def validate(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if obj does not fit its CRD version."""
    key = (obj["apiVersion"], obj["kind"])
    schemas = _schemas()
    if key not in schemas:
        raise KeyError(f"no CRD in {CRD_DIR} serves {key}")
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schemas[key]).iter_errors(obj))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise CrdViolation(f"{obj['kind']} {where}: {error.message[:300]}")


class CrdViolation(ValueError):
    """A rendered object that its CRD would not accept as written."""
