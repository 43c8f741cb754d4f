"""The contract designer: the only package that joins the contract model and the RL package.

- ``mdp``: the decision process (market -> state, action -> menu of f, reward).
- ``config``: ``DesignerConfig`` and the training market ranges.
- ``designer``: ``ContractDesigner`` (propose with exact pricing, evaluate, save/load).
- ``training``: the plain training loop ``train_designer``.

docs/designer.md explains each choice and reports the measured results.
"""

from fed_agent.designer.config import DESIGNERS, TRAINING_RANGES, DesignerConfig, training_markets
from fed_agent.designer.designer import (
    ContractDesigner,
    EvaluationSet,
    ProposedMenus,
    heldout_markets,
)
from fed_agent.designer.mdp import (
    action_dim,
    actions_to_menus,
    designer_reward,
    menus_to_actions,
    state_dim,
    state_features,
)
from fed_agent.designer.training import train_designer, validation_set

__all__ = [
    "DESIGNERS",
    "TRAINING_RANGES",
    "ContractDesigner",
    "DesignerConfig",
    "EvaluationSet",
    "ProposedMenus",
    "action_dim",
    "actions_to_menus",
    "designer_reward",
    "heldout_markets",
    "menus_to_actions",
    "state_dim",
    "state_features",
    "train_designer",
    "training_markets",
    "validation_set",
]
