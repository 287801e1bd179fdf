"""The endpoint documents itself: ``/api/v1.0/doc/`` (Swagger UI) and ``/api/v1.0/doc/openapi.json``.

Seldon's executor used to answer ``/api/v1.0/doc/``; with the executor bypassed
(``seldon.io/no-engine``) the path reached the model server and was a 404. The server now
serves the page itself, with ``models/server/openapi.yaml`` (the one contract) filled in,
per request, with what this server really serves: the model's name, version, sha256,
classes and input size.

How it gets onto the wrapper's app: seldon-core 1.17.1 (``seldon_core/wrapper.py:
get_rest_microservice``) builds its own Flask app and offers a model one way in, the
``model_error_handler`` blueprint it registers on that app; the routes here are a
blueprint nested in it (``seldon_model.DefectModel._request_guard``). The wrapper's
``custom_service`` hook is no use: it runs in a process of its own, off the REST port
the gateway routes to.

It works behind the gateway, which rewrites ``/model/<name>/`` to ``/``: every URL the
page uses is relative (assets, ``openapi.json``), and the spec's server is ``../../..``,
which Swagger UI resolves against the spec's own URL, so "Try it out" posts to the same
``/model/<name>/`` prefix the browser came through (or to no prefix, on port 9000).

The assets are Swagger UI's own build, shipped inside the ``flask-swagger-ui`` wheel
(``models/server/requirements.txt``, so in the image too): nothing comes from a CDN, as a
site is offline.
"""

from __future__ import annotations

import base64
import copy
import functools
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response, redirect, send_from_directory
from PIL import Image

DOC = "/api/v1.0/doc"
SPEC_FILE = Path(__file__).resolve().parent.parent / "openapi.yaml"  # beside the package, here and in the image
# Swagger UI resolves a relative server URL against the spec's URL: <root>/api/v1.0/doc/openapi.json -> <root>.
SERVER_URL = "../../.."
PREDICT_PATHS = ("/api/v0.1/predictions", "/api/v1.0/predictions", "/predict")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="swagger-ui.css">
  <link rel="icon" type="image/png" href="favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="swagger-ui-bundle.js"></script>
  <script>
    // Relative URLs only: behind the gateway this page is /model/<name>/api/v1.0/doc/.
    // validatorUrl null: the default badge asks validator.swagger.io, out of reach on a site.
    window.ui = SwaggerUIBundle({{
      url: "openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
    }});
  </script>
</body>
</html>
"""


@dataclass(frozen=True)
class ModelFacts:
    """What the spec says about the served model; classes and input size once it is loaded."""

    name: str
    version: str
    sha256: str
    classes: tuple[str, ...] | None = None
    input_hw: tuple[int, int] | None = None
    not_ready: str | None = None


def swagger_ui_dir() -> Path:
    """Swagger UI's built files, as the flask-swagger-ui wheel ships them."""
    return Path(str(resources.files("flask_swagger_ui") / "dist"))


@functools.lru_cache(maxsize=1)
def base_spec() -> dict[str, Any]:
    """``openapi.yaml`` as written (read once: it is part of the image, not of the model)."""
    return yaml.safe_load(SPEC_FILE.read_text())


@functools.lru_cache(maxsize=8)
def example_image(input_hw: tuple[int, int]) -> str:
    """A base64 PNG of the model's input size, letterbox grey: "Try it out" works as it opens.

    Its size is the model's, so nothing is scaled or padded on the way in; a few kB of base64.
    """
    h, w = input_hw
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (114, 114, 114)).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def served_spec(facts: ModelFacts) -> dict[str, Any]:
    """``openapi.yaml`` with this server's model in it, and a server URL that works behind any prefix."""
    spec = copy.deepcopy(base_spec())
    info = spec["info"]
    info["title"] = f"{facts.name}: {info['title']}"
    model: dict[str, Any] = {"name": facts.name, "version": facts.version, "sha256": facts.sha256}
    lines = [f"**Served here**: model `{facts.name}`, version `{facts.version}`, sha256 `{facts.sha256}`."]
    if facts.classes is not None and facts.input_hw is not None:
        h, w = facts.input_hw
        model |= {"classes": list(facts.classes), "input": {"width": w, "height": h}}
        classes = ", ".join(f"`{c}`" for c in facts.classes)
        lines.append(f"Classes: {classes}. Input: {w}x{h} pixels (images of any size are letterboxed to it).")
    else:
        model["not_ready"] = facts.not_ready or "model not loaded yet"
        lines.append(f"Not ready: {model['not_ready']}; classes and input size are known once it is loaded.")
    info["x-model"] = model
    info["description"] = "\n\n".join([*lines, info.get("description", "").strip()])
    spec["servers"] = [
        {
            "url": SERVER_URL,
            "description": "this server, at the address the page was opened from (through the gateway or not)",
        }
    ]

    schemas = spec["components"]["schemas"]
    info_props = schemas["ModelInfo"]["properties"]
    info_props["name"]["const"] = facts.name
    info_props["version"]["const"] = facts.version
    info_props["sha256"]["const"] = facts.sha256
    if facts.classes is not None:
        schemas["Detection"]["properties"]["label"]["enum"] = list(facts.classes)
    if facts.input_hw is not None:
        example = {
            "summary": f"a blank {facts.input_hw[1]}x{facts.input_hw[0]} PNG: put your own JPEG or PNG's base64",
            "value": {"binData": example_image(facts.input_hw)},
        }
        for path in PREDICT_PATHS:
            operation = spec["paths"][path]["post"] = copy.deepcopy(spec["paths"][path]["post"])
            operation["requestBody"]["content"]["application/json"]["examples"] = {"blank": example}
    return spec


def blueprint(facts: Callable[[], ModelFacts]) -> Blueprint:
    """The page, its assets and the spec; anything else under the doc path is a 404."""
    doc = Blueprint("defect_doc", __name__)
    assets = swagger_ui_dir()

    @doc.get(DOC)
    def _no_slash():
        """Relative: the browser keeps the /model/<name>/ prefix the server never sees."""
        return redirect("doc/", code=308)

    @doc.get(f"{DOC}/")
    def _page():
        title = html.escape(f"{facts().name}: model server API")
        return Response(PAGE.format(title=title), mimetype="text/html")

    @doc.get(f"{DOC}/openapi.json")
    def _spec():
        return Response(json.dumps(served_spec(facts()), indent=1), mimetype="application/json")

    @doc.get(f"{DOC}/<path:asset>")
    def _asset(asset: str):
        return send_from_directory(assets, asset)  # outside the folder or missing: NotFound, a 404

    return doc
