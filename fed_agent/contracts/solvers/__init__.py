"""Reference solutions of the two-period contract design problem."""

from fed_agent.contracts.solvers.convex import ConvexResult, solve_tied
from fed_agent.contracts.solvers.references import (
    REFERENCE_SOLVERS,
    Solution,
    best_static_contract,
    complete_information,
    efficient_resource,
    optimal_contract,
    random_feasible_contract,
    reference_violations,
    renegotiation_proof_contract,
    solve_reference,
    static_contract,
    uniform_contract,
)

__all__ = [
    "REFERENCE_SOLVERS",
    "ConvexResult",
    "Solution",
    "best_static_contract",
    "complete_information",
    "efficient_resource",
    "optimal_contract",
    "random_feasible_contract",
    "reference_violations",
    "renegotiation_proof_contract",
    "solve_reference",
    "solve_tied",
    "static_contract",
    "uniform_contract",
]
