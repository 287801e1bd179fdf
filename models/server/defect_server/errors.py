"""Errors the server turns into answers, each carrying what a client or operator must know."""

from __future__ import annotations


class BadInput(ValueError):
    """The request cannot be served as sent: a 4xx naming the field and what is wrong."""

    def __init__(self, field: str, problem: str, status: int = 400) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
        self.status = status


class ModelRejected(RuntimeError):
    """The model artifact could not be fetched, verified or loaded; the server will not serve it.

    ``retryable``: the failure may pass by itself (network, store unavailable), so the server
    tries again later; a digest mismatch or a broken file never is.
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
