"""The agent server: an OpenAI-compatible FastAPI application over an :class:`AgentEngine`.

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (both also as server-sent
events with ``"stream": true``), ``GET /v1/models`` and ``GET /health``. Every error has
OpenAI's body ``{"error": {"message", "type", ...}}`` with a one-line message:

* 400 for a malformed request (invalid JSON, a missing or mistyped field, ``max_tokens``
  above the limit, an image for a text agent, ...), 404 for an unknown model or path;
* 413 for a body above ``max_body_bytes`` (checked before the body is read in full);
* 503 with ``Retry-After`` when ``max_queue`` requests are running or waiting already.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fed_agent.serving.config import ServingConfig
from fed_agent.serving.engine import AgentEngine, RequestError, Ticket
from fed_agent.serving.schemas import (
    ChatRequest,
    CompletionRequest,
    chunk_body,
    completion_body,
    completion_id,
    error_body,
    usage,
    usage_chunk,
)

log = logging.getLogger(__name__)
RETRY_AFTER_S = 1


class ApiError(Exception):
    """An error answered with OpenAI's error body."""

    def __init__(self, status: int, message: str, kind: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


class BodyLimit:
    """ASGI middleware: refuse a request body above ``max_bytes`` with 413.

    A declared ``Content-Length`` above the limit is refused before anything is read; a body
    without one (chunked) is read up to the limit, refused once it passes it, and else handed
    on whole.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._refuse(send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        message = f"request body above {self.max_bytes} bytes"
        body = json.dumps(error_body(message, "invalid_request_error")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    first = err.errors()[0]
    if first.get("type") == "json_invalid":
        return "the body is not valid JSON", None
    if tuple(first.get("loc", ())) == ("body",):
        return "the body must be a JSON object (send Content-Type: application/json)", None
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
    return f"{where}: {first.get('msg', 'invalid')}", where


def create_app(engine: AgentEngine, cfg: ServingConfig, model_name: str) -> ASGIApp:
    """The application serving ``engine`` as the model ``model_name`` (FastAPI inside a body
    size limit)."""
    app = FastAPI(title=f"FedAgent {model_name}", docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if err.status == 503 else None
        body = error_body(err.message, err.kind, err.param)
        return JSONResponse(body, status_code=err.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(err)
        return JSONResponse(error_body(message, "invalid_request_error", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        message = f"{request.method} {request.url.path}: {err.detail}"
        return JSONResponse(error_body(message, kind), status_code=err.status_code)

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": model_name,
            "chain": engine.chain,
            "vision": engine.is_vision,
            "queue": {"pending": engine.pending, "max": engine.max_queue},
        }

    @app.get("/v1/models")
    async def models() -> dict:
        entry = {"id": model_name, "object": "model", "created": 0, "owned_by": "fedagent"}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        try:
            prompt = body.text()
        except ValueError as err:
            raise ApiError(400, str(err), "invalid_request_error", "prompt") from err
        return await _answer(body, prompt, None, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        try:
            prompt, image = body.user_turn()
        except ValueError as err:
            raise ApiError(400, str(err), "invalid_request_error", "messages") from err
        return await _answer(body, prompt, image, chat=True)

    async def _answer(body, prompt: str, image: str | None, chat: bool):
        if body.model is not None and body.model != model_name:
            raise ApiError(404, f"model {body.model!r} is not served here (only {model_name!r})",
                           "not_found_error", "model")  # fmt: skip
        max_tokens = cfg.default_max_tokens if body.max_tokens is None else body.max_tokens
        if max_tokens > cfg.max_tokens_limit:
            raise ApiError(400, f"max_tokens must be <= {cfg.max_tokens_limit}, got {max_tokens}",
                           "invalid_request_error", "max_tokens")  # fmt: skip
        try:
            request = engine.request(prompt, image)
        except RequestError as err:
            raise ApiError(400, str(err), "invalid_request_error", "messages") from err
        ticket = engine.admit()
        if ticket is None:
            raise ApiError(503, f"the agent is busy: {engine.max_queue} requests queued; "
                           "retry later", "server_overloaded")  # fmt: skip
        id_ = completion_id(chat)
        steps = engine.generate(request, max_tokens, stop_at_eos=not body.ignore_eos)
        prompt_tokens = engine.prompt_tokens(prompt)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _events(steps, ticket, chat, id_, prompt_tokens, include_usage)
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            text, finish, tokens = "", "stop", 0
            async for step in steps:
                text, tokens = text + step.text, tokens + step.tokens
                finish = step.finish_reason or finish
        except Exception as err:
            log.exception("request %s failed", id_)
            raise ApiError(500, f"the agent failed on this request: {err}", "server_error") from err
        finally:
            ticket.release()
            await steps.aclose()
        return completion_body(chat, id_, model_name, text, finish, usage(prompt_tokens, tokens))

    async def _events(
        steps: AsyncIterator,
        ticket: Ticket,
        chat: bool,
        id_: str,
        prompt_tokens: int,
        include_usage: bool,
    ) -> AsyncIterator[str]:
        tokens, first = 0, True
        try:
            async for step in steps:
                tokens += step.tokens
                if not (step.text or step.finish_reason or first):
                    continue  # a character still incomplete: nothing to show yet
                # the first token is sent at once (as OpenAI's first chunk, maybe empty)
                chunk = chunk_body(chat, id_, model_name, step.text, step.finish_reason, first)
                first = False
                yield f"data: {json.dumps(chunk)}\n\n"
            if include_usage:
                counts = usage(prompt_tokens, tokens)
                yield f"data: {json.dumps(usage_chunk(chat, id_, model_name, counts))}\n\n"
        except Exception as err:  # the status line is sent already: report in the stream
            log.exception("request %s failed while streaming", id_)
            error = error_body(f"the agent failed on this request: {err}", "server_error")
            yield f"data: {json.dumps(error)}\n\n"
        finally:
            ticket.release()
            await steps.aclose()
        yield "data: [DONE]\n\n"

    return BodyLimit(app, cfg.max_body_bytes)
