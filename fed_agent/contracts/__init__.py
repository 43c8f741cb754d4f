"""The two-period dynamic contract model, markets and exact reference solutions.

numpy/scipy only: this package never imports torch or flwr (a test checks it).
"""

from fed_agent.contracts.audit import VIOLATION_KINDS, Violation, audit
from fed_agent.contracts.batch import (
    MarketBatch,
    ScoredMenus,
    cloud_utility_batch,
    complete_information_utility,
    count_violations,
    least_rent_rewards,
    score_menus,
)
from fed_agent.contracts.constraints import item_types, item_weights
from fed_agent.contracts.contract import ContractItem, DynamicContract
from fed_agent.contracts.families import family_market, family_params, with_persistence
from fed_agent.contracts.market import (
    COMMITMENTS,
    NAMED_MARKETS,
    PARTICIPATION_RULES,
    Market,
    MarketParams,
    MarketRanges,
    federation_ranges,
    named_market,
    sample_market,
)
from fed_agent.contracts.payments import minimal_payments, minimal_payments_batch, score_f_menus
from fed_agent.contracts.response import (
    best_response,
    cloud_utility_best_response,
    es_choice,
    period2_choice,
)
from fed_agent.contracts.solvers import (
    REFERENCE_SOLVERS,
    Solution,
    best_static_contract,
    complete_information,
    optimal_contract,
    random_feasible_contract,
    reference_violations,
    renegotiation_proof_contract,
    solve_reference,
    static_contract,
    uniform_contract,
)
from fed_agent.contracts.transitions import (
    PERSISTENCE_RANGE,
    iid_transition,
    neighbour_transition,
    persistence_transition,
    reversal_matrix,
)
from fed_agent.contracts.utility import (
    cloud_utility,
    energy_cost,
    es_rents,
    es_utility,
    value_of_work,
)
from fed_agent.contracts.willingness import sample_initial_types, willingness_path

__all__ = [
    "COMMITMENTS",
    "NAMED_MARKETS",
    "PARTICIPATION_RULES",
    "PERSISTENCE_RANGE",
    "REFERENCE_SOLVERS",
    "VIOLATION_KINDS",
    "ContractItem",
    "DynamicContract",
    "Market",
    "MarketBatch",
    "MarketParams",
    "MarketRanges",
    "ScoredMenus",
    "Solution",
    "Violation",
    "audit",
    "best_response",
    "best_static_contract",
    "cloud_utility",
    "cloud_utility_batch",
    "cloud_utility_best_response",
    "complete_information",
    "complete_information_utility",
    "count_violations",
    "energy_cost",
    "es_choice",
    "es_rents",
    "es_utility",
    "family_market",
    "federation_ranges",
    "family_params",
    "iid_transition",
    "item_types",
    "item_weights",
    "least_rent_rewards",
    "minimal_payments",
    "minimal_payments_batch",
    "named_market",
    "neighbour_transition",
    "optimal_contract",
    "period2_choice",
    "persistence_transition",
    "random_feasible_contract",
    "reference_violations",
    "renegotiation_proof_contract",
    "reversal_matrix",
    "sample_initial_types",
    "sample_market",
    "score_f_menus",
    "score_menus",
    "solve_reference",
    "static_contract",
    "uniform_contract",
    "value_of_work",
    "willingness_path",
    "with_persistence",
]
