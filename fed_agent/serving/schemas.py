"""The OpenAI request bodies the agent server accepts, and the bodies it answers with.

Requests follow the OpenAI completions and chat completions APIs. Fields the agent has no use
for (``temperature``, ``top_p``, ``user``, ...) are accepted and ignored: decoding is greedy.
``ignore_eos`` (as in vLLM's OpenAI server) decodes exactly ``max_tokens`` tokens, which is
what latency benchmarks time. Chat requests answer the last user message: the agent's modules
are single-turn (a scene in, a decision out), so earlier turns are not part of the prompt.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    stream: StrictBool = False
    n: StrictInt = Field(default=1, ge=1, le=1)
    """One answer per request (greedy decoding gives the same answer every time)."""
    ignore_eos: StrictBool = False
    stream_options: StreamOptions | None = None


class StreamOptions(BaseModel):
    """``include_usage``: a last chunk with the token counts (OpenAI's stream option)."""

    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


class CompletionRequest(_Request):
    """``POST /v1/completions``."""

    prompt: StrictStr | list[StrictStr] = Field(min_length=1)
    """One prompt (a list must hold exactly one: one request, one answer)."""

    def text(self) -> str:
        """The prompt."""
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ValueError(f"prompt: give one prompt, got a list of {len(self.prompt)}")
            return self.prompt[0]
        return self.prompt


class ImageUrl(BaseModel):
    url: StrictStr
    """A ``data:image/...;base64,`` URL (the server fetches nothing)."""


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "image_url"]
    text: StrictStr | None = None
    image_url: ImageUrl | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[ContentPart] | None = None


class ChatRequest(_Request):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)

    def user_turn(self) -> tuple[str, str | None]:
        """The last user message: its text and its first image's URL (if any)."""
        users = [m for m in self.messages if m.role == "user"]
        if not users:
            raise ValueError("messages: no message with role 'user'")
        content = users[-1].content
        if content is None or isinstance(content, str):
            return content or "", None
        text = "\n".join(p.text or "" for p in content if p.type == "text")
        images = [p.image_url.url for p in content if p.type == "image_url" and p.image_url]
        if len(images) > 1:
            raise ValueError(f"messages: the agent reads one image per request, got {len(images)}")
        return text, images[0] if images else None


_Request.model_rebuild()
CompletionRequest.model_rebuild()
ChatRequest.model_rebuild()


def completion_id(chat: bool) -> str:
    """A fresh response id, prefixed as OpenAI's are."""
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _envelope(object_: str, id_: str, model: str, choices: list, **extra: object) -> dict:
    return {
        "id": id_,
        "object": object_,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        **extra,
    }


def completion_body(
    chat: bool, id_: str, model: str, text: str, finish_reason: str, counts: dict[str, int]
) -> dict:
    """The whole (non-streamed) answer."""
    choice: dict = {"index": 0, "finish_reason": finish_reason}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice |= {"text": text, "logprobs": None}
    kind = "chat.completion" if chat else "text_completion"
    return _envelope(kind, id_, model, [choice], usage=counts)


def chunk_body(
    chat: bool, id_: str, model: str, text: str, finish_reason: str | None, first: bool
) -> dict:
    """One streamed piece of the answer (server-sent event data)."""
    choice: dict = {"index": 0, "finish_reason": finish_reason}
    if chat:
        choice["delta"] = {"role": "assistant", "content": text} if first else {"content": text}
    else:
        choice |= {"text": text, "logprobs": None}
    return _envelope(_chunk_kind(chat), id_, model, [choice])


def usage_chunk(chat: bool, id_: str, model: str, counts: dict[str, int]) -> dict:
    """The last streamed piece when ``stream_options.include_usage`` is set."""
    return _envelope(_chunk_kind(chat), id_, model, [], usage=counts)


def _chunk_kind(chat: bool) -> str:
    return "chat.completion.chunk" if chat else "text_completion"


def error_body(message: str, kind: str, param: str | None = None) -> dict:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}
