"""Errors of the HTTP service: every one is answered as `{"error": {"code", "message"}}` with an HTTP status, never
with a stack trace or a server path."""

from __future__ import annotations

from fastapi.responses import JSONResponse

__all__ = ["STATUS_CODES", "ApiError", "error_response"]


class ApiError(Exception):
    """An error answered to the client as {"error": {"code", "message"}} with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error body with `status` (and `headers`, e.g. Retry-After)."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


#: Error code of each HTTP status that Starlette raises itself (404, 405, ...).
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
                 500: "internal_error", 503: "unavailable", 504: "timeout"}
