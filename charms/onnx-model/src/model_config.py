"""The charm's config options as one validated dataclass.

Importable without ops: the local site validates a bundle's options with
the same class, so both refuse the same values with the same words.
Every error names the option (as the user types it) and what is wrong.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import urlparse

# The scratch detector that the server image carries; see models/scratch-detector/model.yaml.
DEFAULT_MODEL_URI = "file:///opt/models/scratch-detector/model-int8.onnx"
DEFAULT_MODEL_SHA256 = "72214da765f1f75193031d633a45a36896be0377824ab1b0fb35811f351c21e3"
DEFAULT_SERVER_IMAGE = "localhost/defect-server:0.2.0"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 label: namespaces, object names
# Seldon names the predictor's Service <model-name>-default (<model-name>-canary-default for a canary),
# and a Service name must be a DNS-1035 label: a letter first (k8s.io/kubernetes v1.28
# pkg/apis/core/validation/validation.go ValidateServiceName = NameIsDNS1035Label;
# k8s.io/apimachinery v0.28 pkg/util/validation/validation.go dns1035LabelFmt).
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CPU = re.compile(r"^([0-9]+(\.[0-9]{1,3})?|[0-9]+m)$")
_MEMORY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_MEMORY_UNITS.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*[a-zA-Z0-9_.-]*$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MODEL_NAME_MAX = 40  # Seldon derives longer names (<sdep>-default-0-model-...) from it


def _invalid(option: str, problem: str) -> ValueError:
    return ValueError(f"{option}: {problem}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One onnx-model application's options; field names are the option names with '_'."""

    model_name: str = ""
    model_uri: str = ""
    model_sha256: str = ""
    model_version: str = ""
    server_image: str = DEFAULT_SERVER_IMAGE
    replicas: int = 1
    workers: int = 1
    confidence_threshold: float = 0.18  # the scratch detector's, cross-validated
    iou_threshold: float = 0.45
    input_size: int = 0
    max_image_pixels: int = 25_000_000
    # Requests: what the scheduler reserves per pod, sized to measured use (README: "Sizing").
    cpu_request: str = "250m"
    memory_request: str = "320Mi"
    # Limits: what one pod may use when busy.
    cpu: str = "1"
    memory: str = "1Gi"
    gateway: str = ""  # empty: the one istio-pilot names on the gateway-info relation
    s3_endpoint: str = ""
    s3_credentials: Any = None  # ops.Secret in the charm; never rendered
    # A second model answering a share of the requests; canary-weight has no default, so
    # "unset" (None) and 0 ("running, no traffic") are different things.
    canary_model_uri: str = ""
    canary_model_sha256: str = ""
    canary_weight: int | None = None
    # A model that sees the same photos as the stable one but decides nothing: it answers only at
    # /model/<model-name>/shadow/, which the line's watcher asks beside the stable model.
    shadow_model_uri: str = ""
    shadow_model_sha256: str = ""

    def __post_init__(self) -> None:
        for check in (
            self._check_name,
            self._check_model,
            self._check_numbers,
            self._check_resources,
            self._check_routing,
            self._check_canary,
            self._check_shadow,
        ):
            check()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ModelConfig:
        """Build from Juju-style option names (``model-uri``); unknown names are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in options.items():
            attr = key.replace("-", "_")
            if attr not in known:
                raise _invalid(key, "is not an option of the onnx-model charm")
            kwargs[attr] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a wrong type given by hand (bundles are YAML)
            raise ValueError(str(exc)) from None

    # --- checks ---------------------------------------------------------------

    def _check_name(self) -> None:
        if self.model_name and (len(self.model_name) > MODEL_NAME_MAX or not _DNS_1035_LABEL.match(self.model_name)):
            raise _invalid(
                "model-name",
                f"{self.model_name!r} must be a DNS-1035 label: lowercase letters, digits and '-', "
                f"starting with a letter and ending with a letter or digit, at most {MODEL_NAME_MAX} "
                "characters (Seldon names the model's Kubernetes Service after it)",
            )

    def _check_model(self) -> None:
        _check_uri_and_sha("model-uri", self.model_uri, "model-sha256", self.model_sha256)
        if self.model_version and not _VERSION.match(self.model_version):
            raise _invalid("model-version", "must be 1-63 letters, digits, '.', '_' or '-'")

    def _check_numbers(self) -> None:
        _in_range("replicas", self.replicas, 1, 20, integer=True)
        _in_range("workers", self.workers, 1, 8, integer=True)
        _in_range("max-image-pixels", self.max_image_pixels, 1, 200_000_000, integer=True)
        _in_range("confidence-threshold", self.confidence_threshold, 0.0, 1.0, open_low=True)
        _in_range("iou-threshold", self.iou_threshold, 0.0, 1.0, open_low=True)
        if self.input_size != 0:
            _in_range("input-size", self.input_size, 32, 4096, integer=True)
            if self.input_size % 32:
                raise _invalid("input-size", "must be 0 (from the model) or a multiple of 32")

    def _check_resources(self) -> None:
        for option, value in (("cpu-request", self.cpu_request), ("cpu", self.cpu)):
            if not isinstance(value, str) or not _CPU.match(value) or cpu_millis(value) <= 0:
                raise _invalid(option, f"{value!r} is not a CPU quantity such as 1, 0.5 or 500m")
        for option, value in (("memory-request", self.memory_request), ("memory", self.memory)):
            if not isinstance(value, str) or not _MEMORY.match(value) or memory_bytes(value) <= 0:
                raise _invalid(option, f"{value!r} is not a memory quantity such as 512Mi or 1Gi")
        # The API server refuses a request above its limit (k8s apis/core/validation:
        # "must be less than or equal to cpu limit"); say so before the pod is ever made.
        if cpu_millis(self.cpu_request) > cpu_millis(self.cpu):
            raise _invalid("cpu-request", f"{self.cpu_request} is more than the limit cpu={self.cpu}")
        if memory_bytes(self.memory_request) > memory_bytes(self.memory):
            raise _invalid("memory-request", f"{self.memory_request} is more than the limit memory={self.memory}")
        if not self.server_image or not _IMAGE.match(self.server_image):
            raise _invalid("server-image", f"{self.server_image!r} is not an image reference")

    def _check_routing(self) -> None:
        parts = self.gateway.split("/")
        if self.gateway and (len(parts) != 2 or not all(_DNS_LABEL.match(p) for p in parts)):
            raise _invalid("gateway", f"{self.gateway!r} must be <namespace>/<gateway-name>")
        if self.s3_endpoint:
            parsed = urlparse(self.s3_endpoint)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise _invalid("s3-endpoint", f"{self.s3_endpoint!r} must be an http(s):// URL")

    def _check_canary(self) -> None:
        """A canary is a model (URI + sha256) and a weight, all or nothing."""
        _check_uri_and_sha("canary-model-uri", self.canary_model_uri, "canary-model-sha256", self.canary_model_sha256)
        if self.canary_weight is None:
            if self.canary_model_uri:
                raise _invalid(
                    "canary-weight",
                    "is required when canary-model-uri is set: the percent of requests (0-100) the canary answers",
                )
            return
        _in_range("canary-weight", self.canary_weight, 0, 100, integer=True)
        if not self.canary_model_uri:
            raise _invalid(
                "canary-model-uri",
                "canary-weight is set but there is no canary model: set canary-model-uri and "
                "canary-model-sha256, or reset canary-weight (juju config <app> --reset canary-weight)",
            )

    def _check_shadow(self) -> None:
        """A shadow is a model (URI + sha256) other than the stable one, and never beside a canary."""
        _check_uri_and_sha("shadow-model-uri", self.shadow_model_uri, "shadow-model-sha256", self.shadow_model_sha256)
        if not self.shadow_model_uri:
            return
        if self.shadow_model_sha256.strip() == self.effective_sha256:
            raise _invalid(
                "shadow-model-sha256",
                "is the stable model's sha256: a shadow of the same file has nothing to compare; "
                "give the new model's file and sha256, or reset shadow-model-uri and shadow-model-sha256",
            )
        if self.canary_model_uri:
            # Two reasons, both in the message. What is compared: a canary changes what the line
            # sees while a shadow is measured against the stable model, so the comparison would
            # mix two baselines. And room: each is one more model pod; stable + canary + shadow at
            # a rollout peak leaves 33 MiB of the reference box's memory, and beside a second model
            # not even one of them fits (README "Sizing", tests/unit/test_site_requests.py).
            raise _invalid(
                "shadow-model-uri",
                "cannot run beside a canary (canary-model-uri is set): a canary changes what the line "
                "sees while a shadow is compared with the stable model, and each is one more model pod "
                "that a small box barely has (README: Sizing); finish the canary first with "
                "scripts/roll-model <app> --promote or --abort, or reset shadow-model-uri and shadow-model-sha256",
            )

    # --- derived values -------------------------------------------------------

    @property
    def effective_uri(self) -> str:
        """The URI served: the configured one, or the model inside the server image."""
        return self.model_uri or DEFAULT_MODEL_URI

    @property
    def effective_sha256(self) -> str:
        return self.model_sha256 or DEFAULT_MODEL_SHA256

    @property
    def uses_s3(self) -> bool:
        return self.effective_uri.startswith("s3://")

    @property
    def any_s3(self) -> bool:
        """The stable model, the canary or the shadow comes from s3: the credentials Secret is needed."""
        return self.uses_s3 or any(uri.startswith("s3://") for uri in (self.canary_model_uri, self.shadow_model_uri))

    @property
    def has_canary(self) -> bool:
        """A canary is configured (it may still take 0% of the requests)."""
        return bool(self.canary_model_uri) and self.canary_weight is not None

    def as_canary(self) -> ModelConfig:
        """The canary as a model of its own: same server settings, the canary's file, no canary."""
        return self._serving_alone(self.canary_model_uri, self.canary_model_sha256)

    def _serving_alone(self, uri: str, sha256: str) -> ModelConfig:
        """This config serving another file, with no canary or shadow of its own: model-name,
        thresholds, resources and the image carry over, so the answers differ only by the file."""
        return dataclasses.replace(
            self,
            model_uri=uri,
            model_sha256=sha256.strip(),
            model_version="",
            canary_model_uri="",
            canary_model_sha256="",
            canary_weight=None,
            shadow_model_uri="",
            shadow_model_sha256="",
        )

    @property
    def has_shadow(self) -> bool:
        """A shadow model is configured (validation guarantees its sha256 and no canary beside it)."""
        return bool(self.shadow_model_uri)

    def as_shadow(self) -> ModelConfig:
        """The shadow as a model of its own: the stable model's server settings, the shadow's file.

        Like as_canary(): the two answers differ only by the model file, which is what the
        comparison is about.
        """
        return self._serving_alone(self.shadow_model_uri, self.shadow_model_sha256)


def _check_uri_and_sha(uri_option: str, uri: str, sha_option: str, sha: str) -> None:
    """A model file's URI and its sha256: both or neither, each well formed."""
    if uri.strip() != uri or any(c.isspace() for c in uri):
        raise _invalid(uri_option, "must not contain spaces")
    sha = sha.strip()
    if not uri:
        if sha:
            raise _invalid(sha_option, f"is set but {uri_option} is empty: set both or neither")
        return
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", "http", "https", "s3"):
        raise _invalid(uri_option, f"scheme must be file://, http(s):// or s3://, got {uri!r}")
    if parsed.scheme in ("http", "https", "s3") and not parsed.netloc:
        raise _invalid(uri_option, f"{uri!r} has no host or bucket")
    if parsed.scheme in ("file", "s3") and not parsed.path.strip("/"):
        raise _invalid(uri_option, f"{uri!r} names no file")
    if not sha:
        raise _invalid(
            sha_option,
            f"is required when {uri_option} is set: give the file's sha256 (sha256sum <file>)",
        )
    if not _SHA256.match(sha):
        raise _invalid(sha_option, "must be 64 lowercase hex digits (the output of sha256sum)")


def cpu_millis(quantity: str) -> int:
    """A CPU quantity (1, 0.5, 250m) in millicores."""
    return int(quantity[:-1]) if quantity.endswith("m") else round(float(quantity) * 1000)


def memory_bytes(quantity: str) -> int:
    """A memory quantity (256Mi, 1Gi, 500M, 1048576) in bytes."""
    match = _MEMORY.match(quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""]


def _in_range(
    option: str,
    value: Any,
    low: float,
    high: float,
    integer: bool = False,
    open_low: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(option, f"must be a number, got {value!r}")
    if integer and value != int(value):
        raise _invalid(option, f"must be a whole number, got {value!r}")
    too_low = value <= low if open_low else value < low
    if too_low or value > high:
        bracket = "(" if open_low else "["
        raise _invalid(option, f"must be in {bracket}{low:g}, {high:g}], got {value!r}")
