"""One inference worker over an agent's module chain, with a bounded admission queue.

The modules share process-wide base models and swap adapters per request, and two forward
passes on two CPU cores only slow each other down, so requests run one at a time on a single
worker thread, in arrival order. Admission is bounded: at most ``max_queue`` requests are
running or waiting; the next one is refused at once (the app answers 503) instead of queueing
without end. A request whose client went away stops decoding at its next token.
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
from fed_agent.modules.generation import Delta
from fed_agent.runtime import AgentRuntime

_DONE = object()
SERVED_TASK = "serve"
"""The task name of a served request (it has no reference answer)."""


class RequestError(ValueError):
    """A request the agent cannot answer as given (the app answers 400)."""


class Ticket:
    """A request's place in the queue; released once, however the request ends."""

    def __init__(self, engine: AgentEngine) -> None:
        self._engine = engine
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._engine._release()

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
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def pending(self) -> int:
        """Requests admitted and not finished (running + waiting)."""
        return self._pending

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

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1

    def request(self, prompt: str, image_url: str | None) -> Example:
        """The runtime's request for a prompt and an optional image data URL."""
        if image_url is not None and not self.is_vision:
            raise RequestError("this agent reads no images: send text only")
        if image_url is None and self.is_vision:
            raise RequestError(
                "this agent reads an image with every request: send one image_url part "
                "(a data:image/png;base64 URL) in the user message of /v1/chat/completions"
            )
        image = None if image_url is None else decode_image(image_url, self.image_size)
        return Example(SERVED_TASK, prompt, "", image)

    def prompt_tokens(self, prompt: str) -> int:
        """Tokens of ``prompt`` as the last module's tokenizer counts them."""
        tokenizer = self.runtime.modules[-1].module.base.tokenizer
        return len(tokenizer.encode(prompt, add_special_tokens=False))

    async def generate(
        self, request: Example, max_tokens: int, stop_at_eos: bool = True
    ) -> AsyncIterator[Delta]:
        """The answer's steps as the worker decodes them (waiting for the worker first)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def work() -> None:
            try:
                for delta in self.runtime.stream(request, max_tokens, stop_at_eos):
                    if cancelled.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, delta)
            except Exception as err:  # handed to the request that asked, never lost
                loop.call_soon_threadsafe(queue.put_nowait, err)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        self._executor.submit(work)
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            cancelled.set()

    def close(self) -> None:
        """Stop the worker (running requests finish their current token)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def decode_image(url: str, size: int) -> np.ndarray:
    """A ``data:image/...;base64,`` URL -> a (3, size, size) float32 image in [-1, 1].

    The same scaling as the training images (``fed_agent.data.render``).
    """
    from PIL import Image, UnidentifiedImageError

    header, sep, payload = url.partition(",")
    if not (sep and header.startswith("data:image/") and header.endswith(";base64")):
        raise RequestError("image_url must be a data:image/...;base64 URL (nothing is fetched)")
    try:
        raw = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(raw)) as opened:
            image = opened.convert("RGB").resize((size, size))
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as err:
        raise RequestError(f"image_url does not hold a readable image ({err})") from err
    pixels = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
