"""The agent server: an OpenAI-compatible FastAPI application over an :class:`AgentEngine`.

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (both also as server-sent
events with ``"stream": true``), ``GET /v1/models``, ``GET /v1/models/{model}`` and
``GET /health``. Every error has
OpenAI's body ``{"error": {"message", "type", "param", "code"}}`` with a one-line message,
and every status code the server answers is in its OpenAPI schema (``/openapi.json``):

* 400 for a malformed request (invalid JSON, a missing, mistyped or out-of-range field, a
  field this server cannot honour, ``max_tokens`` above the limit, an empty prompt, a prompt
  longer than the context (code ``context_length_exceeded``), an image for a text agent or
  one above ``engine.MAX_IMAGE_PIXELS``, ...);
* 404 for an unknown model (code ``model_not_found``) or path (``/v1/models/`` with a slash
  too: paths are not redirected); 405 (with ``Allow``) for a method a path does not take
  (``GET`` paths take ``HEAD`` too);
* 408 for a body not received in full within ``body_timeout_s``;
* 413 for a body above ``max_body_bytes`` (checked before the body is read in full);
* 415 (with ``Accept-Encoding: identity``) for a compressed body (a ``Content-Encoding``
  other than ``identity``): bodies are read as sent;
* 500 when the agent or the server fails on a request (before anything is streamed);
* 503 with ``Retry-After`` when ``max_queue`` requests are running or waiting already.

A client that goes away before its answer is complete (streamed or not) cancels its request:
its place in the queue is given back at once and its decoding stops at the next token (or
never starts). Prompts are tokenized off the event loop, after the body size limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import suppress

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fed_agent.serving.config import ServingConfig
from fed_agent.serving.engine import AgentEngine, RequestError, Ticket
from fed_agent.serving.schemas import (
    UNSUPPORTED,
    ChatCompletionResponse,
    ChatRequest,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    Health,
    ModelEntry,
    ModelList,
    chunk_body,
    completion_body,
    completion_id,
    error_body,
    usage,
    usage_chunk,
)

log = logging.getLogger(__name__)
RETRY_AFTER_S = 1
CLIENT_GONE = 499
"""Logged (nginx's convention) for a request whose client went away; nobody receives it."""
_UNBUFFERED = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""An event stream's headers: no cache or reverse proxy (nginx) holds its events back."""


class ApiError(Exception):
    """An error answered with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.param, self.code = param, code


class BodyGuard:
    """ASGI middleware: read a request body in full, within a size and a time limit.

    A compressed body (a ``Content-Encoding`` other than ``identity``) is refused (415), and
    a declared ``Content-Length`` above ``max_bytes`` (413), before anything is read; a body
    without one (chunked) is read up to the limit and refused once it passes it.
    A body not complete within ``timeout_s`` (shorter than its ``Content-Length``, or
    trickled) is refused with 408 and the connection closed. The application gets the body
    whole, so no handler ever waits on a slow client.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        coding = headers.get(b"content-encoding", b"identity").strip().lower()
        if coding != b"identity":
            message = (
                f"Content-Encoding {coding.decode('latin-1')!r} is not supported: "
                "send the body uncompressed"
            )
            await self._refuse(send, 415, message, [(b"accept-encoding", b"identity")])
            return
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send, 413, f"request body above {self.max_bytes} bytes")
            return
        body, more, gone, too_big = bytearray(), True, False, False
        try:
            async with asyncio.timeout(self.timeout_s):
                while more and not (gone or too_big):
                    message = await receive()
                    gone = message["type"] != "http.request"
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    too_big = len(body) > self.max_bytes
        except TimeoutError:
            message = f"the request body did not arrive in full within {self.timeout_s:g} s"
            await self._refuse(send, 408, message)
            return
        if gone:
            return
        if too_big:
            await self._refuse(send, 413, f"request body above {self.max_bytes} bytes")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Send, status: int, message: str, extra: list | None = None) -> None:
        body = json.dumps(error_body(message, "invalid_request_error")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        headers += extra or []
        headers.append((b"connection", b"close"))  # the rest of the body is never read
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return "the body is not valid JSON", None
    if loc == ("body",) and first.get("type") == "value_error":
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return message, None
    if loc == ("body",):
        return "the body must be a JSON object (send Content-Type: application/json)", None
    where = ".".join(str(p) for p in loc[1:]) or "body"
    field = str(loc[1]) if len(loc) > 1 else ""
    if field in UNSUPPORTED and first.get("type") != "missing":
        return f"{where}: {UNSUPPORTED[field]} (omit it or send its neutral value)", field
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}", where


_STATUS = {
    400: "a malformed request, or one this server cannot honour (the message says which field)",
    404: "a model other than the one served",
    408: "the request body did not arrive in full within the body timeout",
    413: "the request body is above the size limit",
    415: "the request body is compressed (Content-Encoding): send it uncompressed",
    500: "the agent failed on this request",
    503: "the queue is full: retry after Retry-After seconds",
}


def _errors(*codes: int) -> dict:
    responses: dict = {}
    for code in codes:
        responses[code] = {"model": ErrorResponse, "description": _STATUS[code]}
    retry = {"description": "seconds to wait", "schema": {"type": "integer"}}
    if 503 in responses:
        responses[503]["headers"] = {"Retry-After": retry}
    if 415 in responses:
        coding = {"description": "identity: the one coding read", "schema": {"type": "string"}}
        responses[415]["headers"] = {"Accept-Encoding": coding}
    return responses


_EVENT = {
    "type": "object",
    "description": "one server-sent event",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "data": {
            "type": "string",
            "description": "a chunk (chat.completion.chunk or text_completion) or an error "
            "body as JSON, or [DONE] to end the stream",
        },
    },
}


def _answer_responses(model: type) -> dict:
    stream = (
        'with "stream": true, server-sent events: "data: <chunk JSON>" per piece of the answer '
        "(chat.completion.chunk / text_completion), a usage chunk with "
        'stream_options.include_usage, then "data: [DONE]"'
    )
    ok = {
        "model": model,
        "description": f"the whole answer; {stream}",
        "content": {"text/event-stream": {"schema": _EVENT}},
    }
    return {200: ok, **_errors(400, 404, 408, 413, 415, 500, 503)}


async def _disconnected(request: Request) -> None:
    """Return once the client has gone away (the body is read in full already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _watch(request: Request, ticket: Ticket) -> None:
    """Cancel ``ticket`` when its client goes away (this task is cancelled on completion)."""
    await _disconnected(request)
    ticket.cancel()


def create_app(engine: AgentEngine, cfg: ServingConfig, model_name: str) -> ASGIApp:
    """The application serving ``engine`` as the model ``model_name`` (FastAPI inside the body
    guard)."""
    app = FastAPI(
        title=f"FedAgent {model_name}", docs_url=None, redoc_url=None, redirect_slashes=False
    )

    def openapi() -> dict:
        """FastAPI's schema without its 422 (validation errors are answered 400), with this
        server's ``max_tokens`` limit and one operation id per operation (FastAPI gives a
        GET + HEAD route's two operations the id of either method)."""
        if app.openapi_schema is None:
            with warnings.catch_warnings():  # the ids it warns about are made unique below
                warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
                schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path in schema["paths"].values():
                for method, operation in path.items():
                    operation["responses"].pop("422", None)
                    route_id = operation["operationId"].rsplit("_", 1)[0]  # less its method
                    operation["operationId"] = f"{route_id}_{method}"
            components = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            for name in ("CompletionRequest", "ChatRequest"):  # this server's own limit
                for field in ("max_tokens", "max_completion_tokens"):
                    for option in components[name]["properties"][field]["anyOf"]:
                        if option.get("type") == "integer":
                            option["maximum"] = cfg.max_tokens_limit
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if err.status == 503 else None
        body = error_body(err.message, err.kind, err.param, err.code)
        return JSONResponse(body, status_code=err.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(err)
        return JSONResponse(error_body(message, "invalid_request_error", param), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        """A failure no handler foresaw still gets OpenAI's error body (not a text page)."""
        body = error_body(f"the server failed on this request: {err}", "server_error")
        return JSONResponse(body, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        message = f"{request.method} {request.url.path}: {err.detail}"
        if err.status_code == 400 and err.__cause__ is not None:  # the body did not parse
            message = f"the body is not valid JSON ({err.__cause__})"
        return JSONResponse(
            error_body(message, kind), status_code=err.status_code, headers=err.headers
        )

    @app.api_route(
        "/health", methods=["GET", "HEAD"], response_model=Health, responses=_errors(408, 413, 415)
    )
    async def health() -> dict:
        return {
            "status": "ok",
            "model": model_name,
            "chain": engine.chain,
            "vision": engine.is_vision,
            "queue": {
                "pending": engine.pending,
                "max": engine.max_queue,
                "abandoned": engine.abandoned,
            },
        }

    entry = {"id": model_name, "object": "model", "created": 0, "owned_by": "fedagent"}

    @app.api_route(
        "/v1/models",
        methods=["GET", "HEAD"],
        response_model=ModelList,
        responses=_errors(408, 413, 415),
    )
    async def models() -> dict:
        return {"object": "list", "data": [entry]}

    @app.api_route(
        "/v1/models/{model:path}",
        methods=["GET", "HEAD"],
        response_model=ModelEntry,
        responses=_errors(404, 408, 413, 415),
    )
    async def model(model: str) -> dict:
        """OpenAI's model look-up (the client's ``models.retrieve``)."""
        _served(model)
        return entry

    def _served(model: str | None) -> None:
        if model is not None and model != model_name:
            raise ApiError(404, f"model {model!r} is not served here (only {model_name!r})",
                           "not_found_error", "model", "model_not_found")  # fmt: skip

    @app.post(
        "/v1/completions", response_model=None, responses=_answer_responses(CompletionResponse)
    )
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _answer(request, body, body.text(), None, chat=False)

    @app.post(
        "/v1/chat/completions",
        response_model=None,
        responses=_answer_responses(ChatCompletionResponse),
    )
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        try:
            prompt, image = body.user_turn()
        except ValueError as err:
            raise ApiError(400, str(err), "invalid_request_error", "messages") from err
        return await _answer(request, body, prompt, image, chat=True)

    async def _answer(http: Request, body, prompt: str, image: str | None, chat: bool) -> Response:
        _served(body.model)
        max_tokens = body.token_cap(cfg.default_max_tokens)
        if max_tokens > cfg.max_tokens_limit:
            field = "max_tokens" if body.max_completion_tokens is None else "max_completion_tokens"
            raise ApiError(400, f"{field} must be <= {cfg.max_tokens_limit}, got {max_tokens}",
                           "invalid_request_error", field)  # fmt: skip
        try:  # tokenizing and image decoding are CPU work: off the event loop
            request, prompt_tokens = await asyncio.to_thread(engine.prepare, prompt, image)
        except RequestError as err:
            raise ApiError(400, str(err), "invalid_request_error", err.param, err.code) from err
        ticket = engine.admit()
        if ticket is None:
            raise ApiError(503, f"the agent is busy: {engine.max_queue} requests queued; "
                           "retry later", "server_overloaded")  # fmt: skip
        watcher = asyncio.create_task(_watch(http, ticket))
        id_ = completion_id(chat)
        steps = engine.generate(request, max_tokens, ticket, stop_at_eos=not body.ignore_eos)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _events(steps, ticket, watcher, chat, id_, prompt_tokens, include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers=_UNBUFFERED)
        collector = asyncio.create_task(_collect(steps))
        try:
            await asyncio.wait({collector, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not collector.done():  # the client went away: stop its work, free its place
                collector.cancel()
                with suppress(asyncio.CancelledError):
                    await collector
                log.info("request %s cancelled: its client went away", id_)
                return Response(status_code=CLIENT_GONE)
            text, finish, tokens, read = collector.result()
        except Exception as err:
            log.exception("request %s failed", id_)
            raise ApiError(500, f"the agent failed on this request: {err}", "server_error") from err
        finally:
            watcher.cancel()
            ticket.release()
        counts = usage(prompt_tokens if read is None else read, tokens)
        return JSONResponse(completion_body(chat, id_, model_name, text, finish, counts))

    async def _collect(steps: AsyncIterator) -> tuple[str, str, int, int | None]:
        """The answer's text, finish reason, tokens and the prompt tokens the last module read
        (in a chain: with the upstream answers prefixed)."""
        text, finish, tokens, read = "", "stop", 0, None
        try:
            async for step in steps:
                text, tokens = text + step.text, tokens + step.tokens
                finish = step.finish_reason or finish
                read = step.prompt_tokens if read is None else read
        finally:
            await steps.aclose()
        return text, finish, tokens, read

    async def _events(
        steps: AsyncIterator,
        ticket: Ticket,
        watcher: asyncio.Task,
        chat: bool,
        id_: str,
        prompt_tokens: int,
        include_usage: bool,
    ) -> AsyncIterator[str]:
        tokens, first, ended = 0, True, False
        try:
            async for step in steps:
                tokens += step.tokens
                if step.prompt_tokens is not None:  # what the last module read
                    prompt_tokens = step.prompt_tokens
                if not (step.text or step.finish_reason or first):
                    continue  # a character still incomplete: nothing to show yet
                # the first token is sent at once (as OpenAI's first chunk, maybe empty)
                chunk = chunk_body(chat, id_, model_name, step.text, step.finish_reason, first)
                first = False
                yield f"data: {json.dumps(chunk)}\n\n"
            if include_usage:
                counts = usage(prompt_tokens, tokens)
                yield f"data: {json.dumps(usage_chunk(chat, id_, model_name, counts))}\n\n"
            ended = True
        except Exception as err:  # the status line is sent already: report in the stream
            log.exception("request %s failed while streaming", id_)
            error = error_body(f"the agent failed on this request: {err}", "server_error")
            yield f"data: {json.dumps(error)}\n\n"
            ended = True
        finally:
            watcher.cancel()
            if not ended:  # the response was dropped: its client went away
                ticket.cancel()
            ticket.release()
            await steps.aclose()
        yield "data: [DONE]\n\n"

    return BodyGuard(app, cfg.max_body_bytes, cfg.body_timeout_s)
