"""Edges of every request: the body size limit and one error shape for every error.

* :class:`BodyLimit` refuses a body over ``AFDB_MAX_REQUEST_BYTES`` with 413: at once when
  Content-Length says so, otherwise (chunked) as soon as the bytes read pass the limit.
* The handlers give FastAPI's own errors (validation 422, routing 404/405, 413) the API's shape
  ``{"error": {"code", "message", "hint"}}``; an unexpected exception is a 500 with no internals.

* :func:`strict_query` (a router dependency) refuses unknown query parameters and a repeated
  one where the route takes one value.

``install(app)`` wires the first two (one line in the app factory).
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoforge_data.services.apikeys import InvalidKey

log = logging.getLogger(__name__)
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    503: "unavailable",
}


def error_response(
    status: int, code: str, message: str, hint: str | None = None, headers: Any = None
) -> JSONResponse:
    """The API's error body."""
    body = {"error": {"code": code, "message": message, "hint": hint}}
    return JSONResponse(body, status_code=status, headers=headers)


class TooLarge(HTTPException):
    """The request body passed the size limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of request body, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse early on Content-Length; count the bytes of a streamed body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise TooLarge(self.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except TooLarge:  # raised outside a route (e.g. a middleware read the body)
            if started:
                raise
            await _too_large(self.max_bytes)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> JSONResponse:
    return error_response(
        413,
        "too_large",
        f"the request body is larger than {limit} bytes",
        "send less, or raise AFDB_MAX_REQUEST_BYTES",
        headers={"Connection": "close"},
    )


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def install(app: FastAPI) -> None:
    """Add the body limit and the error handlers to ``app``."""
    app.add_middleware(BodyLimit, max_bytes=app.state.settings.max_request_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        hint = "see the API schema at /docs"
        return error_response(422, "invalid_input", _validation_message(exc), hint)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error" if exc.status_code >= 500 else "bad_request")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        hint = "send less, or raise AFDB_MAX_REQUEST_BYTES" if exc.status_code == 413 else None
        return error_response(exc.status_code, code, message, hint, headers=exc.headers)

    @app.exception_handler(InvalidKey)
    async def _unauthorized(request: Request, exc: InvalidKey) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="afdb"'}
        return error_response(401, exc.code, exc.message, exc.hint, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the type only: an exception's text may carry a query, a path or a value
        log.error("unexpected %s in %s %s", type(exc).__name__, request.method, request.url.path)
        return error_response(500, "internal", "internal error", "see the server log")


#: Query parameter prefixes a route accepts beyond its declared ones, by route path.
EXTRA_QUERY_PREFIXES: dict[str, tuple[str, ...]] = {}


async def strict_query(request: Request) -> None:
    """Refuse unknown query parameters (a typo is not silently ignored) and a repeated one where
    the route takes one value (FastAPI alone would keep the last): both are 422. Async, so
    FastAPI does not hop to a worker thread for it (a sync dependency costs one per request)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    names = dict(_query_names(dependant))
    extra = EXTRA_QUERY_PREFIXES.get(getattr(route, "path", ""), ())
    for name in request.query_params:
        if name not in names and not (extra and name.startswith(extra)):
            _refuse(name, "unknown query parameter")
        if not names.get(name, True) and len(request.query_params.getlist(name)) > 1:
            _refuse(name, "give this parameter once")


def _refuse(name: str, msg: str) -> None:
    raise RequestValidationError([{"type": "query", "loc": ("query", name), "msg": msg}])


def _query_names(dependant: Any) -> Iterator[tuple[str, bool]]:
    """(name, takes several values) of every query parameter of a route and its dependencies."""
    for param in dependant.query_params:
        yield param.alias, _is_multi(param.field_info.annotation)
    for sub in dependant.dependencies:
        yield from _query_names(sub)


def _is_multi(annotation: object) -> bool:
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin in (Union, types.UnionType, Annotated):
        return any(_is_multi(a) for a in get_args(annotation))
    return False
