"""Generic reinforcement-learning building blocks (torch and numpy only).

The package knows nothing of contracts or of Flower: ``fed_agent.designer`` is the only
module that joins it with the contract model. Contents:

- ``schedules``: noise schedules of the diffusion actor (pure functions).
- ``denoiser``: the noise-prediction MLP with a sinusoidal time embedding and neuron masks.
- ``diffusion_actor``: the T-step reverse-diffusion sampler conditioned on the state.
- ``critic``: twin Q networks.
- ``sac``: the diffusion soft actor-critic (EDMSAC with pruning, DMSAC without).
- ``pruning``: dynamic structured pruning of the denoiser's hidden neurons.
- ``gaussian_sac`` and ``ppo``: the baselines.
- ``replay``, ``targets``, ``checkpoint``: infrastructure (seeding: ``fed_agent.seeding``).
"""

from __future__ import annotations
