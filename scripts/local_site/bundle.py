"""Read bundle.yaml, merge overlays the way `juju deploy --overlay` does, apply --set like `juju config`.

Only applications of our onnx-model charm run locally; the charm's own
charmcraft.yaml gives option names and types, so a typo is an error here
as it would be on a real site.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .venvs import ROOT

CHARMCRAFT = ROOT / "charms" / "onnx-model" / "charmcraft.yaml"
CHARM_NAME = "onnx-model"
GATEWAY_ENDPOINT = "gateway-info"
# istio-pilot's `default-gateway` default: the Gateway it creates and names on gateway-info
# (canonical/istio-operators track/1.17, charms/istio-pilot/config.yaml, src/charm.py _gateway_name).
ISTIO_PILOT_DEFAULT_GATEWAY = "istio-gateway"


class BundleError(ValueError):
    """A bundle, overlay or --set that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class ModelApp:
    """One onnx-model application and its options as Juju would hold them."""

    name: str
    options: dict[str, Any]
    # The Gateway name istio-pilot would publish to this application over gateway-info, if the
    # bundle relates them (istio-pilot puts it in its own model's namespace).
    istio_gateway: str | None = None


def option_types() -> dict[str, str]:
    options = yaml.safe_load(CHARMCRAFT.read_text())["config"]["options"]
    return {name: spec["type"] for name, spec in options.items()}


def load(bundle: Path, overlays: list[Path] = (), sets: list[str | dict[str, str]] = ()) -> list[ModelApp]:
    """The onnx-model applications of bundle + overlays, with --set overrides applied.

    ``sets`` are applied in order: "app.option=value" as `juju config`, {"reset": "app.option"} as
    `juju config --reset`, {"promote": app} / {"abort": app} as scripts/roll-model --promote / --abort.
    """
    merged = read(bundle)
    for overlay in overlays:
        merged = merge(merged, read(overlay))
    apps = {name: spec for name, spec in (merged.get("applications") or {}).items() if is_ours(spec)}
    options = {name: dict(spec.get("options") or {}) for name, spec in apps.items()}
    types = option_types()
    for item in sets:
        if isinstance(item, dict):
            _change(options, item)
            continue
        app, option, value = parse_set(item)
        if app not in options:
            raise BundleError(f"--set {item}: no onnx-model application {app!r} in the bundle")
        if option not in types:
            raise BundleError(f"--set {item}: {option} is not an option of the onnx-model charm")
        options[app][option] = value
    for app, opts in options.items():
        for option, value in opts.items():
            if option not in types:
                raise BundleError(f"application {app}: {option}: is not an option of the onnx-model charm")
            opts[option] = coerce(app, option, value, types[option])
    return [ModelApp(name, options[name], related_gateway(merged, name)) for name in sorted(options)]


def related_gateway(bundle: dict[str, Any], app: str) -> str | None:
    """The Gateway name of the istio-pilot related to ``app:gateway-info``, as Juju would relate it."""
    apps = bundle.get("applications") or {}
    for relation in bundle.get("relations") or []:
        ends = [str(end).partition(":") for end in relation]
        names = {name: endpoint for name, _, endpoint in ends}
        if names.get(app) not in (GATEWAY_ENDPOINT, ""):
            continue
        for other, endpoint in names.items():
            spec = apps.get(other) or {}
            if other != app and spec.get("charm") == "istio-pilot" and endpoint in (GATEWAY_ENDPOINT, ""):
                return str((spec.get("options") or {}).get("default-gateway", ISTIO_PILOT_DEFAULT_GATEWAY))
    return None


CANARY_OPTIONS = ("canary-model-uri", "canary-model-sha256", "canary-weight")


def _change(options: dict[str, dict[str, Any]], item: dict[str, str]) -> None:
    """A reset, promote or abort, applied to the options as Juju (or roll-model) would."""
    ((verb, target),) = item.items()
    app = target.partition(".")[0]
    if app not in options:
        raise BundleError(f"--{verb} {target}: no onnx-model application {app!r} in the bundle")
    opts = options[app]
    if verb == "reset":
        opts.pop(target.partition(".")[2], None)  # back to the charm's default (or unset)
        return
    if not opts.get("canary-model-uri"):
        raise BundleError(f"--{verb} {app}: {app} has no canary (canary-model-uri is not set)")
    if verb == "promote":
        opts["model-uri"], opts["model-sha256"] = opts["canary-model-uri"], opts.get("canary-model-sha256", "")
    elif verb != "abort":
        raise BundleError(f"{verb}: not a change the local site knows")
    for option in CANARY_OPTIONS:
        opts.pop(option, None)


def is_ours(spec: dict[str, Any]) -> bool:
    charm = str((spec or {}).get("charm", ""))
    base = Path(charm).name
    return base == CHARM_NAME or base.startswith(CHARM_NAME + "_") or base == f"{CHARM_NAME}.charm"


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Juju's overlay rules: applications and saas merge key by key; null removes one; relations append."""
    out = copy.deepcopy(base)
    apps = out.setdefault("applications", {})
    for name, spec in (overlay.get("applications") or {}).items():
        if spec is None:
            apps.pop(name, None)
            continue
        current = apps.setdefault(name, {})
        for key, value in spec.items():
            if key == "options" and isinstance(value, dict):
                current.setdefault("options", {}).update(value)
            else:
                current[key] = value
    for name, offer in (overlay.get("saas") or {}).items():
        out.setdefault("saas", {})[name] = offer
    out["relations"] = list(out.get("relations") or []) + list(overlay.get("relations") or [])
    return out


def parse_set(item: str) -> tuple[str, str, str]:
    key, sep, value = item.partition("=")
    app, dot, option = key.partition(".")
    if not sep or not dot or not app or not option:
        raise BundleError(f"--set {item!r}: expected <application>.<option>=<value>")
    return app, option, value


def coerce(app: str, option: str, value: Any, kind: str) -> Any:
    """A value as Juju would type it for the option."""
    where = f"application {app}: {option}"
    if kind == "secret":
        raise BundleError(f"{where}: Juju secrets do not exist on the local site; set AWS_* in its environment")
    try:
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false"):
                return str(value).lower() == "true"
            raise ValueError
        return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise BundleError(f"{where}: {value!r} is not a valid {kind}") from None


def read(path: Path) -> dict[str, Any]:
    """A bundle or overlay file as a mapping whose applications are mappings; BundleError (one
    line naming the file) otherwise. The local site, bootstrap and airgap export read with it."""
    try:
        data = yaml.safe_load(path.read_text())
    except IsADirectoryError:
        raise BundleError(f"{path}: is a folder, not a bundle or overlay file") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not a text (YAML) file") from None
    except yaml.YAMLError as exc:
        raise BundleError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: a bundle or overlay must be a mapping (applications:, relations:, ...)")
    apps = data.get("applications")
    if apps is not None and not isinstance(apps, dict):
        raise BundleError(f"{path}: applications: must be a mapping of application names")
    for name, spec in (apps or {}).items():
        if spec is not None and not isinstance(spec, dict):
            raise BundleError(f"{path}: applications.{name}: must be a mapping (charm:, options:, ...)")
        if isinstance(spec, dict) and not isinstance(spec.get("options") or {}, dict):
            raise BundleError(f"{path}: applications.{name}.options: must be a mapping of option: value")
    return data
