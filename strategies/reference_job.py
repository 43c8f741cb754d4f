"""The cloud's reference update of a round, trained while the ESs train.

The reference (:func:`fed_agent.modules.reference.reference_update`) depends only on the
module the round sends, so the cloud starts it as soon as the TRAIN messages are built and
collects it when the replies are in: in a deployment it is hidden behind the ESs' local
training (not measured). In the 2-core simulation it did not shorten the default run (182 s
against 173 and 185 s computed after the replies): the ESs keep both cores busy.

The job trains a twin of the strategy's module (:meth:`AgentModule.twin`: the same frozen base
tensors, adapter tensors of its own), so the module stays free for anything else in the
process: the ServerApp's evaluation, or in-process ClientApps that train the process-wide
module (tests, ``benchmarks/in_process.py``).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from fed_agent.config import ExperimentConfig
from fed_agent.data.sources import cloud_data
from fed_agent.modules.adapter import AdapterState, AgentModule
from fed_agent.modules.reference import reference_update
from fed_agent.screening.judge import Reference
from fed_agent.seeding import derive_seed


class ReferenceJob:
    """At most one reference update in flight, on one background thread."""

    def __init__(self, cfg: ExperimentConfig, module: AgentModule) -> None:
        self.cfg = cfg
        self.module = module
        self._twin: AgentModule | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reference-update")
        self._job: tuple[int, Future[Reference]] | None = None
        self._split: list | None = None

    def start(self, server_round: int, global_state: AdapterState, contracted: list[int]) -> None:
        """Begin round ``server_round``'s reference from ``global_state`` (the module sent), for
        ESs contracted to ``contracted`` steps (``ScreeningConfig.steps_for``)."""
        self.settle()
        job = self._pool.submit(self._compute, server_round, global_state, contracted)
        self._job = (server_round, job)

    def take(
        self, server_round: int, global_state: AdapterState, contracted: list[int]
    ) -> Reference:
        """The reference of ``server_round`` (computed now, for ``contracted`` steps, if it was
        not started); raises what the background training raised."""
        job, self._job = self._job, None
        if job is not None and job[0] == server_round:
            return job[1].result()
        if job is not None:
            job[1].exception()  # another round's job: let it finish, drop it
        return self._compute(server_round, global_state, contracted)

    def settle(self) -> None:
        """Wait for a job in flight and drop it (the next round starts from a quiet thread)."""
        job, self._job = self._job, None
        if job is not None:
            job[1].exception()

    def _compute(
        self, server_round: int, global_state: AdapterState, contracted: list[int]
    ) -> Reference:
        screening = self.cfg.screening
        if self._split is None:
            self._split = cloud_data(
                self.cfg.data,
                self.cfg.seed,
                screening.reference_samples,
                self.module.base.is_vision,
            )
        if self._twin is None:
            self._twin = self.module.twin()
        seed = derive_seed(self.cfg.seed, "reference-update", server_round)
        steps = screening.steps_for(contracted)
        return reference_update(
            self._twin,
            global_state,
            self._split,
            self.cfg.training,
            steps,
            seed,
            keep_path=screening.effort_clause,
        )
