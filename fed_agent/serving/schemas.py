"""The OpenAI request bodies the agent server accepts, and the bodies it answers with.

Requests follow the OpenAI completions and chat completions APIs. Decoding is greedy: the
answer is the temperature-0 one. ``temperature`` and ``top_p`` are validated (finite numbers
in OpenAI's ranges; anything else is a 400) and otherwise do not change the answer. Fields
whose other values would ask for what greedy single-answer decoding cannot give (stop
sequences, log-probabilities, penalties, logit biases, tools, a JSON response format, echo,
``best_of``, audio, web search) accept only their neutral value (omitted, null, 0, false, 1,
``"text"``, ``["text"]``, or an empty list or object); any other value is a 400 naming the
field, never an answer that silently ignores it. Every field may be null, as in OpenAI's API,
meaning its default. ``stream_options`` goes with ``"stream": true`` only (a 400 otherwise, as
in OpenAI's API). Fields unknown to both APIs are ignored, and so are OpenAI's fields that do
not change a greedy text answer (``store``, ``metadata``, ``service_tier``, ``prediction``,
``parallel_tool_calls``, ...).

``max_completion_tokens`` (OpenAI's current name) and ``max_tokens`` both cap the answer;
giving both with different values is a 400. ``ignore_eos`` (as in vLLM's OpenAI server)
decodes exactly that many tokens, which is what latency benchmarks time. Chat requests answer
the last user message: the agent's modules are single-turn (a scene in, a decision out), so
earlier turns are not part of the prompt. A prompt (or the last user message's text) must not
be empty.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)


def _integral(value: object) -> object:
    """A float without a fraction is an integer (as JSON Schema counts them): 2.0 -> 2."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _only(neutral: object):
    def check(value: object) -> object:
        if value != neutral:
            raise ValueError(f"only {neutral!r} is supported")
        return value

    return AfterValidator(check)


T = TypeVar("T")
Integral = Annotated[StrictInt, BeforeValidator(_integral)]
Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]
TokenCount = Annotated[StrictInt, Field(ge=1), BeforeValidator(_integral)]
OnlyFalse = Annotated[StrictBool, _only(False), WithJsonSchema({"const": False})]
OnlyZero = Annotated[Integral, _only(0), WithJsonSchema({"const": 0})]
OnlyOne = Annotated[Integral, _only(1), WithJsonSchema({"const": 1})]
OnlyNone = Annotated[Literal["none"], WithJsonSchema({"const": "none"})]
OnlyText = Annotated[list[StrictStr], _only(["text"]), WithJsonSchema({"const": ["text"]})]
Nothing = Annotated[T, Field(max_length=0)]
"""An empty list or object (``stop: []``, ``logit_bias: {}``): it asks for nothing."""

UNSUPPORTED = {
    "n": "decoding is greedy: one answer per request, n must be 1",
    "stop": "stop sequences are not supported",
    "logprobs": "log-probabilities are not returned",
    "top_logprobs": "log-probabilities are not returned",
    "echo": "echo is not supported",
    "suffix": "suffix (insertion) is not supported",
    "best_of": "decoding is greedy: best_of must be 1",
    "presence_penalty": "penalties are not supported: send 0",
    "frequency_penalty": "penalties are not supported: send 0",
    "logit_bias": "logit_bias is not supported",
    "tools": "tools are not supported",
    "tool_choice": "tools are not supported",
    "functions": "functions are not supported",
    "function_call": "functions are not supported",
    "response_format": "only the text response format is supported",
    "modalities": 'only text is answered: modalities must be ["text"]',
    "audio": "audio answers are not supported",
    "web_search_options": "web search is not supported",
}
"""Fields accepted only with their neutral value, and why (the 400 message says it)."""


class StreamOptions(BaseModel):
    """``include_usage``: a last chunk with the token counts (OpenAI's stream option)."""

    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    """OpenAI's current name for ``max_tokens`` (either may be given; both must agree)."""
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    n: OnlyOne | None = None
    """One answer per request (greedy decoding gives the same answer every time)."""
    ignore_eos: StrictBool | None = None
    temperature: Annotated[Finite, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Finite, Field(ge=0, le=1)] | None = None
    seed: Integral | None = None
    """Accepted: greedy decoding gives the same answer for every seed."""
    user: StrictStr | None = None
    stop: Nothing[list] | None = None
    logprobs: OnlyFalse | None = None
    top_logprobs: OnlyZero | None = None
    echo: OnlyFalse | None = None
    suffix: None = None
    best_of: OnlyOne | None = None
    presence_penalty: Annotated[Finite, Field(ge=0, le=0)] | None = None
    frequency_penalty: Annotated[Finite, Field(ge=0, le=0)] | None = None
    logit_bias: Nothing[dict] | None = None
    tools: Nothing[list] | None = None
    tool_choice: OnlyNone | None = None
    functions: Nothing[list] | None = None
    function_call: OnlyNone | None = None
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _one_token_cap(self) -> _Request:
        both = (self.max_tokens, self.max_completion_tokens)
        if None not in both and both[0] != both[1]:
            raise ValueError(
                f"max_tokens ({both[0]}) and max_completion_tokens ({both[1]}) differ: give one"
            )
        return self

    @field_validator("stream_options")
    @classmethod
    def _with_a_stream(cls, value: StreamOptions | None, info: ValidationInfo) -> object:
        if value is not None and not info.data.get("stream"):
            raise ValueError('only allowed with "stream": true')
        return value

    def token_cap(self, default: int) -> int:
        """Tokens to decode: ``max_completion_tokens``, else ``max_tokens``, else ``default``."""
        for value in (self.max_completion_tokens, self.max_tokens):
            if value is not None:
                return value
        return default


def _ids(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_prompt(value: object) -> str:
    """A prompt as a string or a list of one string; never empty (nor token ids, which OpenAI's
    API takes as one list of ints or a list of such lists)."""
    if (
        isinstance(value, list)
        and value
        and all(_ids(v) or (isinstance(v, list) and v and all(map(_ids, v))) for v in value)
    ):
        raise ValueError("token ids are not read: send the prompt as text")
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"give one prompt, got a list of {len(value)}")
        value = value[0]
    if not isinstance(value, str):
        raise ValueError("give a string (or a list of one string)")
    if not value:
        raise ValueError("the prompt is empty (the agent needs text)")
    return value


_NON_EMPTY = {"type": "string", "minLength": 1}
_PROMPT_SCHEMA = {
    "anyOf": [_NON_EMPTY, {"type": "array", "items": _NON_EMPTY, "minItems": 1, "maxItems": 1}]
}


class CompletionRequest(_Request):
    """``POST /v1/completions``."""

    prompt: Annotated[str, PlainValidator(_one_prompt), WithJsonSchema(_PROMPT_SCHEMA)]
    """One non-empty prompt (a list must hold exactly one: one request, one answer)."""

    def text(self) -> str:
        """The prompt."""
        return self.prompt


class ImageUrl(BaseModel):
    url: StrictStr
    """A ``data:image/...;base64,`` URL (the server fetches nothing)."""


PART_TYPES = ("text", "image_url", "refusal")
"""Content part types read (a refusal only stands in an earlier assistant turn's content)."""


class ContentPart(BaseModel):
    """One part of a message: its ``type`` names the field that carries it, which is required
    (an ``image_url`` part without its image is a 400, not a part silently skipped)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "oneOf": [
                {
                    "properties": {"type": {"const": t}, t: {"not": {"type": "null"}}},
                    "required": [t],
                }
                for t in PART_TYPES
            ]
        },
    )

    type: Literal[PART_TYPES]
    text: StrictStr | None = None
    image_url: ImageUrl | None = None
    refusal: StrictStr | None = None

    @model_validator(mode="after")
    def _carries_its_field(self) -> ContentPart:
        if getattr(self, self.type) is None:
            raise ValueError(f"a part of type {self.type!r} needs its {self.type!r} field")
        return self


def _as_parts(value: object) -> object:
    """A string is one text part. Anything but a string, a list or null is refused here, so
    the 400 says what content may be (not what one branch of a union expected)."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if value is not None and not isinstance(value, list):
        raise ValueError("content must be a string, a list of content parts or null")
    return value


def _string_too(schema: dict) -> None:
    schema["anyOf"].insert(0, {"type": "string"})


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[list[ContentPart] | None, BeforeValidator(_as_parts)] = Field(
        None, json_schema_extra=_string_too
    )
    """A string, a list of parts or null (a string is read as one text part)."""


MAX_MESSAGES = 2048
"""Most messages in a chat request (OpenAI's limit), and most content parts in all of them: a
1 MiB body could hold tens of thousands, whose validation alone holds up the event loop."""


def _few_parts(messages: object) -> object:
    """Refuse more than :data:`MAX_MESSAGES` content parts in all, before they are validated."""
    if isinstance(messages, list):
        lists = (m.get("content") for m in messages if isinstance(m, dict))
        parts = sum(len(c) for c in lists if isinstance(c, list))
        if parts > MAX_MESSAGES:
            raise ValueError(f"{parts} content parts in all: at most {MAX_MESSAGES} are read")
    return messages


class ChatRequest(_Request):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], BeforeValidator(_few_parts)] = Field(
        min_length=1, max_length=MAX_MESSAGES
    )
    modalities: OnlyText | None = None
    audio: None = None
    web_search_options: None = None

    def user_turn(self) -> tuple[str, str | None]:
        """The last user message: its text and its first image's URL (if any).

        Raises ValueError for no user message, more than one image, or neither text nor image
        (an image without text is refused later, once the image is known to fit the agent).
        """
        users = [m for m in self.messages if m.role == "user"]
        if not users:
            raise ValueError("messages: no message with role 'user'")
        parts = users[-1].content or []
        text = "\n".join(p.text or "" for p in parts if p.type == "text")
        images = [p.image_url.url for p in parts if p.type == "image_url" and p.image_url]
        if len(images) > 1:
            raise ValueError(f"messages: the agent reads one image per request, got {len(images)}")
        if not (text or images):
            raise ValueError("messages: the last user message has no text (the agent needs one)")
        return text, images[0] if images else None


class _Usage(BaseModel):
    prompt_tokens: int
    """Tokens of the prompt the last module read, as its tokenizer counts them (a prompt above
    the context is refused, never cut; in a chain, the upstream answers prefixed to it count
    too, and if they push it over the context it is cut and this counts what is left)."""
    completion_tokens: int
    total_tokens: int


class _Reply(BaseModel):
    id: str
    object: str
    created: int
    model: str


class _CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None


class CompletionResponse(_Reply):
    """A whole ``text_completion`` (``stream`` false)."""

    object: Literal["text_completion"]
    choices: list[_CompletionChoice]
    usage: _Usage


class _AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class _ChatChoice(BaseModel):
    index: int
    message: _AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(_Reply):
    """A whole ``chat.completion`` (``stream`` false)."""

    object: Literal["chat.completion"]
    choices: list[_ChatChoice]
    usage: _Usage


class _ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: _ErrorDetail


class _Queue(BaseModel):
    pending: int
    """Requests admitted and not finished (running + waiting)."""
    max: int
    abandoned: int
    """Requests cancelled so far because their client went away before the answer."""


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    chain: list[str]
    vision: bool
    queue: _Queue


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelEntry]


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


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``; the message
    on one line whatever it quotes (an exception's text may span several)."""
    message = " ".join(message.split())
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
