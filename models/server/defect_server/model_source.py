"""Fetch a model artifact by URI and verify its sha256 before anything parses it.

The bytes that were hashed are the bytes handed to onnxruntime: the file is
never re-read after verification, so it cannot be swapped in between.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import ModelRejected

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
SCHEMES = ("file", "http", "https", "s3")
# A store that does not have the file yet, is overloaded or timed out may answer later; 403 will not.
RETRYABLE_HTTP = {404, 408, 429}


@dataclass(frozen=True)
class FetchLimits:
    """How much and how long a download may take."""

    max_bytes: int = 512 * 1024 * 1024
    timeout_s: float = 120.0


def check_sha256(value: str) -> str:
    """Normalise a sha256 given in config; raise if it is not 64 hex digits."""
    digest = (value or "").strip().lower()
    if not SHA256_RE.match(digest):
        raise ModelRejected(f"model_sha256 must be 64 hex digits, got {value!r}")
    return digest


def fetch_verified(uri: str, sha256: str, limits: FetchLimits = FetchLimits()) -> bytes:
    """Return the artifact's bytes, or raise ModelRejected saying which check failed."""
    expected = check_sha256(sha256)
    data = fetch(uri, limits)
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, expected):
        raise ModelRejected(f"sha256 mismatch for {uri}: expected {expected}, got {actual}; refusing to load it")
    return data


def fetch(uri: str, limits: FetchLimits) -> bytes:
    """Read the bytes behind a file://, http(s):// or s3:// URI within the limits."""
    parsed = urlparse(uri)
    if parsed.scheme not in SCHEMES:
        raise ModelRejected(f"model_uri {uri!r}: scheme must be one of {', '.join(SCHEMES)}")
    if parsed.scheme == "file":
        return _read_file(Path(unquote(parsed.netloc + parsed.path)), limits)
    if parsed.scheme in ("http", "https"):
        return _read_http(uri, limits)
    return _read_s3(parsed.netloc, parsed.path.lstrip("/"), limits)


def _read_file(path: Path, limits: FetchLimits) -> bytes:
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ModelRejected(f"{path} is {size} bytes, over the limit of {limits.max_bytes}")
        return path.read_bytes()
    except OSError as exc:
        raise ModelRejected(f"cannot read model file {path}: {exc.strerror or exc}") from None


def _read_http(uri: str, limits: FetchLimits) -> bytes:
    import requests

    deadline = time.monotonic() + limits.timeout_s
    try:
        with requests.get(uri, stream=True, timeout=(10, 30)) as resp:
            if resp.status_code != 200:
                raise ModelRejected(
                    f"GET {uri} answered HTTP {resp.status_code}",
                    retryable=resp.status_code in RETRYABLE_HTTP or resp.status_code >= 500,
                )
            declared = int(resp.headers.get("Content-Length") or 0)
            if declared > limits.max_bytes:
                raise ModelRejected(f"{uri} is {declared} bytes, over the limit of {limits.max_bytes}")
            chunks, total = [], 0
            for chunk in resp.iter_content(1 << 16):
                total += len(chunk)
                if total > limits.max_bytes:
                    raise ModelRejected(f"{uri} is over the limit of {limits.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise ModelRejected(f"download of {uri} took longer than {limits.timeout_s:g} s", retryable=True)
                chunks.append(chunk)
            return b"".join(chunks)
    except requests.RequestException as exc:
        raise ModelRejected(f"cannot download {uri}: {type(exc).__name__}: {exc}", retryable=True) from None


def _read_s3(bucket: str, key: str, limits: FetchLimits) -> bytes:
    """Credentials and endpoint come from the standard AWS_* environment (a Kubernetes Secret)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    if not bucket or not key:
        raise ModelRejected(f"s3 URI needs s3://bucket/key, got bucket={bucket!r} key={key!r}")
    client = boto3.client(
        "s3",
        endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None,
        config=Config(
            connect_timeout=10,
            read_timeout=30,
            retries={"max_attempts": 2},
            s3={"addressing_style": "path"},
        ),
    )
    deadline = time.monotonic() + limits.timeout_s
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
        if obj.get("ContentLength", 0) > limits.max_bytes:
            raise ModelRejected(
                f"s3://{bucket}/{key} is {obj['ContentLength']} bytes, over the limit of {limits.max_bytes}"
            )
        chunks, total = [], 0
        for chunk in obj["Body"].iter_chunks(1 << 16):
            total += len(chunk)
            if total > limits.max_bytes or time.monotonic() > deadline:
                raise ModelRejected(f"s3://{bucket}/{key} exceeded the size or time limit")
            chunks.append(chunk)
        return b"".join(chunks)
    except (BotoCoreError, ClientError) as exc:
        raise ModelRejected(f"cannot download s3://{bucket}/{key}: {exc}", retryable=True) from None
