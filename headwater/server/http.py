"""HTTP plumbing shared by every endpoint: JSON in and out, request limits, and errors as JSON.

Every error a client can cause leaves as `{"error": "<stable code>", "message": "..."}` with the
status from `headwater.client.remote.ERRORS` (`wire_error`) (or `ApiError` for what only HTTP can get wrong:
malformed JSON, a body too large, a bad parameter, a missing token), so that a client in any
language can branch on the code and a Python client can raise the same exception class.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, overload

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from headwater.client.remote import wire_error
from headwater.errors import AckTimeout, DefinitionError, HandlerError, HeadwaterError, NotFound, SchemaError

__all__ = ["ApiError", "Endpoint", "MAX_BODY_BYTES_DEFAULT", "error_response", "json_response", "read_body", "endpoint"]

_log = logging.getLogger("headwater.server")

MAX_BODY_BYTES_DEFAULT = 1024 * 1024  # 1 MiB: a request body above this is refused with 413
CLIENT_CLOSED = 499  # the status counted for a request whose client left before its body arrived (never sent)


class ApiError(Exception):
    """An error only the HTTP layer can produce (bad JSON, body too large, bad parameter, no token)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _encode_fallback(value: Any) -> Any:
    # Query and topology results are arbitrary Python objects; one without a JSON form is sent
    # as its repr rather than failing a request whose append already happened. A str subclass
    # (hw.ModuleInfo) is its text.
    return str(value) if isinstance(value, str) else repr(value)


_encoder = msgspec.json.Encoder(enc_hook=_encode_fallback)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    status, content = json_answer(body, status)
    return Response(content, status, headers=headers, media_type="application/json")


def json_answer(body: Any, status: int = 200) -> tuple[int, bytes]:
    """The status and JSON bytes of an answer (a 500 error if `body` has no JSON form)."""
    try:
        return status, _encoder.encode(body)
    except (TypeError, msgspec.EncodeError) as e:  # e.g. a dict keyed by tuples has no JSON form
        return error_answer(ApiError(500, "internal_error", f"the result has no JSON form: {e}"))


def _body_of(error: BaseException) -> tuple[int, dict[str, Any]]:
    if isinstance(error, ApiError):
        return error.status, {"error": error.code, "message": error.message, **error.extra}
    assert isinstance(error, HeadwaterError)
    status, code = wire_error(error)
    body: dict[str, Any] = {"error": code, "message": str(error)}
    if isinstance(error, HandlerError):
        # The message already ends with the traceback; send it once, in its own field.
        body["message"] = str(error).split("\n\nremote traceback:\n", 1)[0]
        body.update(remote_traceback=error.remote_traceback, error_type=error.error_type, topology=error.topology,
                    partition=error.partition, offset=error.offset)
    elif isinstance(error, AckTimeout):
        body.update(partition=error.partition, offset=error.offset, durable=error.offset is not None)
    elif isinstance(error, SchemaError):
        body["path"] = error.path
    elif isinstance(error, NotFound):
        body.update(kind=error.kind, name=error.name, known=error.known[:50])
    elif isinstance(error, DefinitionError) and getattr(error, "changes", None):
        body["changes"] = error.changes
    return status, body


def error_response(error: BaseException) -> Response:
    status, content = error_answer(error)
    return Response(content, status, media_type="application/json")


def error_answer(error: BaseException) -> tuple[int, bytes]:
    status, body = _body_of(error)
    return status, _encoder.encode(body)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer: not a server error, and counted apart (nginx's 499) in /metrics.
        raise ApiError(CLIENT_CLOSED, "client_closed", "the client closed the connection before sending the "
                       "whole body; nothing was done") from None
    return b"".join(chunks)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {max_bytes:,} bytes; "
                    "send smaller batches, or start the server with a larger --max-body-bytes")


def decode_json(body: bytes, kind: Any = Any, *, what: str = "the request body") -> Any:
    """`body` decoded into `kind`: 400 malformed_json if it is not JSON, 422 if it does not fit."""
    from headwater.engine.events import schema_error

    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as e:
        raise schema_error(f"{what} does not match the expected type", e) from None
    except msgspec.DecodeError as e:
        raise ApiError(400, "malformed_json", f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise too_deep(what) from None


def too_deep(what: str) -> ApiError:
    """The error for JSON nested deeper than the decoder goes (about a thousand levels)."""
    return ApiError(400, "malformed_json", f"{what} nests arrays or objects too deeply to decode; "
                    "no headwater value needs more than a few dozen levels")


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(fn: Endpoint) -> Endpoint:
    """Turn every exception an endpoint raises into its JSON error response, and count the request."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            response = await fn(request)
        except Exception as e:
            status, content = answer_for_error(request, e)
            response = Response(content, status, media_type="application/json")
        count_request(request, fn.__name__, response.status_code)
        return response

    return wrapper


def answer_for_error(request: Any, error: Exception) -> tuple[int, bytes]:
    """The JSON error answer for an exception an endpoint raised (a 500 for our own bugs, logged)."""
    if isinstance(error, (ApiError, HeadwaterError)):
        return error_answer(error)
    if isinstance(error, ValueError):  # argument checks of the client API (bad partition, bad ack, ...)
        return error_answer(ApiError(400, "bad_request", str(error)))
    _log.error("internal error serving %s %s\n%s", request.method, request.url.path,
               "".join(traceback.format_exception(error)))
    return error_answer(ApiError(500, "internal_error", f"{type(error).__name__}: {error}"))


def count_request(request: Any, endpoint_name: str, status: int) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.observe_request(endpoint_name, status)


@overload
def query_int(request: Request, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int: ...


@overload
def query_int(request: Request, name: str, default: None = None, *, minimum: int = 0,
              maximum: int | None = None) -> int | None: ...


def query_int(request: Request, name: str, default: int | None = None, *, minimum: int = 0,
              maximum: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"query parameter {name}={raw!r} must be an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum:,}" if maximum is not None else ""
        raise ApiError(400, "bad_request", f"query parameter {name}={value} must be at least {minimum}{upper}")
    return value


def query_float(request: Request, name: str, default: float, *, maximum: float) -> float:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"query parameter {name}={raw!r} must be a number") from None
    if not 0 < value <= maximum:
        raise ApiError(400, "bad_request", f"query parameter {name}={value} must be above 0 and at most {maximum}")
    return value


def query_bool(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0", ""):
        raise ApiError(400, "bad_request", f"query parameter {name}={raw!r} must be true or false")
    return raw in ("true", "1")


def query_json(request: Request, name: str) -> Any:
    """A JSON query parameter; text that is not valid JSON is taken as a string (`start=ada`)."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw
    except RecursionError:
        raise too_deep(f"query parameter {name}") from None
