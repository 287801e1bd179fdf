"""The test client that e2e roll and canary tests lean on: it must fail loudly, never spin."""

from __future__ import annotations

import json

import pytest
import requests

from support.steady_client import SteadyClient


def response(status: int, body: object) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode()
    return resp


def test_a_200_without_a_prediction_is_a_failure_not_a_dead_thread():
    answers = iter([response(200, {"status": "ok"})] + [response(200, {"jsonData": {"model": {"sha256": "a"}}})] * 5)
    with SteadyClient(lambda: next(answers), max_requests=6) as client:
        client.wait_for_answers(5, timeout=10)
    assert client.failures == ['200 without jsonData.model.sha256: {"status": "ok"}']
    assert client.shas == ["a"] * 5


def test_every_wait_has_a_deadline():
    with SteadyClient(lambda: response(200, {"jsonData": {"model": {"sha256": "a"}}}), max_requests=3) as client:
        with pytest.raises(AssertionError, match="the client stopped before 10 answers"):
            client.wait_for_answers(10, timeout=30)  # it stopped at 3: said at once, not after 30 s
        with pytest.raises(AssertionError, match="run of 5 answers from b"):
            client.wait_for_run("b", 5, timeout=30)
