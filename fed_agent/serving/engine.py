"""One inference worker over an agent's module chain, with a bounded admission queue.

The modules share process-wide base models and swap adapters per request, and two forward
passes on two CPU cores only slow each other down, so requests run one at a time on a single
worker thread, in arrival order. Admission is bounded: at most ``max_queue`` requests are
running or waiting; the next one is refused at once (the app answers 503) instead of queueing
without end. A request is admitted by a :class:`Ticket`; cancelling it (its client went away)
gives its place back at once, skips it if it is still waiting and stops its decoding at the
next token if it is running.

Prompts are checked before admission (:meth:`AgentEngine.prepare`, meant to run off the event
loop): a prompt longer than a module's context window is refused, never cut, so the usage
figures count what the model reads (a chat template's own tokens included).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fed_agent.data.tasks import Example
from fed_agent.modules.batching import prompt_tokens_read, prompt_window
from fed_agent.modules.generation import Delta
from fed_agent.runtime import AgentRuntime, ChainedModule

_DONE = object()
SERVED_TASK = "serve"
"""The task name of a served request (it has no reference answer)."""
CONTEXT_EXCEEDED = "context_length_exceeded"
"""OpenAI's error code for a prompt longer than the model's context."""
MAX_IMAGE_PIXELS = 4096 * 4096
"""Largest image read (width x height, from its header, before it is decoded): a small
compressed file can declare a huge image, whose decoding would take seconds and gigabytes."""


class RequestError(ValueError):
    """A request the agent cannot answer as given (the app answers 400)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


class Ticket:
    """A request's place in the queue; released once, however the request ends."""

    def __init__(self, engine: AgentEngine) -> None:
        self._engine = engine
        self._held = True
        self.cancelled = threading.Event()
        """Set when the request's client went away: the worker skips or stops it."""

    def release(self) -> None:
        """Give the place back (idempotent, from any thread)."""
        with self._engine._lock:
            if not self._held:
                return
            self._held = False
            self._engine._pending -= 1

    def cancel(self) -> None:
        """The client went away: stop the request's work and give its place back now."""
        if not self.cancelled.is_set():
            self.cancelled.set()
            with self._engine._lock:
                self._engine._abandoned += 1
        self.release()

    def __del__(self) -> None:  # a stream dropped before it started still frees its place
        self.release()


class AgentEngine:
    """An agent runtime behind one worker thread and a bounded queue."""

    def __init__(self, runtime: AgentRuntime, max_queue: int, image_size: int) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.runtime = runtime
        self.max_queue = max_queue
        self.image_size = image_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent")
        self._lock = threading.RLock()  # a Ticket released by the GC may hold it already
        self._pending = 0
        self._abandoned = 0
        self._longest_token: dict[int, int] = {}

    @property
    def pending(self) -> int:
        """Requests admitted and not finished (running + waiting)."""
        return self._pending

    @property
    def abandoned(self) -> int:
        """Requests cancelled so far because their client went away before the answer."""
        return self._abandoned

    @property
    def chain(self) -> list[str]:
        return [part.name for part in self.runtime.modules]

    @property
    def is_vision(self) -> bool:
        """Whether the agent's last module reads an image with every request."""
        return self.runtime.modules[-1].module.base.is_vision

    def admit(self) -> Ticket | None:
        """A place in the queue, or None when ``max_queue`` requests are in already."""
        with self._lock:
            if self._pending >= self.max_queue:
                return None
            self._pending += 1
        return Ticket(self)

    def request(self, prompt: str, image_url: str | None) -> Example:
        """The runtime's request for a prompt and an optional image data URL."""
        if image_url is not None and not self.is_vision:
            raise RequestError("this agent reads no images: send text only", "messages")
        if image_url is None and self.is_vision:
            raise RequestError(
                "this agent reads an image with every request: send one image_url part "
                "(a data:image/png;base64 URL) in the user message of /v1/chat/completions",
                "messages",
            )
        image = None if image_url is None else decode_image(image_url, self.image_size)
        return Example(SERVED_TASK, prompt, "", image)

    @staticmethod
    def prompt_window(part: ChainedModule) -> int:
        """The most prompt tokens ``part`` reads (its context less BOS, the image's tokens and
        the first answer token's place; a classifier's less its special tokens)."""
        return prompt_window(part.module.base, part.module.cfg.max_seq_len)

    def _max_token_chars(self, tokenizer) -> int:
        """The longest vocabulary entry, in characters: a prompt of ``n`` tokens has at most
        ``n`` times this many characters (each token covers at least one character)."""
        key = id(tokenizer)
        if key not in self._longest_token:
            self._longest_token[key] = max(map(len, tokenizer.get_vocab()), default=1)
        return self._longest_token[key]

    def prompt_tokens(self, prompt: str) -> int:
        """Tokens of ``prompt`` as every module's tokenizer counts them, checked against each
        module's context window; the last module's count.

        Raises
        ------
        RequestError
            With code ``context_length_exceeded`` when a module would not read all of it. A
            prompt too long in characters to fit is refused before it is tokenized; so is one
            that is not valid Unicode (a lone surrogate, which no tokenizer can encode).
        """
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as err:  # JSON's "\ud800" escapes decode to lone surrogates
            raise RequestError(
                f"the prompt is not valid Unicode: a lone surrogate (U+{ord(prompt[err.start]):04X})"
                f" at character {err.start}; send UTF-8 text",
                "prompt",
            ) from None
        count = 0
        for part in self.runtime.modules:
            tokenizer = part.module.base.tokenizer
            window = self.prompt_window(part)
            if len(prompt) > window * self._max_token_chars(tokenizer):
                raise RequestError(
                    f"the prompt has {len(prompt)} characters: more than the {window} tokens "
                    f"module {part.name!r} reads can hold; shorten it",
                    "prompt",
                    CONTEXT_EXCEEDED,
                )
            count = prompt_tokens_read(part.module.base, prompt)
            if count > window:
                raise RequestError(
                    f"the prompt has {count} tokens, above the {window} that module "
                    f"{part.name!r} reads; shorten it",
                    "prompt",
                    CONTEXT_EXCEEDED,
                )
        return count

    def prepare(self, prompt: str, image_url: str | None) -> tuple[Example, int]:
        """The runtime's request and its prompt tokens (CPU work: run it off the event loop).

        Raises RequestError for a request the agent cannot answer (see :meth:`request` and
        :meth:`prompt_tokens`).
        """
        request = self.request(prompt, image_url)
        if not prompt:
            raise RequestError(
                "the last user message has no text (the agent needs one)", "messages"
            )
        return request, self.prompt_tokens(prompt)

    async def generate(
        self, request: Example, max_tokens: int, ticket: Ticket, stop_at_eos: bool = True
    ) -> AsyncIterator[Delta]:
        """The answer's steps as the worker decodes them (waiting for the worker first).

        The worker skips the request if ``ticket`` is cancelled before its turn, stops at the
        next token if it is cancelled while decoding, and releases ``ticket`` when it is done.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: the server is shutting down
                pass

        def work() -> None:
            try:
                if ticket.cancelled.is_set():
                    return
                for delta in self.runtime.stream(request, max_tokens, stop_at_eos):
                    if ticket.cancelled.is_set():
                        break
                    put(delta)
            except Exception as err:  # handed to the request that asked, never lost
                put(err)
            finally:
                ticket.release()
                put(_DONE)

        self._executor.submit(work)
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            ticket.cancelled.set()  # the reader is gone: nothing more to decode

    def close(self) -> None:
        """Stop the worker (running requests finish their current token)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def decode_image(url: str, size: int) -> np.ndarray:
    """A ``data:image/...;base64,`` URL -> a (3, size, size) float32 image in [-1, 1].

    The same scaling as the training images (``fed_agent.data.render``). An image above
    :data:`MAX_IMAGE_PIXELS` is refused from its header, before it is decoded.
    """
    from PIL import Image, UnidentifiedImageError
    from PIL.Image import DecompressionBombError

    header, sep, payload = url.partition(",")
    if not (sep and header.startswith("data:image/") and header.endswith(";base64")):
        raise RequestError(
            "image_url must be a data:image/...;base64 URL (nothing is fetched)", "messages"
        )
    too_big = RequestError(
        f"image_url holds an image above the {MAX_IMAGE_PIXELS} pixels read; send a smaller one",
        "messages",
    )
    try:
        raw = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(raw)) as opened:  # reads the header only
            if opened.width * opened.height > MAX_IMAGE_PIXELS:
                raise too_big
            image = opened.convert("RGB").resize((size, size))
    except DecompressionBombError:  # PIL's own, far higher limit, checked on opening
        raise too_big from None
    except RequestError:
        raise
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as err:
        raise RequestError(f"image_url does not hold a readable image ({err})", "messages") from err
    pixels = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
