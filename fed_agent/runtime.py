"""The deployed agent's runtime: load an agent directory and chain its modules per request.

Chaining contract
-----------------
* Modules run in the manifest's ``chain`` order, each on the same request (an
  :class:`~fed_agent.data.tasks.Example`: prompt text and, for a VLM, an image).
* A ``classify`` module (e.g. ``minilm-perception``) answers with a decision class; a
  ``generate`` module answers with greedy-decoded text whose first word is read as the action.
* A module whose manifest entry lists ``inputs`` sees the request prompt prefixed with one line
  per input, ``"<input name>: <that module's answer text>"``, in the order listed
  (:func:`chained_prompt`). A module trained without those lines should not list inputs: a
  module must be trained on prompts built by the same function.
* The agent's answer to a request is the last module's answer; every module's answer and time
  are kept for the evaluation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fed_agent.data.tasks import Example
from fed_agent.modules.adapter import AdapterState, AgentModule
from fed_agent.modules.generation import Answer, Delta, answer, stream_answer
from fed_agent.packaging.export import load_module, module_specs, read_manifest


def chained_prompt(prompt: str, upstream: Mapping[str, str], inputs: Sequence[str]) -> str:
    """``prompt`` prefixed by ``"<name>: <answer>"`` lines for each name of ``inputs``."""
    lines = [f"{name}: {upstream[name]}" for name in inputs]
    return "\n".join([*lines, prompt])


@dataclass
class ChainedModule:
    """One module of a running agent."""

    name: str
    module: AgentModule
    state: AdapterState
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Response:
    """The agent's answer to one request, with every module's answer in chain order."""

    answers: dict[str, Answer]
    total_s: float
    ttft_s: float
    """Time until the last module's first token (includes the upstream modules)."""

    @property
    def final(self) -> Answer:
        """The last module's answer: the agent's answer."""
        return list(self.answers.values())[-1]


class AgentRuntime:
    """A loaded agent: its modules, chained by the contract of this module's docstring."""

    def __init__(self, modules: Sequence[ChainedModule], manifest: dict) -> None:
        if not modules:
            raise ValueError("an agent runtime needs at least one module")
        self.modules = list(modules)
        self.manifest = manifest
        self._loaded: dict[int, str] = {}

    @classmethod
    def load(cls, agent_dir: Path, seed: int) -> AgentRuntime:
        """Load an agent directory (single- or multi-module) with bases from the registry."""
        manifest = read_manifest(agent_dir)
        modules = []
        for name, spec in module_specs(manifest).items():
            module, state = load_module(agent_dir, spec, seed)
            modules.append(ChainedModule(name, module, state, tuple(spec.get("inputs", ()))))
        return cls(modules, manifest)

    def activate(self, part: ChainedModule) -> AgentModule:
        """Load ``part``'s adapter unless it is already in its (possibly shared) module."""
        if self._loaded.get(id(part.module)) != part.name:
            part.module.load_adapter(part.state)
            self._loaded[id(part.module)] = part.name
        return part.module

    @staticmethod
    def _chained(request: Example, part: ChainedModule, answers: Mapping[str, Answer]) -> Example:
        """``request`` as ``part`` sees it: its inputs' answers prefixed to the prompt."""
        upstream = {k: a.text.strip() for k, a in answers.items()}
        prompt = chained_prompt(request.prompt, upstream, part.inputs)
        return dataclasses.replace(request, prompt=prompt)

    def stream(
        self, request: Example, max_new_tokens: int, stop_at_eos: bool = True
    ) -> Iterator[Delta]:
        """The agent's answer to ``request`` while its last module decodes it.

        Upstream modules answer in full first (their answers feed the last module's prompt,
        by the chaining contract); only the last module's text is streamed.
        ``stop_at_eos=False`` decodes exactly ``max_new_tokens`` per generator (timing).
        """
        answers: dict[str, Answer] = {}
        for part in self.modules[:-1]:
            answers[part.name] = answer(
                self.activate(part),
                self._chained(request, part, answers),
                max_new_tokens,
                stop_at_eos,
            )
        last = self.modules[-1]
        yield from stream_answer(
            self.activate(last), self._chained(request, last, answers), max_new_tokens, stop_at_eos
        )

    def respond(self, request: Example, max_new_tokens: int, stop_at_eos: bool = True) -> Response:
        """Run every module on ``request`` in chain order; see the chaining contract.

        ``stop_at_eos=False`` decodes exactly ``max_new_tokens`` per generator (timing).
        """
        answers: dict[str, Answer] = {}
        start = time.perf_counter()
        ttft = 0.0
        for part in self.modules:
            module = self.activate(part)
            before = time.perf_counter() - start
            result = answer(
                module, self._chained(request, part, answers), max_new_tokens, stop_at_eos
            )
            answers[part.name] = result
            ttft = before + result.ttft_s
        return Response(answers, time.perf_counter() - start, ttft)
