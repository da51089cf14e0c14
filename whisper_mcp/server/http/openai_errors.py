"""OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``:
what every answer under ``/v1/`` says when it refuses, the access guard's
included, so OpenAI's clients read our errors as they read OpenAI's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

V1_PREFIX = "/v1/"


def error_body(
    message: str, status: int, *, type_: str | None = None, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    # OpenAI's schema wants all four fields; param and code may be null.
    kind = type_ or ("server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(
    message: str,
    status: int,
    *,
    type_: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_body(message, status, type_=type_, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)
