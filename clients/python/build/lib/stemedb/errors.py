"""Exceptions. Every error the server answers is an RFC 9457 problem; it becomes a
`ProblemError` subclass chosen by HTTP status, carrying the stable `code`."""
from __future__ import annotations

from typing import Any, Optional


class StemeDBError(Exception):
    """Base class of every error this package raises."""


class TransportError(StemeDBError):
    """The server could not be reached, or answered something that is not HTTP/JSON."""


class VerificationError(StemeDBError):
    """A proof, a signed checkpoint or a signature did not verify."""


class KeyError_(StemeDBError):
    """A key file could not be read as an Ed25519 PKCS#8 PEM key."""


class ProblemError(StemeDBError):
    """The server refused the request with an `application/problem+json` answer."""

    def __init__(self, status: int, code: str, title: str, detail: str,
                 retry_after: Optional[float] = None, body: Optional[dict[str, Any]] = None):
        super().__init__(f"{status} {code}: {detail or title}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.retry_after = retry_after
        self.body = body or {}


class BadRequest(ProblemError):
    """400: malformed JSON, envelope or parameters."""


class Unauthorized(ProblemError):
    """401/403: the admin token is missing or wrong."""


class NotFound(ProblemError):
    """404."""


class Conflict(ProblemError):
    """409."""


class PayloadTooLarge(ProblemError):
    """413."""


class UnsupportedMediaType(ProblemError):
    """415."""


class InvalidStatement(ProblemError):
    """422: valid JSON, but the statement breaks a rule (schema, bad signature …)."""


class RateLimited(ProblemError):
    """429: slow down; `retry_after` says for how long (seconds)."""


class Unavailable(ProblemError):
    """503: the server is read-only, or this agent's circuit breaker is open."""


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Unauthorized, 404: NotFound,
              409: Conflict, 413: PayloadTooLarge, 415: UnsupportedMediaType,
              422: InvalidStatement, 429: RateLimited, 503: Unavailable}


def problem_error(status: int, body: Any, retry_after: Optional[str] = None) -> ProblemError:
    """The exception for an error answer (a problem body, or anything else the server sent)."""
    if not isinstance(body, dict):
        body = {"detail": str(body)[:500]}
    wait = None
    if retry_after is not None:
        try:
            wait = float(retry_after)
        except ValueError:
            wait = None
    cls = _BY_STATUS.get(status, ProblemError)
    return cls(status, str(body.get("code", "http_%d" % status)), str(body.get("title", "")),
               str(body.get("detail", "")), wait, body)
